"""Batch classification of image folders into CSV files."""

# Output formats, kept here (no imports) so the CLI can offer them without loading numpy or PIL.
FORMATS = ("field", "submission")
