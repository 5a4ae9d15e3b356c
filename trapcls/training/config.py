"""The options of `trapcls train`, each default written once, and how a config file joins them.

Precedence, lowest first: the defaults below < a config file (`--config RUN/config.json`, the
file every run writes, reruns its recipe) < the flags given on the command line. The CLI reads
its defaults from TrainConfig and passes only the flags the user typed, so no default is written
twice. Free of heavy imports: the CLI loads this module to build its options.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trapcls.core.options import check_options, option
from trapcls.core.system.exceptions import DataError, OptionError

# The fixed choices; the CLI offers exactly these and the recipe's registries are keyed by them.
OPTIMIZERS = ("adamw", "sgd")
AUGMENTS = ("trivial", "randaugment", "none")
BALANCES = ("none", "sampler", "loss")
GROUP_BY = ("auto", "site", "folder", "none")
DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}

# Settings of one run (where it goes, whether it continues), never taken from a config file.
RUN_ONLY = frozenset({"out", "resume", "overwrite", "command"})
# What a run adds to its config.json besides the options (resolved facts); a config file may hold them.
RESOLVED = frozenset({"split", "device", "precision", "classes", "preprocess", "train_images", "val_images",
                      "processes", "train_class_counts", "crops"})


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The settings of a training run; saved, resolved, as config.json in the run folder."""

    data: Path
    out: Path
    arch: str | None = None
    weights: Path | None = None
    from_bundle: Path | None = None
    pretrained: bool = False
    epochs: int = option(5, low=1)
    img_size: int | None = option(None, low=32)
    batch_size: int = option(16, low=1)
    optimizer: str = option("adamw", choices=OPTIMIZERS)
    lr: float | None = option(None, low=0)
    weight_decay: float = option(0.05, low=0)
    label_smoothing: float = option(0.1, low=0, high=1, high_open=True)
    freeze_backbone: bool = False
    freeze_epochs: int = option(0, low=0)
    layer_decay: float | None = option(None, low=0, high=1, low_open=True)
    warmup_epochs: float = option(1.0, low=0)
    augment: str = option("trivial", choices=AUGMENTS)
    crop_scale: float = option(0.7, low=0.1, high=1)
    balance: str = option("none", choices=BALANCES)
    accumulate: int = option(1, low=1)
    ema_decay: float | None = option(None, low=0, high=1, low_open=True, high_open=True)
    early_stop: int = option(0, low=0, hint="0: never")
    amp: bool = True
    val_fraction: float = option(0.2, low=0, high=1, high_open=True)
    group_by: str = option("auto", choices=GROUP_BY)
    folds: int = option(0, low=0, hint="0: off; k-fold needs at least 2")
    fold: int | None = option(None, low=1, hint="leave it out to train every fold")
    label_regex: str | None = None
    # Train on detector crops: MegaDetector's output for DATA's frames, and the confidence a box needs
    # (default: the file's typical_detection_threshold, else 0.2; training/crops.py says what becomes a sample).
    detections: Path | None = None
    detection_threshold: float | None = option(None, low=0, high=1, hint="leave it out for the file's own")
    seed: int = 0
    workers: int | None = option(None, low=0, hint="0: load in the training process")
    overwrite: bool = False
    resume: bool = False
    find_lr: bool = False
    find_lr_steps: int = option(100, low=2)
    export: str = "onnx"
    calibrate: bool = True
    command: str = ""  # the command line, for the report

    def to_json(self) -> dict:
        """The settings as JSON values (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def __post_init__(self) -> None:
        check_options(self)
        if self.folds:
            check_folds(self.folds, self.fold)
        elif self.fold is not None:
            raise OptionError("fold", "applies to k-fold cross-validation: give {folds} too")
        if self.detection_threshold is not None and self.detections is None:
            raise OptionError("detection_threshold", "applies to detector boxes: give {detections} too")

    @property
    def peak_lr(self) -> float:
        """--lr, else the optimizer's default rate."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


def check_folds(folds: int, fold: int | None) -> None:
    """OptionError unless fold `fold` of `folds` (1-based; None: every fold) exists and k-fold has at least 2 folds."""
    if folds < 2:
        raise OptionError("folds", f"k-fold needs at least 2 folds, got {folds} (0: no k-fold)")
    if fold is not None and not 1 <= fold <= folds:
        raise OptionError("fold", f"folds count from 1, so it must be between 1 and {folds}, got {fold}")


def train_config(flags: dict[str, Any], *, config_file: Path | None = None) -> TrainConfig:
    """TrainConfig from defaults < `config_file` < `flags` (the options given on the command line)."""
    values = read_config_file(config_file) if config_file is not None else {}
    values.update(flags)
    missing = [name for name in ("data", "out") if name not in values]
    if missing:
        raise DataError(f"{' and '.join(missing)} must be given (on the command line or in --config).")
    return TrainConfig(**values)


def read_config_file(path: Path) -> dict[str, Any]:
    """The options in a JSON config file (a run's config.json, or one written by hand), checked and typed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"--config {path} does not exist; pass a run's config.json or a JSON file of "
                        "options.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"--config {path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"--config {path} must hold a JSON object of option names and values.")
    types_ = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(data) - set(types_) - RESOLVED)
    if unknown:
        raise DataError(f"--config {path}: unknown options {', '.join(unknown)}. Valid: "
                        f"{', '.join(sorted(set(types_) - RUN_ONLY))}.")
    return {name: _typed(path, name, value, types_[name]) for name, value in data.items()
            if name in types_ and name not in RUN_ONLY}


def _typed(path: Path, name: str, value: Any, hint: Any) -> Any:
    """`value` as the field's type (paths from strings); a DataError naming the option when it does not fit."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is Path and isinstance(value, str):
            return Path(value)
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind in (int, str, bool) and type(value) is kind:
            return value
    expected = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise DataError(f"--config {path}: {name} must be {expected}, got {value!r}.")
