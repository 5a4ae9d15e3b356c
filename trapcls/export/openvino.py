"""`trapcls export openvino`: check OpenVINO f32 and bf16 on THIS CPU against ONNX Runtime FP32, and record both.

Each precision runs the bundle's model.onnx on real frames through the openvino backend itself
(same compile settings, batches of predict's CPU default) and is compared with ONNX Runtime's
CPU provider in FP32 by `fp16_agreement` under the FP16 tolerances (FP16_MEAN_ABS_TOL,
FP16_MIN_TOP1, near-ties excused), at temperature 1 like every other export check. The result
is recorded in bundle.json per CPU, OpenVINO version and model.onnx (trapcls.core.model.openvino_checks),
a refusal with its numbers as much as a pass; `predict --backend openvino` then runs bf16 only
where a passing bf16 record matches. Only bundle.json changes, so a read-only bundle (an
installed package's default model) is refused up front with the way out: copy it.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from trapcls import __version__
from trapcls.core.model.bundle import MANIFEST, Bundle, load_bundle
from trapcls.core.model.openvino_checks import PRECISIONS, PrecisionCheck, is_shipped, record_checks
from trapcls.core.model.probs import probabilities
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import DataError, ExportError
from trapcls.core.system.fsutil import check_writable
from trapcls.core.system.hardware import cpu_info, openvino_version
from trapcls.export.parity import (
    FP16_MEAN_ABS_TOL,
    FP16_MIN_TOP1,
    NEAR_TIE,
    fp16_agreement,
    refuse_past_fp16_tolerance,
    sample_images,
    verification_batch,
)
from trapcls.predict.backends import OnnxRuntimeBackend
from trapcls.predict.config import DEFAULT_BATCH
from trapcls.predict.openvino import OpenVinoBackend, bf16_supported

log = logging.getLogger(__name__)

FEW_FRAMES = 32  # below this many verification frames, the result says the check is thin


@dataclass(frozen=True)
class OpenVinoExport:
    """The bundle and what was recorded for this CPU, f32 first."""

    bundle: Path
    checks: list[PrecisionCheck]

    def lines(self) -> list[str]:
        """Each precision's verdict, where it was recorded, and what predict --backend openvino will run here."""
        lines = [f"{c.precision}: {'passed' if c.passed else 'refused'}: {c.summary}" for c in self.checks]
        f32, bf16 = (next(c for c in self.checks if c.precision == p) for p in ("f32", "bf16"))
        then = "bf16" if bf16.passed else "f32" if f32.passed else "nothing (use --backend onnxruntime)"
        return [*lines, f"recorded for {bf16.cpu}, OpenVINO {bf16.openvino_version} in {self.bundle / MANIFEST}; "
                        f"predict --backend openvino will run {then} here"]

    def notices(self) -> list[str]:
        """A warning when the check ran on few frames."""
        frames = max(c.verification.get("images", 0) for c in self.checks)
        if frames >= FEW_FRAMES:
            return []
        return [f"note: checked on only {frames} frames; --verify-images with frames from your cameras makes the "
                "check mean more."]


def export_openvino(bundle_dir: Path, *, verify_images: list[Path] | None = None) -> OpenVinoExport:
    """Check f32 and bf16 OpenVINO against ONNX Runtime FP32 on this CPU and record both in bundle.json."""
    ov = require("openvino")
    bundle = load_bundle(bundle_dir)
    _check_writable(bundle)
    batch, names = verification_batch(verify_images or sample_images(), bundle.preprocess)
    reference = probabilities(_run(OnnxRuntimeBackend(bundle, threads=1), batch), 1.0)
    cpu, version = cpu_info(), openvino_version()
    stamp = {"cpu": cpu.name, "isa": cpu.isa(), "openvino_version": version,
             "onnx_sha256": bundle.onnx_sha256,
             "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "trapcls_version": __version__}
    checks = []
    for precision in PRECISIONS:
        if precision == "bf16" and not bf16_supported(ov.Core()):
            checks.append(PrecisionCheck(precision="bf16", passed=False, summary="this CPU has no bf16 support "
                                         "(OpenVINO lists no BF16 capability); f32 is used", **stamp))
            continue
        candidate = probabilities(_run(OpenVinoBackend(bundle, precision=precision), batch), 1.0)
        checks.append(_judge(precision, fp16_agreement(reference, candidate, names), stamp))
    record_checks(bundle, checks)
    for check in checks:
        log.info("openvino %s on %s: %s", check.precision, cpu.name, check.summary)
    return OpenVinoExport(bundle=bundle.root, checks=checks)


def _run(backend, batch: np.ndarray) -> np.ndarray:
    """Logits in batches of predict's CPU default, as predict would run them."""
    size = DEFAULT_BATCH["cpu"]
    return np.concatenate([backend.logits(batch[i:i + size]) for i in range(0, len(batch), size)])


def _judge(precision: str, report, stamp: dict) -> PrecisionCheck:
    """The record for one precision: passed within the FP16 tolerances, or refused with the numbers."""
    try:
        refuse_past_fp16_tolerance(report, f"OpenVINO {precision} against ONNX Runtime FP32", "")
    except ExportError as exc:  # the one wording of a refusal, shared with every other export check
        passed, summary = False, str(exc).rstrip(". ")
    else:
        passed = True
        summary = (f"mean abs probability difference {report.mean_abs_diff:.2e} (tolerance {FP16_MEAN_ABS_TOL:.0e}), "
                   f"max {report.max_abs_diff:.2e}, top-1 agreement {report.top1_agreement:.1%} "
                   f"(minimum {FP16_MIN_TOP1:.0%}) on {report.images} frames")
    verification = {**asdict(report), "tolerances": {"mean_abs_diff": FP16_MEAN_ABS_TOL,
                                                     "top1_agreement": FP16_MIN_TOP1, "near_tie": NEAR_TIE}}
    return PrecisionCheck(precision=precision, passed=passed, summary=summary, verification=verification, **stamp)


def _check_writable(bundle: Bundle) -> None:
    """Refuse before any work when bundle.json cannot be replaced there (the check is recorded in it)."""
    if is_shipped(bundle):
        raise ExportError(f"{bundle.root} is the model shipped inside trapcls; its files stay as installed. Copy it "
                          f"(cp -r {shlex.quote(str(bundle.root))} my-bundle), then run `trapcls export openvino "
                          "my-bundle` and predict with --bundle my-bundle.")
    try:
        check_writable(bundle.root, flag="BUNDLE")
    except DataError as exc:
        raise ExportError(f"{exc} The check is recorded in the bundle's {MANIFEST}: copy the bundle "
                          f"(cp -r {shlex.quote(str(bundle.root))} my-bundle), then run `trapcls export openvino "
                          "my-bundle` and predict with --bundle my-bundle.") from None
