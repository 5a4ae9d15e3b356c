"""Runs inside the SPARROW-Engine venv (Python >= 3.11, sparrow-engine + its onnxruntime; no trapcls, no torch).

  classify MODEL_DIR MODEL_ID IMAGES_DIR OUT_CSV
      `sparrow_engine.classify` over every image under IMAGES_DIR (the facade's own rule: recursive,
      .jpg/.jpeg/.png/.bmp/.tif/.tiff, sorted) with the engine's defaults, then one CSV row per file:
      path (relative to IMAGES_DIR), label, probability, one column per class, status, error.
  bound MODEL_DIR MODEL_ID NULL_ID IMAGES_DIR REPEATS
      The peer's own work, on one core: prints JSON {"t_d_s", "t_m_s"} (seconds per image).
      t_d: `classify` with NULL_ID, a model of next to no compute with MODEL_ID's preprocessing, so the
      time is SPARROW's decode + resize + normalise + one trivial ORT call per image. t_m: MODEL_ID's
      model.onnx alone in this venv's ONNX Runtime with SPARROW's session settings on one thread
      (ORT_ENABLE_ALL, 1 intra-op, 1 inter-op thread) at batch 1, the batch SPARROW's classify runs.
  versions
      Prints JSON: python, sparrow-engine, onnxruntime, numpy versions of this venv.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tiff", ".tif"}  # sparrow_engine._IMAGE_EXTS


def list_images(folder: Path) -> list[Path]:
    """What `sparrow_engine.classify(folder, recursive=True)` resolves a folder to, as Paths."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def read_labels(model_dir: Path, model_id: str) -> list[str]:
    """The class names in model order (labels.txt, one per line)."""
    return (model_dir / model_id / "labels.txt").read_text(encoding="utf-8").splitlines()


def classify_rows(se, paths: list[Path], model_id: str, classes: list[str]) -> list[list]:
    """One row per path. `classify` skips files it cannot read (its results are then shorter than its
    inputs and carry no path), so only then is each file classified alone to tell which ones failed."""
    results = se.classify([str(p) for p in paths], model=model_id, top_k=len(classes))
    if len(results) != len(paths):
        results = []
        for p in paths:
            try:
                results.append(se.classify([str(p)], model=model_id, top_k=len(classes))[0])
            except Exception as exc:  # noqa: BLE001 - the peer's errors become error rows, as trapcls's do
                results.append(exc)
    rows = []
    for result in results:
        if isinstance(result, Exception):
            rows.append(["", "", *[""] * len(classes), "error", str(result).replace("\n", " ")])
            continue
        probs = dict.fromkeys(classes, 0.0)
        for c in result.classifications:
            probs[classes[c.label_id]] = float(c.confidence)
        top = result.top1
        rows.append([top.label, float(top.confidence), *probs.values(), "ok", ""])
    return rows


def classify(model_dir: Path, model_id: str, images: Path, out_csv: Path) -> None:
    """Classify every image under `images` with the engine's defaults and write `out_csv`."""
    import sparrow_engine as se

    se.init(device="cpu", model_dir=str(model_dir))
    classes = read_labels(model_dir, model_id)
    paths = list_images(images)
    rows = classify_rows(se, paths, model_id, classes) if paths else []
    with open(out_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "probability", *classes, "status", "error"])
        for path, row in zip(paths, rows):
            writer.writerow([path.relative_to(images).as_posix(), *row])


def bound(model_dir: Path, model_id: str, null_id: str, images: Path, repeats: int) -> dict:
    """Per-image seconds of SPARROW's preprocessing (t_d) and of the model alone (t_m), on one core."""
    # One core before the engine exists: SPARROW sizes ORT's intra-op pool by available_parallelism,
    # which follows the affinity mask, so the null model's one ORT call stays on this thread.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import numpy as np
    import onnxruntime as ort
    import sparrow_engine as se

    se.init(device="cpu", model_dir=str(model_dir))
    paths = [str(p) for p in list_images(images)]
    se.classify(paths[:1], model=null_id)  # loads the model, warms the allocator

    def timed(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    t_d = timed(lambda: se.classify(paths, model=null_id)) / len(paths)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_dir / model_id / "model.onnx"), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).random((1, *inp.shape[1:]), dtype=np.float32)
    count = min(len(paths), 64)
    session.run(None, {inp.name: x})  # warm-up
    t_m = timed(lambda: [session.run(None, {inp.name: x}) for _ in range(count)]) / count
    return {"t_d_s": t_d, "t_m_s": t_m, "images": len(paths), "cpu": sorted(os.sched_getaffinity(0))}


def versions() -> dict:
    """This venv's interpreter and packages."""
    return {"python": platform.python_version(),
            **{name: version(name) for name in ("sparrow-engine", "onnxruntime", "numpy")}}


def main(argv: list[str]) -> None:
    """Dispatch on the first argument (see the module docstring)."""
    mode, args = argv[0], argv[1:]
    if mode == "classify":
        classify(Path(args[0]), args[1], Path(args[2]), Path(args[3]))
    elif mode == "bound":
        print(json.dumps(bound(Path(args[0]), args[1], args[2], Path(args[3]), int(args[4]))))
    elif mode == "versions":
        print(json.dumps(versions()))
    else:
        sys.exit(f"unknown mode {mode!r}; expected classify, bound or versions")


if __name__ == "__main__":
    main(sys.argv[1:])
