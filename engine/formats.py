"""File-format constants, importable without torch (the workbench's file tree filters by them)."""

CHECKPOINT_FORMAT = "slimlab/1"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
ONNX_SUFFIX = ".onnx"  # deployment files (engine/deploy), listed beside the checkpoints
