"""Batch classification of image folders into CSV files."""

# Kept here (no imports) so the CLI can offer the choices without loading numpy or PIL;
# tests hold them equal to the writers' and the backend registry's own tables.
FORMATS = ("field", "submission")
BACKEND_NAMES = ("onnxruntime", "torch", "tensorrt")
DEFAULT_BLANK_THRESHOLD = 0.5
