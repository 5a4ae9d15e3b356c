"""Exporting trained checkpoints into model bundles (ONNX now; TensorRT engines on the device)."""
