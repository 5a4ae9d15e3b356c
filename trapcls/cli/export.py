"""`trapcls export onnx|tensorrt|openvino`: a checkpoint into a verified bundle, and the bundle onto the device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trapcls.cli.options import frames, show
from trapcls.core.model.profile import Profile


def onnx(
    source: Annotated[Path, typer.Argument(help="A run folder from `trapcls train` or its best.pt.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to write (model.onnx, weights.safetensors, bundle.json).")],
    verify_images: Annotated[Optional[Path], typer.Option(
        help="Folder of real frames for the PyTorch-vs-ONNX check (and the FP16/INT8 check); default: frames "
             "shipped with trapcls. Uses the first 32 (with --int8, 256).")] = None,
    fp16: Annotated[bool, typer.Option(
        help="Store the model in FP16 (half the size; for ONNX Runtime's CUDA provider and small downloads), "
             "verified against FP32 on CPU: mean abs probability difference <= 1e-3, top-1 agreement >= 99% "
             "(flips between classes within 0.01 of each other excused). Slower than FP32 on a CPU.")] = False,
    int8: Annotated[bool, typer.Option(
        help="Store a static INT8 model for the CPU (ONNX Runtime, QDQ, per-channel weights; the first conv, "
             "pooling and classifier stay float), calibrated on --calibration-images and kept only if it passes "
             "the --fp16 check (mean abs probability difference <= 1e-3, top-1 >= 99%) against FP32 on "
             "--verify-images; otherwise nothing is written. ~1.5x faster on one x86 core with VNNI, but the "
             "EfficientNet-Lite models tried so far missed the check (docs/cpu-speed.md). Not with --fp16 or "
             "TensorRT.")] = False,
    calibration_images: Annotated[Optional[Path], typer.Option(
        help="With --int8: folder of frames typical of your cameras (day, night, blank; a few hundred, at most "
             "256 used, spread over the folder) to set the INT8 ranges. Must not share a frame with "
             "--verify-images: the check has to run on frames the calibration did not see.")] = None,
) -> None:
    """Export to ONNX (dynamic batch) and refuse the bundle unless it matches PyTorch on real frames."""
    from trapcls.export.onnx import export_onnx

    if fp16 and int8:
        raise typer.BadParameter("choose one of --fp16 and --int8.", param_hint="--int8")
    if int8 != (calibration_images is not None):
        raise typer.BadParameter("--int8 and --calibration-images go together: INT8 needs calibration frames, "
                                 "and only INT8 uses them.", param_hint="--calibration-images")
    report = export_onnx(source, out, verify_images=frames(verify_images, 256 if int8 else 32), fp16=fp16,
                         int8=int8, calibration_images=frames(calibration_images, None))
    show(report.lines())


def tensorrt(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (from `trapcls export onnx` or `trapcls train`).")],
    min_batch: Annotated[int, typer.Option(help="Smallest batch the engine accepts.")] = Profile.min_batch,
    opt_batch: Annotated[int, typer.Option(help="Batch size TensorRT tunes its kernels for.")] = Profile.opt_batch,
    max_batch: Annotated[int, typer.Option(
        help="Largest batch the engine accepts (more needs more GPU memory).")] = Profile.max_batch,
    workspace_mib: Annotated[int, typer.Option(
        "--workspace", help="Builder workspace limit in MiB; the default suits an 8 GB Jetson (GPU and CPU share "
                            "its memory).")]
    = Profile.workspace_mib,
    verify_images: Annotated[Optional[Path], typer.Option(
        help="Folder of real frames (the first 64) for the engine-vs-ONNX Runtime check; default: frames shipped "
             "with trapcls.")]
    = None,
) -> None:
    """Build an FP16 TensorRT engine for THIS machine's GPU into BUNDLE/engines, verify it, and record it.

    Run it on the device that will classify (a Jetson or a GPU box): an engine only runs on the
    GPU model and TensorRT version that built it. `predict --backend auto` then uses it.
    """
    from trapcls.export.tensorrt import export_tensorrt

    profile = Profile(min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, workspace_mib=workspace_mib)
    show(export_tensorrt(bundle, profile, verify_images=frames(verify_images, 64)).lines())


def openvino(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (from `trapcls export onnx` or `trapcls train`); "
                                                "it must be writable: copy an installed one first.")],
    verify_images: Annotated[Optional[Path], typer.Option(
        help="Folder of real frames (the first 64) for the OpenVINO-vs-ONNX Runtime check; default: the few frames "
             "shipped with trapcls. Frames from your own cameras make the check mean more.")] = None,
) -> None:
    """Check OpenVINO f32 and bf16 on THIS CPU against ONNX Runtime FP32 and record both in BUNDLE/bundle.json.

    bf16 (AMX / AVX512-BF16 CPUs; inference ~2.5x faster than f32 on an AMX Xeon) is kept only within the FP16 export
    tolerances: mean abs probability difference <= 1e-3, top-1 agreement >= 99% (near-ties
    excused); a refusal is recorded with its numbers. `predict --backend openvino` then runs bf16
    only where a passing record matches this CPU, this OpenVINO and the bundle's model.onnx, and
    `--backend auto` picks openvino on a CPU box only where the precision it would run passed.
    """
    from trapcls.export.openvino import export_openvino

    result = export_openvino(bundle, verify_images=frames(verify_images, 64))
    show(result.lines(), result.notices())
