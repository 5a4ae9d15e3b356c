"""Classify image files with a bundle: decode in threads, batch, run the backend, write the CSV."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trapcls.bundle import Bundle, load_bundle
from trapcls.exceptions import DataError, ImageReadError
from trapcls.predict.backends import create_backend, probabilities
from trapcls.predict.discover import ImageFile, discover_images
from trapcls.predict.output import Result, check_format, check_submission_ids, write_csv
from trapcls.preprocess import PreprocessSpec, preprocess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictConfig:
    """Everything `trapcls predict` needs; the CLI only fills this in."""

    inputs: list[Path]
    bundle: Path
    out: Path
    fmt: str = "field"
    backend: str = "onnxruntime"
    batch_size: int = 16
    threads: int | None = None
    workers: int | None = None


@dataclass(frozen=True)
class PredictSummary:
    """What a run did: counts, where the CSV went, how long it took."""

    out: Path
    images: int
    failed: int
    seconds: float
    backend: str
    failures: list[Result]


def run_predict(
    config: PredictConfig,
    *,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> PredictSummary:
    """Classify every image under `config.inputs` and write one CSV row per file."""
    check_format(config.fmt)  # before any work, not after the whole folder is classified
    if config.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {config.batch_size}.")
    bundle = load_bundle(config.bundle)
    files = discover_images(config.inputs)
    if config.fmt == "submission":
        check_submission_ids(files)
    if on_total:
        on_total(len(files))
    backend = create_backend(config.backend, bundle, threads=config.threads)
    start = time.perf_counter()
    results = classify_files(files, bundle, backend, batch_size=config.batch_size, workers=config.workers,
                             progress=progress)
    write_csv(config.out, results, bundle.classes, config.fmt)
    failures = [r for r in results if not r.ok]
    return PredictSummary(out=config.out, images=len(results), failed=len(failures),
                          seconds=time.perf_counter() - start, backend=backend.name, failures=failures)


def classify_files(
    files: list[ImageFile],
    bundle: Bundle,
    backend,
    *,
    batch_size: int = 16,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Result]:
    """Results for `files` in order. Decoding of the next batch overlaps inference on this one."""
    workers = workers or min(8, os.cpu_count() or 1)
    batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending = _submit(pool, batches[0], bundle.preprocess) if batches else []
        for index, batch in enumerate(batches):
            decoded = [future.result() for future in pending]
            if index + 1 < len(batches):
                pending = _submit(pool, batches[index + 1], bundle.preprocess)
            results.extend(_infer(batch, decoded, bundle, backend))
            if progress:
                progress(len(batch))
    return results


def _submit(pool: ThreadPoolExecutor, batch: list[ImageFile], spec: PreprocessSpec) -> list[Future]:
    return [pool.submit(_decode, f.path, spec) for f in batch]


def _decode(path: Path, spec: PreprocessSpec) -> np.ndarray | str:
    try:
        return preprocess(path, spec)
    except ImageReadError as exc:
        return str(exc)


def _infer(batch: list[ImageFile], decoded: list[np.ndarray | str], bundle: Bundle, backend) -> list[Result]:
    good = [i for i, item in enumerate(decoded) if not isinstance(item, str)]
    probs = None
    if good:
        logits = backend.logits(np.stack([decoded[i] for i in good]))
        probs = probabilities(logits, bundle.temperature)
    row_of = {i: row for row, i in enumerate(good)}
    out = []
    for i, file in enumerate(batch):
        if i in row_of:
            out.append(Result(file=file, probs=probs[row_of[i]]))
        else:
            log.warning("%s: %s", file.rel, decoded[i])
            out.append(Result(file=file, probs=None, error=decoded[i]))
    return out
