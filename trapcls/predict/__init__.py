"""Batch classification of image folders into CSV files."""
