"""What `trapcls train` runs end to end: training, then the validation report, then the exports.

Training (trapcls.training) knows nothing of the later stages; this module, above all of them,
joins them: the evaluate report and per-class table of the validation split, then the bundle
(trapcls.export) and, when asked, a TensorRT engine built on this machine.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from trapcls.core.metrics import evaluate_probs
from trapcls.core.model.checkpoint import BEST
from trapcls.core.system.deps import require
from trapcls.core.system.fsutil import atomic_write_bytes, write_csv
from trapcls.evaluate.pictures import confusion_png
from trapcls.evaluate.report import galleries, write_report
from trapcls.export import parse_targets
from trapcls.training import distributed
from trapcls.training.config import TrainConfig
from trapcls.training.trainer import TrainResult, Validation, train

log = logging.getLogger(__name__)


def run_train(config: TrainConfig, *, show_progress: bool = False) -> TrainResult:
    """Train; on rank 0 write the validation report and export the bundle (and engine) `config.export` names.

    A TensorRT target is checked before training starts, not after hours of it.
    """
    targets = parse_targets(config.export)
    if "tensorrt" in targets:
        require("tensorrt")
    with distributed.session() as dist:
        result = train(config, show_progress=show_progress, dist=dist)
        if result.main and result.lr_find is None:
            if result.validation is not None:
                write_validation_report(result.run_dir, result.validation, command=config.command)
            result = export_run(result, targets)
        dist.barrier()  # the other ranks wait while rank 0 reports and exports, then all leave together
    return result


def export_run(result: TrainResult, targets: tuple[str, ...]) -> TrainResult:
    """The run's best checkpoint as RUN/bundle (ONNX, verified) and a TensorRT engine in it, as `targets` say."""
    if "onnx" not in targets:
        return result
    from trapcls.export.onnx import export_onnx

    verify = list(result.verify_images)
    bundle_dir = export_onnx(result.run_dir / BEST, result.run_dir / "bundle", verify_images=verify).bundle.root
    if "tensorrt" in targets:
        from trapcls.export.tensorrt import export_tensorrt

        export_tensorrt(bundle_dir, verify_images=verify)  # the default profile; rebuild with other flags any time
    return dataclasses.replace(result, bundle_dir=bundle_dir)


def write_validation_report(run_dir: Path, validation: Validation, *, command: str = "") -> None:
    """per_class.csv, confusion.png and report.html (as `trapcls evaluate` writes it) for the validation split."""
    metrics = _validation_metrics(validation)
    columns = ("class", "precision", "recall", "f1", "support")
    write_csv(run_dir / "per_class.csv", columns, ([row[k] for k in columns] for row in metrics["per_class"]))
    atomic_write_bytes(run_dir / "confusion.png", confusion_png(metrics["confusion"], metrics["confusion_classes"],
                                                                normalised=True))
    paths = [s.path for s in validation.samples]
    # A crop run's samples are boxes: several may come from one frame, so each is named with its box.
    names = [s.path.name if s.box is None else f"{s.path.name} box {s.box.index}" for s in validation.samples]
    what = "images" if all(s.box is None for s in validation.samples) else "samples (detector crops; blank frames " \
        "without a box whole)"
    write_report(run_dir / "report.html", title=f"trapcls train: {validation.title}", metrics=metrics,
                 classes=validation.classes,
                 galleries=galleries(names, validation.probs, validation.labels, validation.classes, paths),
                 bundle_summary=None, command=command or f"trapcls train (options in {run_dir / 'config.json'})",
                 notes=[f"Validation split of {run_dir}: {len(paths)} {what}, the best epoch's weights, calibrated."])


def _validation_metrics(validation: Validation) -> dict:
    sites = [s.site or "" for s in validation.samples]
    return evaluate_probs(validation.probs, validation.labels, validation.classes, sites=sites if any(sites) else None)
