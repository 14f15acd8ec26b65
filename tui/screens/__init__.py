"""The workbench screens, one per mode (switched with the number keys)."""
