"""The model and what is recorded about it: the bundle, device records (TensorRT engines, OpenVINO checks),
building timm models and reading checkpoints, probabilities and the blank rule."""
