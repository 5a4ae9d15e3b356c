"""Fine-tuning timm ResNet/EfficientNet models on labelled camera-trap images (needs the `train` extra)."""
