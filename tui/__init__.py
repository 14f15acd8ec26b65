"""slimlab terminal workbench (Textual). Imports engine, never the reverse."""
