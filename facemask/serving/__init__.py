"""Serving: face detection in scenes and video, streaming prediction, export (ONNX, TorchScript)."""
