"""trapcls: an offline camera-trap image classifier (train, export, predict)."""

__version__ = "0.1.0"
