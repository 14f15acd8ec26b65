"""slimlab engine: everything that computes. Never imports textual; torch is imported lazily."""

__version__ = "0.1.0"
