"""The options of `trapcls predict`, each default and bound written once; the CLI reads them from here.

Free of heavy imports: the CLI loads this module to build its options, and `trapcls --help`
must stay fast. Tests hold FORMATS and BACKEND_NAMES equal to the writers' and the backend
registry's own tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trapcls.core.options import check_options, option
from trapcls.core.system.exceptions import OptionError

FORMATS = ("field", "submission")
BACKEND_NAMES = ("onnxruntime", "torch", "tensorrt", "openvino")
# Default images per batch by device: on a CPU 8 is as fast as 16 at about half the peak memory
# (benchmarks/); a GPU wants larger batches to stay busy.
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a command that classifies runs its model: predict and watch share these, declared once."""

    backend: str = option("auto", choices=("auto", *BACKEND_NAMES))
    batch_size: int | None = option(None, low=1, hint="leave it out for the default")
    threads: int | None = option(None, low=1, hint="leave it out for the default")
    workers: int | None = option(None, low=1, hint="leave it out for the default")
    blank_threshold: float | None = option(None, low=0, high=1)
    # Video clips: frames sampled per second of video (the MegaDetector / SpeciesNet convention: 1), at most
    # this many per clip (spread evenly over a long one), and how long one clip's decoding may take: these
    # seconds plus 2 for each second of clip its container states (predict/clip_workers.py).
    video_fps: float = option(1.0, low=0, low_open=True, high=60)
    video_max_frames: int | None = option(None, low=1, hint="leave it out for no limit")
    video_timeout: float = option(30.0, low=0, low_open=True)


@dataclass(frozen=True, kw_only=True)
class PredictConfig(RunOptions):
    """Everything `trapcls predict` needs; the CLI only fills this in."""

    inputs: list[Path]
    bundle: Path
    out: Path
    fmt: str = option("field", choices=FORMATS)
    file_list: Path | None = None
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    tta: bool = False
    video_frames: Path | None = None  # also write one row per sampled frame of each clip here
    # Classify the boxes of a MegaDetector output file instead of whole frames (predict/detect.py); the threshold
    # defaults to the file's own (core/frames/detections.py); box rows go to boxes_out, else beside `out`.
    detections: Path | None = None
    detection_threshold: float | None = option(None, low=0, high=1, hint="leave it out for the file's own")
    boxes_out: Path | None = None

    def __post_init__(self) -> None:
        check_options(self)
        if not self.inputs and self.file_list is None:
            raise OptionError("inputs", "no input given: name at least one folder, image file or glob, or give "
                                        "{file_list}")
        if self.shard is not None:
            check_shard(*self.shard)
        for name in ("detection_threshold", "boxes_out"):
            if getattr(self, name) is not None and self.detections is None:
                raise OptionError(name, "applies to detector boxes: give {detections} too")
        if self.boxes_out is not None and self.boxes_out.absolute() in (self.out.absolute(),
                                                                        self.detections.absolute()):
            raise OptionError("boxes_out", "names the same file as {out} or {detections}: give the box rows a file of "
                                           "their own")
        if self.blank_threshold is not None and self.fmt == "submission":
            raise OptionError("blank_threshold", "does not apply: the submission format has no is_blank column")



def check_shard(k: int, n: int, text: str | None = None) -> None:
    """OptionError("shard", ...) unless shard K of N exists (1-based); `text` is the value as typed."""
    typed = text or f"{k}/{n}"
    if n < 1:
        raise OptionError("shard", f"{typed!r}: N (the number of shards) must be at least 1")
    if k == 0:
        raise OptionError("shard", f"{typed!r}: shards count from 1 (1/{n} to {n}/{n}); with a 0-based array index "
                                   f"use $((SLURM_ARRAY_TASK_ID+1))/{n}")
    if not 1 <= k <= n:
        raise OptionError("shard", f"{typed!r}: K must be between 1 and N={n}")
