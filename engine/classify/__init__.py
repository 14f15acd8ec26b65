"""Image classification: the task slimlab began with (engine/task.py's `classify`).

The model is any BN CNN (built-in, torchvision, timm, or your own class), trained by slimlab's own
loop (engine/train.py) on image datasets (engine/data), judged by top-1 accuracy.
"""
