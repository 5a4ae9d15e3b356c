"""What every export check shares: the real frames it runs on, the report it gives, the FP16 tolerances.

An export (FP32 ONNX against PyTorch, FP16 ONNX against FP32, a TensorRT engine against ONNX
Runtime) is kept only when the two models agree on real camera-trap frames; these are the parts
those checks have in common.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from trapcls.core.frames.preprocess import IMAGE_SUFFIXES, PreprocessSpec, preprocess
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import ExportError, ImageReadError

log = logging.getLogger(__name__)

# The FP16 model against the FP32 model on the same frames (also used for TensorRT FP16 engines).
FP16_MEAN_ABS_TOL = 1e-3  # mean absolute difference of the class probabilities
FP16_MIN_TOP1 = 0.99  # fraction of frames whose top-1 label agrees (near-ties excused)
NEAR_TIE = 0.01  # a reference top-2 margin this small may flip under FP16 rounding without being an error
CHUNK = 32  # frames per inference call in the checks


@dataclass(frozen=True)
class ParityReport:
    """How closely the exported model matches PyTorch on real frames."""

    images: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    disagreements: list[str]
    # FP16 checks: the share of images whose top-1 agrees or flipped on a near-tie (see fp16_agreement).
    top1_agreement_excusing_near_ties: float | None = None


def sample_images() -> list[Path]:
    """The few real camera-trap frames shipped inside the package (see trapcls/samples/README.md)."""
    folder = Path(str(resources.files("trapcls") / "samples"))
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def verification_batch(images: list[Path], spec: PreprocessSpec, *, what: str = "verification",
                       flag: str = "--verify-images") -> tuple[np.ndarray, list[str]]:
    """The readable `images` preprocessed into one float32 batch, with their file names; unreadable ones are skipped
    (`what` and `flag` name the images and their option when none is readable)."""
    arrays, names = [], []
    for path in images:
        try:
            arrays.append(preprocess(path, spec))
            names.append(Path(path).name)
        except ImageReadError as exc:
            log.warning("skipping %s image: %s", what, exc)
    if not arrays:
        raise ExportError(f"No readable {what} images; pass a folder of JPEG/PNG frames with {flag}.")
    return np.stack(arrays), names


def fp16_agreement(reference: np.ndarray, candidate: np.ndarray, names: list[str], *,
                   extra_diffs: list[np.ndarray] = ()) -> ParityReport:
    """How an FP16 model's (N, classes) probabilities compare with the FP32 reference's.

    mean/max_abs_diff run over every image and class. top1_agreement is the plain share of
    images with the same top-1; top1_agreement_excusing_near_ties also counts a flip as agreeing
    when the reference's top two were within NEAR_TIE, since FP16 rounding may legitimately
    reorder a near-tie (the same allowance the FP32 export check makes at its own scale).
    """
    diff = np.abs(np.concatenate([candidate - reference, *extra_diffs]))
    flips = reference.argmax(1) != candidate.argmax(1)
    ordered = np.sort(reference, axis=1)
    near_tie = (ordered[:, -1] - ordered[:, -2]) <= NEAR_TIE
    return ParityReport(images=len(names), max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                        top1_agreement=float(1 - flips.mean()),
                        disagreements=[n for n, flip in zip(names, flips, strict=True) if flip],
                        top1_agreement_excusing_near_ties=float(1 - (flips & ~near_tie).mean()))


def onnx_agreement(reference_path: Path, candidate_path: Path, images: list[Path],
                   spec: PreprocessSpec) -> ParityReport:
    """`fp16_agreement` of two ONNX models run on ONNX Runtime's CPU provider over the same real frames.

    Batch 1 is compared as well: a different batch size exercises the dynamic axis through whatever
    the conversion inserted (casts, quantize/dequantize pairs).
    """
    batch, names = verification_batch(images, spec)
    reference_run, candidate_run = _cpu_session(reference_path), _cpu_session(candidate_path)
    reference = probabilities(reference_run(batch), 1.0)
    candidate = probabilities(candidate_run(batch), 1.0)
    single_diff = probabilities(candidate_run(batch[:1]), 1.0) - probabilities(reference_run(batch[:1]), 1.0)
    return fp16_agreement(reference, candidate, names, extra_diffs=[single_diff])


def _cpu_session(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    # In chunks: a few hundred frames of activations at once would need gigabytes.
    return lambda batch: np.concatenate([session.run(None, {name: batch[i:i + CHUNK]})[0]
                                         for i in range(0, len(batch), CHUNK)])


def refuse_past_fp16_tolerance(report: ParityReport, what: str, consequence: str) -> None:
    """Raise ExportError when `report` breaks FP16_MEAN_ABS_TOL or FP16_MIN_TOP1 (near-ties excused)."""
    top1 = report.top1_agreement_excusing_near_ties
    if report.mean_abs_diff > FP16_MEAN_ABS_TOL or top1 < FP16_MIN_TOP1:
        raise ExportError(
            f"{what} on {report.images} images: mean abs probability difference {report.mean_abs_diff:.2e} "
            f"(tolerance {FP16_MEAN_ABS_TOL:.0e}), max {report.max_abs_diff:.2e}, top-1 agreement "
            f"{report.top1_agreement:.1%}, {top1:.1%} excusing near-ties (minimum {FP16_MIN_TOP1:.0%})"
            + (f", disagreeing on {', '.join(report.disagreements[:5])}" if report.disagreements else "")
            + f". {consequence}"
        )
