"""The options of `trapcls predict`, each default written once; the CLI reads them from here.

Free of heavy imports: the CLI loads this module to build its options, and `trapcls --help`
must stay fast. Tests hold FORMATS and BACKEND_NAMES equal to the writers' and the backend
registry's own tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FORMATS = ("field", "submission")
BACKEND_NAMES = ("onnxruntime", "torch", "tensorrt", "openvino")
# Default images per batch by device: on a CPU 8 is as fast as 16 at about half the peak memory
# (benchmarks/); a GPU wants larger batches to stay busy.
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}


@dataclass(frozen=True)
class PredictConfig:
    """Everything `trapcls predict` needs; the CLI only fills this in."""

    inputs: list[Path]
    bundle: Path
    out: Path
    fmt: str = "field"
    backend: str = "auto"
    batch_size: int | None = None
    threads: int | None = None
    workers: int | None = None
    file_list: Path | None = None
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    tta: bool = False
    blank_threshold: float | None = None
