"""`trapcls predict` classifies images into a CSV; `trapcls merge` joins the CSVs of a sharded job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trapcls.cli.options import (
    Backend,
    BackendName,
    BatchSize,
    BlankThreshold,
    DetectionThreshold,
    RunBundle,
    Threads,
    VideoFps,
    VideoMaxFrames,
    VideoTimeout,
    Workers,
    choices,
    config,
    run_bundle,
    show,
)
from trapcls.core.system.exceptions import DataError
from trapcls.predict.config import FORMATS, PredictConfig

OutputFormat = choices("OutputFormat", FORMATS)
P = PredictConfig  # the defaults: a field's default is its class attribute


def predict(
    ctx: typer.Context,
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="Folders (searched recursively), image or video files, or quoted globs such as 'cams/**/*.JPG'.")]
    = None,
    bundle: RunBundle = None,
    out: Annotated[Path, typer.Option(help="CSV to write. If it exists, files already in it are skipped (resume).")]
    = ...,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", help="field (path, capture time, label, blank flag, probabilities, status) or submission "
                         "(id + one probability column per class).")] = OutputFormat(P.fmt),
    file_list: Annotated[Optional[Path], typer.Option(
        help="Text file with one image path per line (relative to the list's folder; # comments).")] = P.file_list,
    backend: Backend = BackendName(P.backend),
    batch_size: BatchSize = P.batch_size,
    threads: Threads = P.threads,
    workers: Workers = P.workers,
    shard: Annotated[Optional[str], typer.Option(
        help="K/N: classify only shard K of N (1-based, by a hash of each path); join the CSVs with `trapcls merge`.")]
    = None,
    tta: Annotated[bool, typer.Option(help="Average with a horizontally flipped copy (twice the model work).")]
    = P.tta,
    blank_threshold: BlankThreshold = P.blank_threshold,
    video_fps: VideoFps = P.video_fps,
    video_max_frames: VideoMaxFrames = P.video_max_frames,
    video_timeout: VideoTimeout = P.video_timeout,
    video_frames: Annotated[Optional[Path], typer.Option(
        help="Also write one row per sampled frame of each video clip to this CSV.")] = P.video_frames,
    detections: Annotated[Optional[Path], typer.Option(
        help="MegaDetector output JSON (format 1.0-1.6) for these images: classify each box at or above the "
             "detection threshold as a crop instead of the whole frame; a frame without such a box is blank.")]
    = P.detections,
    detection_threshold: DetectionThreshold = P.detection_threshold,
    boxes_out: Annotated[Optional[Path], typer.Option(
        help="With --detections: one row per classified box (box, detector confidence, class probabilities) "
             "[default: OUT's name with .boxes.csv].")] = P.boxes_out,
    overwrite: Annotated[bool, typer.Option(help="Start --out afresh instead of resuming it.")] = P.overwrite,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any image classified in this run could not be read.")]
    = False,
) -> None:
    """Classify JPEG/PNG images and video clips (one row per clip) into a CSV of per-class probabilities;
    unreadable files become error rows.

    Rows are appended as batches finish. Interrupted? Run the same command again: it skips what
    is done, repairs a torn last line, and ends with the same CSV an uninterrupted run writes.
    """
    from trapcls.predict.shard import parse_shard

    settings = config(ctx, PredictConfig, inputs=inputs or [], bundle=run_bundle(bundle),
                      shard=parse_shard(shard) if shard else None)
    summary = _with_progress(settings)
    show(summary.lines(), summary.notices(submission=settings.fmt == "submission"))
    if strict and summary.failed:
        raise DataError(f"{summary.failed} image{'s' if summary.failed > 1 else ''} could not be read (--strict); "
                        f"their rows in {summary.out} say why.")


def _with_progress(settings: PredictConfig):
    """run_predict with a progress bar once the number of files is known."""
    import warnings

    from PIL import Image

    from trapcls.core.system.progress import bar
    from trapcls.predict import run_predict

    bars = []  # created once the number of files is known, so errors before that print cleanly
    try:
        with warnings.catch_warnings():  # oversized frames become error rows; Pillow's warning would only be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return run_predict(settings, progress=lambda n: bars[0].update(n),
                               on_total=lambda n: bars.append(bar(n, "classify", enabled=True)))
    finally:
        for progress in bars:
            progress.close()


def merge(
    shards: Annotated[list[Path], typer.Argument(help="CSVs written by `trapcls predict --shard K/N` (same model "
                                                      "and format).")],
    out: Annotated[Path, typer.Option(help="The joined CSV to write.")],
) -> None:
    """Join shard CSVs into one, sorted like an unsharded run; refuses mismatched or overlapping shards."""
    from trapcls.predict import merge_csvs

    show(merge_csvs(shards, out).lines())
