"""`trapcls export onnx`: checkpoint -> bundle (ONNX + safetensors), verified against PyTorch.

The export is refused when ONNX Runtime and PyTorch disagree on real frames beyond these
tolerances (FP32 both sides, so only kernel rounding should differ):
- max absolute difference of any class probability: MAX_ABS_TOL (1e-4);
- top-1 label: must agree on every image, except near-ties where PyTorch's top-2 margin is
  within 2 * MAX_ABS_TOL (a difference that small may legitimately flip the order).

With `fp16=True` the verified FP32 graph is then converted to FP16 (trapcls.export.fp16),
checked against it on the same frames, and stored as model.onnx in its place. With `int8=True` it is
quantized to INT8 for the CPU instead (trapcls.export.int8), calibrated on `calibration_images` and
checked against FP32 on the verification frames, which must be other frames, with the FP16 gate.
Either way a model that fails its check leaves no bundle behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.model.build import load_model
from trapcls.core.model.bundle import ONNX_FILE, WEIGHTS_FILE, Bundle, load_bundle, write_manifest
from trapcls.core.model.checkpoint import load_checkpoint
from trapcls.core.model.probs import probabilities
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import ExportError
from trapcls.core.system.fsutil import sha256_file
from trapcls.export.fp16 import check_fp16_parity, convert_to_fp16
from trapcls.export.int8 import check_int8_parity, int8_kernels, quantize_int8
from trapcls.export.parity import (
    CHUNK,
    FP16_MEAN_ABS_TOL,
    FP16_MIN_TOP1,
    ParityReport,
    sample_images,
    verification_batch,
)
from trapcls.predict.backends import OnnxRuntimeBackend

log = logging.getLogger(__name__)

MAX_ABS_TOL = 1e-4
OPSET = 17
CALIBRATION_MAX_FRAMES = 256  # INT8 calibration frames used, spread evenly over those given
INT8_FEW_FRAMES = 32  # an INT8 check on fewer verification frames than this gets a warning


@dataclass(frozen=True)
class ExportReport:
    bundle: Bundle
    parity: ParityReport  # the FP32 graph against PyTorch
    fp16_parity: ParityReport | None = None  # the stored FP16 graph against the FP32 graph, with --fp16
    int8_parity: ParityReport | None = None  # the stored INT8 graph against the FP32 graph, with --int8

    def lines(self) -> list[str]:
        """The checks the bundle passed, with their tolerances, and where it went."""
        p = self.parity
        lines = [f"parity on {p.images} images: max abs probability difference {p.max_abs_diff:.2e} "
                 f"(tolerance {MAX_ABS_TOL:.0e}), mean {p.mean_abs_diff:.2e}, top-1 agreement {p.top1_agreement:.1%}"]
        for label, q in (("fp16", self.fp16_parity), ("int8", self.int8_parity)):
            if q is not None:
                lines.append(f"{label} parity on {q.images} images: max abs probability difference "
                             f"{q.max_abs_diff:.2e}, mean {q.mean_abs_diff:.2e} (tolerance {FP16_MEAN_ABS_TOL:.0e}), "
                             f"top-1 agreement {q.top1_agreement:.1%}, {q.top1_agreement_excusing_near_ties:.1%} "
                             f"excusing near-ties (minimum {FP16_MIN_TOP1:.0%})")
        return [*lines, f"bundle: {self.bundle.root}"]


def _bundle_name(out: Path) -> str:
    """The model's name in CSVs and exports: the bundle folder's, or the run's for a run's RUN/bundle."""
    out = out.resolve()
    return out.parent.name if out.name == "bundle" and out.parent.name else out.name


def export_onnx(source: Path, out: Path, *, verify_images: list[Path] | None = None, fp16: bool = False,
                int8: bool = False, calibration_images: list[Path] | None = None) -> ExportReport:
    """Write a bundle for the checkpoint at `source` (a run folder or .pt) into `out`; FP16 weights with `fp16`,
    static INT8 calibrated on `calibration_images` with `int8`.

    The bundle is assembled in a sibling staging folder and moved into place only after the
    parity checks pass, so `out` never holds a half-written or unverified bundle.
    """
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "bundle.json").exists())):
        raise ExportError(f"{out} exists and is not a bundle folder; choose another --out so nothing is overwritten.")
    images = verify_images or sample_images()
    if fp16 and int8:
        raise ExportError("Choose --fp16 or --int8, not both: an INT8 model is not also FP16.")
    if int8:
        _check_calibration(calibration_images, images)
        if len(images) < INT8_FEW_FRAMES:
            log.warning("the INT8 model will be checked on only %d frames; --verify-images with a few hundred "
                        "frames makes the check mean more", len(images))
    torch = require("torch")
    safetensors_torch = require("safetensors.torch")
    ckpt = load_checkpoint(source)
    spec = PreprocessSpec.from_dict(ckpt["preprocess"])
    model = load_model(ckpt["arch"], len(ckpt["classes"]), ckpt["state_dict"])

    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        dummy = torch.zeros(2, 3, spec.height, spec.width)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
            torch.onnx.export(model, (dummy,), str(staging / ONNX_FILE), input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                    str(staging / WEIGHTS_FILE))
        metrics = {k: v for k, v in ckpt["metrics"].items() if k.startswith("val_")}
        training = {"checkpoint": ckpt["path"], "epoch": ckpt["epoch"], "config": ckpt["config"]}
        manifest_args = dict(arch=ckpt["arch"], classes=ckpt["classes"], preprocess=spec, metrics=metrics,
                             training=training, calibration=ckpt.get("calibration"), name=_bundle_name(out),
                             crop=ckpt.get("crop"))
        bundle = write_manifest(staging, **manifest_args)
        parity = check_parity(model, bundle, images)
        export = {"torch": torch.__version__, "opset": OPSET, "precision": "fp32", "parity": asdict(parity),
                  "max_abs_tolerance": MAX_ABS_TOL}
        tolerances = {"mean_abs_tolerance": FP16_MEAN_ABS_TOL, "min_top1_agreement": FP16_MIN_TOP1}
        fp16_parity = int8_parity = None
        if fp16:
            fp16_parity = _store_fp16(staging / ONNX_FILE, images, spec)
            export.update(precision="fp16", fp16_parity={**asdict(fp16_parity), **tolerances})
        if int8:
            int8_parity, details = _store_int8(staging / ONNX_FILE, images, calibration_images, spec)
            export.update(precision="int8", int8=details, int8_parity={**asdict(int8_parity), **tolerances})
        write_manifest(staging, **manifest_args, export=export)  # recomputes the sha256 of the final model.onnx
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(bundle=load_bundle(out), parity=parity, fp16_parity=fp16_parity, int8_parity=int8_parity)


def check_parity(model, bundle: Bundle, images: list[Path]) -> ParityReport:
    """Compare PyTorch and ONNX Runtime probabilities on `images`; raise ExportError past tolerance."""
    torch = require("torch")
    batch, names = verification_batch(images, bundle.preprocess)
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in torch.from_numpy(batch).split(CHUNK)])
        reference = torch.softmax(logits.double(), dim=1).numpy()
    backend = OnnxRuntimeBackend(bundle)
    exported = probabilities(np.concatenate([backend.logits(batch[i:i + CHUNK]) for i in range(0, len(batch), CHUNK)]),
                             1.0)
    single = probabilities(backend.logits(batch[:1]), 1.0)  # a different batch size proves the dynamic axis
    diff = np.abs(np.concatenate([exported - reference, single - reference[:1]]))
    top_ref, top_onnx = reference.argmax(1), exported.argmax(1)
    ordered = np.sort(reference, axis=1)
    margins = ordered[:, -1] - ordered[:, -2]
    disagree = [names[i] for i in np.flatnonzero(top_ref != top_onnx)]
    hard = [names[i] for i in np.flatnonzero((top_ref != top_onnx) & (margins > 2 * MAX_ABS_TOL))]
    report = ParityReport(images=len(names), max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                          top1_agreement=float(np.mean(top_ref == top_onnx)), disagreements=disagree)
    if report.max_abs_diff > MAX_ABS_TOL or hard:
        raise ExportError(
            f"ONNX export does not match PyTorch on {report.images} images: max abs probability difference "
            f"{report.max_abs_diff:.2e} (tolerance {MAX_ABS_TOL:.0e}), top-1 agreement {report.top1_agreement:.1%}"
            + (f", disagreeing on {', '.join(hard[:5])}" if hard else "") + ". The bundle was not written."
        )
    return report


def _store_fp16(path: Path, images: list[Path], spec: PreprocessSpec) -> ParityReport:
    """Convert the verified FP32 model at `path` to FP16, check it against FP32, and put it in its place."""
    import onnx

    candidate = path.with_name(f"{path.stem}.fp16{path.suffix}")
    onnx.save(convert_to_fp16(onnx.load(str(path))), str(candidate))
    report = check_fp16_parity(path, candidate, images, spec)
    os.replace(candidate, path)
    return report


def _check_calibration(calibration: list[Path] | None, verification: list[Path]) -> None:
    """INT8 needs calibration frames, none of which may be a verification frame (compared by content)."""
    if not calibration:
        raise ExportError("INT8 export needs calibration frames: pass --calibration-images with a folder of a few "
                          "hundred frames typical of your cameras (day, night, blank), other than --verify-images.")
    seen = {sha256_file(p): p for p in calibration}
    shared = [p for p in verification if sha256_file(p) in seen]
    if shared:
        raise ExportError(
            f"{len(shared)} of the {len(verification)} verification frames are also calibration frames (e.g. "
            f"{shared[0]}); the INT8 check must run on frames the calibration did not see. Pass different "
            "folders to --calibration-images and --verify-images.")


def _store_int8(path: Path, images: list[Path], calibration: list[Path],
                spec: PreprocessSpec) -> tuple[ParityReport, dict]:
    """Quantize the verified FP32 model at `path`, check it against FP32, and put it in its place."""
    import onnxruntime

    step = max(1, -(-len(calibration) // CALIBRATION_MAX_FRAMES))  # ceil: spread over the whole folder
    batch, _ = verification_batch(calibration[::step], spec, what="calibration", flag="--calibration-images")
    candidate = path.with_name(f"{path.stem}.int8{path.suffix}")
    model = quantize_int8(path, candidate, batch)
    report = check_int8_parity(path, candidate, images, spec)
    details = {**model.to_dict(), "kernels": int8_kernels(candidate), "onnxruntime": onnxruntime.__version__}
    os.replace(candidate, path)
    return report, details


def _replace_dir(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
