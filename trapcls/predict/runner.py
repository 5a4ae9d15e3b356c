"""Classify image files with a bundle: a decode pool feeding inference, rows appended as batches finish.

The pipeline: decoding threads (one per core; Pillow and numpy release the GIL) turn files
into model input a few batches ahead; the backend's `slots` inference calls run at once, each
on a whole batch; the main thread writes each finished batch, in order, to the CSV. Only a
bounded window of batches is ever in memory, whatever the number of files.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from trapcls.core.frames.discover import CLASSIFIED, ImageFile, Unclassified, discover
from trapcls.core.frames.preprocess import preprocess_frame
from trapcls.core.model.blank import BlankRule
from trapcls.core.model.bundle import Bundle, load_bundle
from trapcls.core.system.fsutil import refuse_input_as_output
from trapcls.core.system.hardware import cores
from trapcls.core.system.names import display
from trapcls.core.table.append import CsvAppender
from trapcls.core.table.boxes import boxes_path
from trapcls.core.table.layout import check_submission_ids
from trapcls.core.table.row import Clip, Row
from trapcls.predict.backends import Backend, choose_backend, create_backend
from trapcls.predict.clips import FrameRows, classify_clips
from trapcls.predict.config import DEFAULT_BATCH, PredictConfig
from trapcls.predict.detect import BoxClassifier, check_model_input
from trapcls.predict.infer import Failure, decode, failure_row, frame_probs
from trapcls.predict.merge import merge_csvs
from trapcls.predict.shard import select_shard

log = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 20
NO_CLIP_BOXES = "a video clip: --detections classifies the boxes of still frames (classify clips without it)"


@dataclass
class PredictSummary:
    """What a run did: counts, where the CSV went, which backend, how long it took."""

    out: Path
    backend: str = ""
    device: str = ""
    reason: str = ""
    precision: str = ""  # which precision the backend runs and why, where it chooses one (openvino)
    images: int = 0
    classified: int = 0
    clips: int = 0  # of those classified, video clips
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    repaired: bool = False
    failures: list[Row] = field(default_factory=list)
    blank_rule: BlankRule | None = None  # the is_blank rule (field format, a model with a blank class)
    # Videos and other non-image files in the folders walked, per folder (relative to the inputs' common parent).
    unclassified: dict[str, Unclassified] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the model was given, the detections matched (--detections)

    def lines(self) -> list[str]:
        """What the run did, for the terminal."""
        if self.classified or not self.skipped:
            rate = self.classified / self.seconds if self.seconds > 0 else 0.0
            clips = f" and {self.clips} video clip{'s' if self.clips != 1 else ''}" if self.clips else ""
            return [f"{self.classified - self.clips} images{clips} -> {self.out} ({self.failed} unreadable) in "
                    f"{self.seconds:.1f}s, {rate:.1f} {'files' if self.clips else 'images'}/s"]
        return [f"nothing to do: all {self.images} images are already in {self.out}"]

    def notices(self, *, submission: bool = False) -> list[str]:
        """What the user should know besides: the backend and blank rule used, a resume, files left out, failures
        (`submission`: the CSV is in the submission format, where a failure is a uniform row)."""
        notes = [f"backend: {self.backend} on {self.device} ({self.reason})"]
        notes += [f"precision: {self.precision}"] if self.precision else []
        notes += [self.blank_rule.describe()] if self.blank_rule else []
        notes += self.warnings
        notes += [f"resumed: {self.skipped} files were already in {self.out}"] if self.skipped else []
        notes += [f"repaired: cut an incomplete last line from {self.out}"] if self.repaired else []
        notes += unclassified_lines(self.unclassified)
        notes += [f"  {display(row.path)}: {row.error}" for row in self.failures[:5]]
        if self.failed and submission:
            notes.append("warning: unreadable images got the uniform distribution in the submission")
        return notes


def unclassified_lines(per_folder: dict[str, Unclassified], limit: int = 10) -> list[str]:
    """Videos and other non-image files a walk met: the totals, then a line per folder (never silent)."""
    total = Unclassified()
    for folder in per_folder.values():
        total.merge(folder)
    lines = []
    if total.videos:
        lines.append(f"{total.videos} video{'s' if total.videos > 1 else ''} not classified: {CLASSIFIED}")
    if total.others:
        lines.append(f"{total.others} other file{'s' if total.others > 1 else ''} not classified: not JPEG or PNG")
    lines += [f"  {name}: {per_folder[name].describe()} ({per_folder[name].example()})"
              for name in sorted(per_folder)[:limit]]
    if len(per_folder) > limit:
        lines.append(f"  ... and {len(per_folder) - limit} more folders")
    return lines


def run_predict(
    config: PredictConfig,
    *,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> PredictSummary:
    """Classify every selected image not yet in `config.out`, appending one row per file.

    The CSV is the resume file: re-running the same command skips the files it holds (unless
    `overwrite`), and a finished CSV is put in canonical (sorted) order.
    """
    bundle = load_bundle(config.bundle)
    found = discover(config.inputs, file_list=config.file_list, ignore=config.out, clips=True)
    files = found.files
    # The clip columns when the whole job holds a clip (not this shard only: every shard writes one header).
    warning = check_model_input(bundle, crops=config.detections is not None)
    layout = bundle.layout(config.fmt, config.blank_threshold, clips=any(f.is_clip for f in files),
                           detections=config.detections is not None)
    if config.fmt == "submission":
        check_submission_ids([f.rel for f in files])  # over the whole job, so clashes between shards are caught too
    if config.shard:
        files = select_shard(files, *config.shard)
    choice = choose_backend(config.backend, bundle)
    backend = create_backend(choice.name, bundle, threads=config.threads)
    summary = PredictSummary(out=config.out, backend=backend.name, device=backend.device, reason=choice.reason,
                             precision=getattr(backend, "note", ""), images=len(files), blank_rule=layout.blank_rule,
                             unclassified=found.unclassified)
    appender = CsvAppender(config.out, layout, overwrite=config.overwrite)
    summary.repaired = appender.repaired
    todo = [f for f in files if layout.key(Row(f.rel, None)) not in appender.done]
    summary.skipped = len(files) - len(todo)
    if summary.skipped:
        log.info("resuming: %d of %d files are already in %s", summary.skipped, len(files), config.out)
    frames = [f for f in todo if not f.is_clip]
    clips = [f for f in todo if f.is_clip]
    try:  # checked before the work starts, like --out
        per_frame = FrameRows(config.video_frames, bundle, appender.done) if config.video_frames and clips else None
        boxes = _box_classifier(config, bundle, files, appender.done)
    except BaseException:
        appender.close()
        raise
    summary.warnings = [warning] if warning else []
    if on_total:
        on_total(len(todo))
    start = time.perf_counter()
    try:
        batch_size = config.batch_size or DEFAULT_BATCH.get(backend.device, 8)
        work = [classify_batches(frames, bundle, backend, batch_size=batch_size, workers=config.workers,
                                 tta=config.tta, boxes=boxes)]
        if clips and boxes is not None:  # MegaDetector's boxes of a clip are per sampled frame: not read yet
            work.append([[Row(f.rel, None, error=NO_CLIP_BOXES, clip=Clip()) for f in clips]])
        elif clips:
            work.append(classify_clips(clips, bundle, backend, config, batch_size=batch_size, tta=config.tta,
                                       frames=per_frame))
        for results in itertools.chain(*work):
            appender.append(results)
            _count(summary, results)
            if progress:
                progress(len(results))
    finally:
        appender.close()
        summary.seconds = time.perf_counter() - start
    merge_csvs([config.out], config.out)  # canonical order: the same file however the work was split
    if boxes is not None:
        boxes.writer.finish()
        summary.warnings += boxes.notes()
    return summary


def _box_classifier(config: PredictConfig, bundle: Bundle, files: list[ImageFile],
                    done: set[str]) -> BoxClassifier | None:
    """--detections: the detector's file read and matched to the job's frames, and the boxes CSV started."""
    if config.detections is None:
        return None
    boxes_out = config.boxes_out or boxes_path(config.out)
    refuse_input_as_output(boxes_out, [("--out", config.out), ("--detections", config.detections),
                                       *(("an input", f.path) for f in files)], flag="--boxes-out")
    return BoxClassifier.start(config.detections, config.detection_threshold, bundle,
                               paths=[f.rel for f in files if not f.is_clip],
                               boxes_out=boxes_out, done=done)


def _count(summary: PredictSummary, results: list[Row]) -> None:
    summary.classified += len(results)
    summary.clips += sum(result.clip is not None for result in results)
    for result in results:
        if not result.ok:
            log.warning("%s: %s", result.path, result.error)
            summary.failed += 1
            if len(summary.failures) < MAX_REPORTED_FAILURES:
                summary.failures.append(result)


def classify_batches(
    files: list[ImageFile],
    bundle: Bundle,
    backend: Backend,
    *,
    batch_size: int = 16,
    workers: int | None = None,
    tta: bool = False,
    boxes: BoxClassifier | None = None,
) -> Iterator[list[Row]]:
    """One Row per file, one list per batch, in order; decoding runs ahead of inference. With `boxes`, each frame
    is classified from its detector boxes (predict/detect.py), through the same pipeline."""
    batches = iter([files[i:i + batch_size] for i in range(0, len(files), batch_size)])
    decode_pool = ThreadPoolExecutor(max_workers=workers or cores(), thread_name_prefix="decode")
    infer_pool = ThreadPoolExecutor(max_workers=backend.slots, thread_name_prefix="infer")
    in_flight: deque[Future] = deque()
    if boxes is None:
        load = partial(preprocess_frame, spec=bundle.preprocess)
        decode_file, finish = (lambda f: decode(f.path, load)), partial(_infer, bundle=bundle, backend=backend, tta=tta)
    else:
        decode_file, finish = boxes.decode, partial(boxes.rows, backend=backend, batch_size=batch_size, tta=tta)

    def submit_next() -> None:
        batch = next(batches, None)
        if batch is not None:
            decoded = [decode_pool.submit(decode_file, f) for f in batch]
            in_flight.append(infer_pool.submit(lambda b, d: finish(b, [f.result() for f in d]), batch, decoded))

    try:
        # Every slot busy plus two batches decoding ahead: enough to hide decode latency,
        # few enough that memory stays a handful of batches.
        for _ in range(backend.slots + 2):
            submit_next()
        while in_flight:
            results = in_flight.popleft().result()
            submit_next()
            yield results
    finally:
        for future in in_flight:
            future.cancel()
        decode_pool.shutdown(wait=True, cancel_futures=True)
        infer_pool.shutdown(wait=True, cancel_futures=True)


def _infer(batch: list[ImageFile], items: list, *, bundle: Bundle, backend: Backend, tta: bool) -> list[Row]:
    good = [i for i, item in enumerate(items) if not isinstance(item, Failure)]
    probs = {}
    if good:
        p = frame_probs(np.stack([items[i][0] for i in good]), bundle, backend, tta)
        probs = dict(zip(good, p, strict=True))
    out = []
    for i, file in enumerate(batch):
        item = items[i]
        if isinstance(item, Failure):
            out.append(failure_row(file.rel, item))
        else:
            out.append(Row(file.rel, probs[i], captured=item[1] or ""))
    return out
