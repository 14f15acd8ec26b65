"""Widgets shared by the workbench screens."""
