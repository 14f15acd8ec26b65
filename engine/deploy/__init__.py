"""Deployment: the artifact that ships, measured where it runs.

export (ONNX through torch.onnx's dynamo exporter, checked by onnxruntime against PyTorch),
quantize (static INT8 with onnxruntime's quantizer, guarded by an accuracy budget),
compress (unstructured magnitude pruning plus k-means weight sharing, stored compactly), and the
side-by-side measurement of every artifact (accuracy, size, onnxruntime latency).
Modules load torch/onnx only when used, so `import engine.deploy` stays cheap.
"""
