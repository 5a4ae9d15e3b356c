"""The work bound benchmarks/predict_throughput.py sets each engine against: how long one frame's decoding and one
frame's model take on one thread (on CUDA: the model alone on the GPU), each the median of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median wall-clock seconds of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_decode(files: list[Path], spec, repeats: int) -> float:
    """Per-image seconds of `trapcls.core.frames.preprocess.preprocess` on one thread."""
    from trapcls.core.frames.preprocess import preprocess

    preprocess(files[0], spec)  # warm-up: lazy imports, allocator
    return median_seconds(lambda: [preprocess(f, spec) for f in files], repeats) / len(files)


def time_model_onnx(onnx_path: Path, batches: list[np.ndarray], repeats: int) -> float:
    """Per-image seconds of the ONNX model alone on one core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: batches[0]})  # warm-up
    return median_seconds(lambda: [session.run(None, {name: b}) for b in batches], repeats) / sum(map(len, batches))


def time_model_openvino(onnx_path: Path, precision: str, batches: list[np.ndarray], repeats: int) -> float:
    """Per-image seconds of the ONNX model alone on OpenVINO's CPU plugin, one stream of one thread, at `precision`."""
    import openvino as ov

    from trapcls.predict.openvino import cpu_properties

    compiled = ov.Core().compile_model(str(onnx_path), "CPU", cpu_properties(precision, 1))  # as predict compiles
    request = compiled.create_infer_request()
    request.infer({0: batches[0]})  # warm-up
    return median_seconds(lambda: [request.infer({0: b}) for b in batches], repeats) / sum(map(len, batches))


def time_model_cuda(arch: str, num_classes: int, batches: list[np.ndarray], repeats: int) -> float:
    """Per-image seconds of the torch model alone on CUDA (FP16, channels_last, forward only)."""
    import timm
    import torch

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes).eval()
    model = model.to("cuda", torch.float16).to(memory_format=torch.channels_last)
    inputs = [torch.from_numpy(b).to("cuda", torch.float16).contiguous(memory_format=torch.channels_last)
              for b in batches]

    def forward_all() -> None:
        """Every batch through the model, then wait for the GPU."""
        with torch.inference_mode():
            for x in inputs:
                model(x)
        torch.cuda.synchronize()

    forward_all()  # warm-up: cuDNN autotuning, lazy initialisation
    return median_seconds(forward_all, repeats) / sum(map(len, batches))
