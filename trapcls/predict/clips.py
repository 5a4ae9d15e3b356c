"""Classify video clips: one row per clip from the frames sampled from it.

Decoding runs in worker processes (`clip_workers.ClipDecoder`): a decoder that crashes or hangs on one clip
costs that clip an `error` row, never the run. Each clip's sampled frames are classified in batches by the
same backend and the same probabilities as still frames, and combined by the one rule for frames of one
scene (`core/model/probs.combine_frames`, the event rule): one frame that clearly shows an animal makes the
clip an animal, frames that are all blank keep it blank. The frame that shows the clip's label best is named
by its frame number. `FrameRows` writes the sampled frames' own rows (`--video-frames`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from trapcls.core.frames.discover import ImageFile
from trapcls.core.model.blank import blank_index
from trapcls.core.model.bundle import Bundle
from trapcls.core.model.probs import combine_frames
from trapcls.core.system.hardware import cores
from trapcls.core.system.names import neutralise
from trapcls.core.table.row import Clip, Row, number
from trapcls.predict.backends import Backend
from trapcls.predict.config import RunOptions
from trapcls.predict.infer import frame_probs
from trapcls.predict.side_csv import SideCsv


def classify_clips(files: list[ImageFile], bundle: Bundle, backend: Backend, options: RunOptions, *,
                   batch_size: int, tta: bool = False, frames: FrameRows | None = None) -> Iterator[list[Row]]:
    """One Row per clip (in the order the decoders finish), each in a list of its own."""
    from trapcls.predict.clip_workers import ClipDecoder

    by_path = {f.path: f for f in files}
    with ClipDecoder(bundle.preprocess, fps=options.video_fps, max_frames=options.video_max_frames,
                     workers=_workers(options), timeout=options.video_timeout) as decoder, \
            ThreadPoolExecutor(max_workers=backend.slots, thread_name_prefix="infer") as infer:
        for path, sampled in decoder.decode([f.path for f in files]):
            rel = by_path[path].rel
            if isinstance(sampled, str):
                yield [Row(rel, None, error=sampled, clip=Clip())]
                continue
            batches = [sampled.inputs[i:i + batch_size] for i in range(0, len(sampled.inputs), batch_size)]
            # The clip's batches run on every inference slot at once, as frames' do.
            probs = np.concatenate(list(infer.map(partial(frame_probs, bundle=bundle, backend=backend, tta=tta),
                                                  batches)))
            row = clip_row(rel, sampled, probs, bundle)
            if frames is not None:
                frames.write(rel, sampled, probs)
            yield [row]


def clip_row(rel: str, sampled, probs: np.ndarray, bundle: Bundle) -> Row:
    """The clip's row from its sampled frames' probabilities (one row each, in frame order)."""
    combined = combine_frames(probs, blank_index(bundle.classes))
    top = int(np.argmax([float(number(p)) for p in combined]))  # the label the CSV's cells give
    best = sampled.frame_numbers[int(np.argmax(probs[:, top]))]
    return Row(rel, combined, captured=sampled.captured or "",
               clip=Clip(frames=len(probs), duration=sampled.duration, frame_rate=sampled.frame_rate,
                         best_frame=best))


def _workers(options: RunOptions) -> int:
    # Each decoder is a process using FFmpeg's own threads: a couple of them keep a CPU busy beside inference.
    return options.workers or min(2, cores())


class FrameRows:
    """`--video-frames`: one row per sampled frame of each clip (clip, frame_number, time_s, label, probability,
    <classes>, model), appended as each clip finishes; it resumes with the main CSV (predict/side_csv.py)."""

    def __init__(self, path: Path, bundle: Bundle, done: set[str]) -> None:
        self.classes, self.model = bundle.classes, bundle.model_id
        header = ["clip", "frame_number", "time_s", "label", "probability", *map(neutralise, self.classes), "model"]
        self.csv = SideCsv(path, header, "--video-frames", "frames", done)

    def write(self, rel: str, sampled, probs: np.ndarray) -> None:
        lines = []
        for number_, time_, p in zip(sampled.frame_numbers, sampled.times, probs, strict=True):
            written = [number(v) for v in p]
            top = int(np.argmax([float(c) for c in written]))
            lines.append([neutralise(rel), str(number_), f"{time_:.6g}", neutralise(self.classes[top]),
                          written[top], *written, neutralise(self.model)])
        self.csv.append(lines)
