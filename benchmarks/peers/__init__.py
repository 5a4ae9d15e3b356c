"""Torch-free peers that classify the same frames with the same ONNX model through their own pipeline.

Each peer lives in its own virtual environment under benchmarks/.cache/ (created by the benchmark,
never a trapcls dependency) and runs in a child process, so its wall clock and peak RSS are measured
exactly like `trapcls predict`'s.
"""
