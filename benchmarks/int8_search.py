"""INT8 search: which static quantization settings keep a model within the `export onnx --int8` gate, and how fast.

Method:
  models    tf_efficientnet_lite0 (224 px) and tf_efficientnet_lite2 (260 px) with their ImageNet weights
            (1000 classes, ../shared/weights), and the shipped default model (Lite2 260 px, 12 classes)
            rebuilt in FP32 from its training checkpoint (train/recipes/default-model-v2.sh writes it to
            runs/default-model-v2/lite2-frozen/best.pt). Each is exported with `export_onnx` (the FP32 bundle,
            checked against PyTorch) into --work.
  frames    every readable frame under --data, sorted by path, shuffled with --seed; the first
            --calibration-frames calibrate, the rest verify: the two sets never share a frame.
            All preprocessed exactly as `trapcls predict` does (trapcls.core.frames.preprocess, the bundle's spec).
  settings  each row of SETTINGS goes through `trapcls.export.int8.quantize_int8` (ONNX Runtime
            quant_pre_process, calibration, QDQ quantize_static); "weights only" rows instead round the
            FP32 model's conv weights per channel to INT8 and leave every activation in float (a bound: no
            activation calibration can do better than that), with "+bias corr." also shifting each conv's
            bias by the mean error its rounded weights cause on the calibration frames (Nagel et al. 2019).
  agreement `trapcls.export.parity.fp16_agreement` of the INT8 model against the FP32 model, both on ONNX
            Runtime's CPU provider, on the verification frames: what `export onnx --int8` gates on
            (mean abs <= 1e-3, top-1 >= 99% excusing near-ties). With 1000 classes the mean is small by
            construction (most probabilities are ~0), so read top-1 there; the 12-class model is the real case.
  speed     ms/frame of one intra-op thread on a batch of 8 verification frames, median of --repeats runs
            after one warm-up, for FP32 and for INT8 (ORT_ENABLE_ALL, as `trapcls predict` runs).
            The machine's cores are shared: treat the numbers as rough.
  kernels   the integer kernels in the graph ONNX Runtime optimised (`int8_kernels`).

Usage:
  .venv/bin/python benchmarks/int8_search.py                       # all models, all settings (~30 min on 2 cores)
  .venv/bin/python benchmarks/int8_search.py --models default --settings minmax-stem,minmax
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import machine, versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO.parent / "shared" / "weights"
IMAGENET = {"lite0": ("tf_efficientnet_lite0", 224, "efficientnet-lite0-57934424.pth"),
            "lite2": ("tf_efficientnet_lite2", 260, "efficientnet-lite2-9656183e.pth")}
DEFAULT_CHECKPOINT = REPO / "runs" / "default-model-v2" / "lite2-frozen" / "best.pt"
STEM, HEAD = ("stem",), ("stem", "head")
# name -> Int8Settings keyword arguments, or "weights" / "weights+bc" for the weight-only bounds.
SETTINGS = {
    "naive-per-tensor": dict(calibration="minmax", per_channel=False, keep_float=()),
    "minmax": dict(calibration="minmax", keep_float=()),
    "minmax-stem": dict(calibration="minmax", keep_float=STEM),
    "minmax-stem-head": dict(calibration="minmax", keep_float=HEAD),
    "minmax-stem-head-lastconv": dict(calibration="minmax", keep_float=(*HEAD, "last_conv")),
    "minmax-stem-s8s8": dict(calibration="minmax", keep_float=STEM, activations="int8"),
    "pct99.999-stem": dict(calibration="percentile", percentile=99.999, keep_float=STEM),
    "pct99.99-stem": dict(calibration="percentile", percentile=99.99, keep_float=STEM),
    "entropy-stem": dict(calibration="entropy", keep_float=STEM),
    "weights-only": "weights",
    "weights-only+bias-corr": "weights+bc",
}
PACKAGES = ("trapcls", "onnxruntime", "onnx", "torch", "timm")


def fp32_bundles(work: Path, models: list[str]) -> dict[str, Path]:
    """model name -> its FP32 bundle in `work`, exported (and checked against PyTorch) unless already there."""
    from trapcls.core.model.build import create_model, preprocess_spec
    from trapcls.core.model.checkpoint import save_checkpoint
    from trapcls.export.onnx import export_onnx

    bundles = {}
    for name in models:
        out = work / f"{name}-fp32"
        if not (out / "bundle.json").exists():
            if name == "default":
                if not DEFAULT_CHECKPOINT.is_file():
                    print(f"skipping default: {DEFAULT_CHECKPOINT} is missing (train/recipes/default-model-v2.sh)")
                    continue
                checkpoint = DEFAULT_CHECKPOINT
            else:
                arch, size, weights = IMAGENET[name]
                model = create_model(arch, 1000, weights=WEIGHTS / weights).eval()
                checkpoint = work / f"{name}.pt"
                save_checkpoint(checkpoint, model, arch=arch, classes=[f"imagenet{i}" for i in range(1000)],
                                spec=preprocess_spec(model, size), epoch=0, metrics={}, config={})
            export_onnx(checkpoint, out)
        bundles[name] = out
    return bundles


def split_frames(data: Path, calibration: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Every image under `data`, shuffled with `seed`: (the first `calibration`, the rest)."""
    from trapcls.core.frames.discover import discover_images

    frames = sorted(f.path for f in discover_images([data]))
    order = np.random.default_rng(seed).permutation(len(frames))
    shuffled = [frames[i] for i in order]
    return shuffled[:calibration], shuffled[calibration:]


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def logits(sess, batch: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: batch[i:i + 8]})[0] for i in range(0, len(batch), 8)])


def ms_per_frame(sess, batch: np.ndarray, repeats: int) -> float:
    name, feed = sess.get_inputs()[0].name, batch[:8]
    sess.run(None, {name: feed})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, {name: feed})
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(feed) * 1000


def weights_only(fp32: Path, out: Path, calibration: np.ndarray, *, bias_correction: bool) -> None:
    """The FP32 model with every Conv weight rounded per output channel to symmetric INT8 (max-abs scale)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32))
    tensors = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in tensors]
    means = input_means(model, convs, calibration) if bias_correction else {}
    for node in convs:
        weight = numpy_helper.to_array(tensors[node.input[1]])
        scale = np.abs(weight).max(axis=tuple(range(1, weight.ndim)), keepdims=True) / 127
        rounded = (np.round(weight / np.where(scale == 0, 1, scale)) * scale).astype(np.float32)
        tensors[node.input[1]].CopyFrom(numpy_helper.from_array(rounded, node.input[1]))
        if bias_correction and len(node.input) > 2 and node.input[2] in tensors:
            error = (rounded - weight).sum(axis=(2, 3))  # (out, in / groups)
            mean = means[node.input[0]]
            shift = error @ mean if error.shape[1] == len(mean) else error[:, 0] * mean  # depthwise: one input each
            bias = numpy_helper.to_array(tensors[node.input[2]])
            tensors[node.input[2]].CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32), node.input[2]))
    onnx.save(model, str(out))


def input_means(model, convs, calibration: np.ndarray) -> dict[str, np.ndarray]:
    """The per-channel mean of every conv input over the calibration frames (FP32)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    wanted = sorted({n.input[0] for n in convs} - {i.name for i in model.graph.input})
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in wanted)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    for start in range(0, len(calibration), 16):
        for name, value in zip(names, sess.run(None, {model.graph.input[0].name: calibration[start:start + 16]})):
            if name not in wanted:
                continue
            sums[name] = sums.get(name, 0) + value.mean(axis=(2, 3)).sum(axis=0)
    sums[model.graph.input[0].name] = calibration.mean(axis=(2, 3)).sum(axis=0)
    return {name: total / len(calibration) for name, total in sums.items()}


def evaluate(name: str, recipe, bundle, batches, args) -> dict:
    """One row: quantize `bundle`'s model with `recipe`, compare with FP32, time both."""
    from trapcls.core.model.probs import probabilities
    from trapcls.export.int8 import Int8Settings, int8_kernels, quantize_int8
    from trapcls.export.parity import fp16_agreement

    calibration, verification, names = batches
    out = args.work / f"{bundle.root.name}.{name}.onnx"
    start = time.perf_counter()
    if isinstance(recipe, str):
        weights_only(bundle.onnx_path, out, calibration, bias_correction=recipe.endswith("bc"))
    else:
        quantize_int8(bundle.onnx_path, out, calibration, Int8Settings(**recipe))
    seconds = time.perf_counter() - start
    fp32, int8 = session(bundle.onnx_path), session(out)
    report = fp16_agreement(probabilities(logits(fp32, verification), 1.0),
                            probabilities(logits(int8, verification), 1.0), names)
    kernels = int8_kernels(out)
    return {"setting": name, "mean": report.mean_abs_diff, "max": report.max_abs_diff,
            "top1": report.top1_agreement, "top1_ties": report.top1_agreement_excusing_near_ties,
            "fp32_ms": ms_per_frame(fp32, verification, args.repeats),
            "int8_ms": ms_per_frame(int8, verification, args.repeats), "seconds": seconds,
            "kernels": ", ".join(f"{k} {v}" for k, v in kernels.items()) or "none",
            "gate": report.mean_abs_diff <= 1e-3 and report.top1_agreement_excusing_near_ties >= 0.99}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--models", default="lite0,lite2,default", help="comma-separated: lite0, lite2, default")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of: {', '.join(SETTINGS)}")
    p.add_argument("--calibration-frames", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path("/tmp/trapcls-int8-search"))
    args = p.parse_args(argv)
    unknown = sorted(set(args.settings.split(",")) - set(SETTINGS))
    if unknown:
        p.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    import logging

    from trapcls.core.model.bundle import load_bundle
    from trapcls.export.parity import verification_batch

    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    calibration_frames, verification_frames = split_frames(args.data, args.calibration_frames, args.seed)
    print(f"machine: {machine('cpu')}\nversions: {versions(PACKAGES)}")
    print(f"frames: {len(calibration_frames)} calibration, {len(verification_frames)} verification from {args.data} "
          f"(seed {args.seed})\n")
    print("| model | setting | mean abs | max abs | top-1 | top-1 excl. ties | FP32 ms | INT8 ms | gate | "
          "quantize s | ORT int8 kernels |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for model, root in fp32_bundles(args.work, args.models.split(",")).items():
        bundle = load_bundle(root)
        calibration, _ = verification_batch(calibration_frames, bundle.preprocess)
        verification, names = verification_batch(verification_frames, bundle.preprocess)
        for name in args.settings.split(","):
            r = evaluate(name, SETTINGS[name], bundle, (calibration, verification, names), args)
            print(f"| {model} | {name} | {r['mean']:.2e} | {r['max']:.3f} | {r['top1']:.1%} | {r['top1_ties']:.1%} | "
                  f"{r['fp32_ms']:.1f} | {r['int8_ms']:.1f} | {'pass' if r['gate'] else 'refused'} | "
                  f"{r['seconds']:.0f} | {r['kernels']} |", flush=True)


if __name__ == "__main__":
    main()
