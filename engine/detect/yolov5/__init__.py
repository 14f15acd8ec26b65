"""The original YOLOv5 repository's models (v5.0 - v7.0) as a second detection family: `yolov5:<yaml>`.

AGPL-3.0 like Ultralytics and as optional: the PyPI `yolov5` package (the repository's code) is
imported only here, through compat.py, which holds every shim the code needs on current versions.
"""
