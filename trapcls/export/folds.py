"""One bundle from the K fold models of a cross-validation: their probabilities averaged inside one ONNX model.

Fold averaging is how a k-fold model set predicts a test set: every fold's model classifies the frame and the
mean of their probabilities is the answer. Built into one `model.onnx`, it is an ordinary bundle: predict, watch,
--tta, the exports and TensorRT take it as they take any, and its model id names the fold set in every CSV row
(`trapcls oof` writes the same id, so `ensemble apply` knows the member). The graph: the one input `image` feeds
each fold's network; each fold's logits are divided by that fold's calibration temperature, softmaxed, summed,
divided by K, and the output `logits` is the log of that mean (softmax of it gives the mean back; its own
temperature is 1). The average is checked against the folds run one by one before the bundle is written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from trapcls.core.frames.preprocess import preprocess
from trapcls.core.model.bundle import ONNX_FILE, Bundle, load_bundle, write_manifest
from trapcls.core.model.probs import probabilities
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import ExportError

INPUT, OUTPUT = "image", "logits"
# The averaged model's probabilities and the mean of the folds' own, computed apart, agree to float32 rounding.
MAX_ABS_TOLERANCE = 1e-5


def export_fold_average(bundles: list[Bundle], out: Path, *, name: str, check_images: list[Path]) -> Bundle:
    """Write the bundle averaging `bundles` (the fold models, in fold order) to `out`, replacing it atomically."""
    _check_alike(bundles)
    onnx = require("onnx")
    first = bundles[0]
    model = _averaged_graph([onnx.load(str(b.onnx_path)) for b in bundles], [b.temperature for b in bundles],
                            len(first.classes))
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        onnx.save(model, str(staging / ONNX_FILE))
        folds = [{"fold": k, "model": b.model_id, "bundle": str(b.root)} for k, b in enumerate(bundles, start=1)]
        bundle = write_manifest(
            staging, arch=first.arch, classes=list(first.classes), preprocess=first.preprocess, name=name,
            calibration={"temperature": 1.0, "fitted": False,
                         "note": "each fold's own temperature is applied inside the model, before the average"},
            training={"fold_average": folds}, export={"fold_average": len(bundles),
                                                     "precision": first.onnx_precision})
        error = _check_average(bundle, bundles, check_images)
        write_manifest(staging, arch=first.arch, classes=list(first.classes), preprocess=first.preprocess,
                       name=name, calibration=bundle.manifest["calibration"], training=bundle.manifest["training"],
                       export={**bundle.manifest["export"], "max_abs_difference": error,
                               "max_abs_tolerance": MAX_ABS_TOLERANCE})
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(out)


def _check_alike(bundles: list[Bundle]) -> None:
    first = bundles[0]
    for bundle in bundles[1:]:
        if (bundle.classes, bundle.preprocess, bundle.arch) != (first.classes, first.preprocess, first.arch):
            raise ExportError(f"{bundle.root} and {first.root} differ in classes, preprocessing or architecture: "
                              "the folds of one cross-validation share them. Were they trained with other options?")


def _averaged_graph(models: list, temperatures: list[float], classes: int):
    """The ONNX model: each fold's graph under its own prefix, fed the one input, then the average."""
    onnx = require("onnx")
    from onnx import TensorProto, compose, helper, numpy_helper

    nodes, initializers, value_info, probs = [], [], [], []
    opsets = {(o.domain, o.version) for m in models for o in m.opset_import}
    for k, (model, temperature) in enumerate(zip(models, temperatures, strict=True), start=1):
        prefixed = compose.add_prefix(model, prefix=f"fold{k}_")
        graph = prefixed.graph
        for node in graph.node:
            node.input[:] = [INPUT if name == f"fold{k}_{INPUT}" else name for name in node.input]
        nodes.extend(graph.node)
        initializers.extend(graph.initializer)
        value_info.extend(graph.value_info)
        initializers.append(numpy_helper.from_array(np.array(temperature, dtype=np.float32), f"fold{k}_temperature"))
        nodes += [helper.make_node("Div", [f"fold{k}_{OUTPUT}", f"fold{k}_temperature"], [f"fold{k}_scaled"]),
                  helper.make_node("Softmax", [f"fold{k}_scaled"], [f"fold{k}_probs"], axis=1)]
        probs.append(f"fold{k}_probs")
    initializers.append(numpy_helper.from_array(np.array(len(models), dtype=np.float32), "folds"))
    nodes += [helper.make_node("Sum", probs, ["probs_sum"]), helper.make_node("Div", ["probs_sum", "folds"],
                                                                              ["probs_mean"]),
              helper.make_node("Log", ["probs_mean"], [OUTPUT])]
    graph = helper.make_graph(nodes, "fold_average", [models[0].graph.input[0]],
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", classes])],
                              initializer=initializers, value_info=value_info)
    domains = {}
    for domain, version in opsets:
        domains[domain] = max(version, domains.get(domain, 0))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in domains.items()],
                              producer_name="trapcls fold average")
    model.ir_version = max(m.ir_version for m in models)
    onnx.checker.check_model(model)
    return model


def _check_average(bundle: Bundle, folds: list[Bundle], images: list[Path]) -> float:
    """The largest difference between the averaged model's probabilities and the mean of the folds' own, on
    `images`; ExportError above MAX_ABS_TOLERANCE."""
    ort = require("onnxruntime")

    def run(b: Bundle, x: np.ndarray) -> np.ndarray:
        session = ort.InferenceSession(str(b.onnx_path), providers=["CPUExecutionProvider"])
        return probabilities(session.run(None, {session.get_inputs()[0].name: x})[0], b.temperature)

    x = np.stack([preprocess(path, bundle.preprocess) for path in images])
    expected = np.mean([run(fold, x) for fold in folds], axis=0)
    error = float(np.max(np.abs(run(bundle, x) - expected)))
    if not error <= MAX_ABS_TOLERANCE:
        raise ExportError(f"the fold-averaged model differs from the mean of its {len(folds)} folds by {error:.2g} "
                          f"(at most {MAX_ABS_TOLERANCE:g} allowed); it was not written.")
    return error
