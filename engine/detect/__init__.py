"""Ultralytics YOLO detection: models, YOLO-format data, training and validation through Ultralytics.

Ultralytics (AGPL-3.0) is an optional extra (`pip install slimlab[detect]`, or `make setup-detect`).
Nothing outside this package imports it, and this package imports it only when a detection model,
run or checkpoint asks for it (see `ultra.load`), so `import engine.detect` stays cheap.
"""
