"""The options of `trapcls events` and `trapcls convert`, each default written once; the CLI reads them here.

Free of heavy imports: the CLI loads this module to build its options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# A new event starts when a frame comes more than this many seconds after the previous one of its
# deployment. 120 s spans a camera's burst and its quick re-triggers on one animal, and is short
# enough that two visits minutes apart stay two events (MegaDetector's and AddaxAI's tools default
# to 60-120 s for the same reason).
DEFAULT_GAP = 120.0
# Deployment = the first N folders of a frame's path (1: each top folder is one camera, like watch).
DEFAULT_DEPLOYMENT_DEPTH = 1
TARGETS = ("megadetector", "camtrap-dp")


@dataclass(frozen=True)
class EventsConfig:
    """Everything `trapcls events` needs; the CLI only fills this in."""

    predictions: Path
    out: Path
    gap: float = DEFAULT_GAP
    deployment_depth: int = DEFAULT_DEPLOYMENT_DEPTH
    blank_threshold: float | None = None


@dataclass(frozen=True)
class ConvertConfig:
    """Everything `trapcls convert` needs; the CLI only fills this in."""

    predictions: Path
    to: str
    out: Path
    gap: float = DEFAULT_GAP
    deployment_depth: int = DEFAULT_DEPLOYMENT_DEPTH
    blank_threshold: float | None = None
    deployments: Path | None = None  # camtrap-dp: a CSV of deploymentID, latitude, longitude, ...
    taxa: Path | None = None  # camtrap-dp and megadetector: class -> scientific name / observation type
    timezone: str | None = None  # camtrap-dp: the cameras' UTC offset or IANA zone (EXIF has none)
    overwrite: bool = False


@dataclass
class ConvertSummary:
    """What a conversion wrote."""

    out: Path
    to: str
    frames: int = 0
    events: int = 0
    notes: list[str] = field(default_factory=list)  # what the user should know (placeholders, frames left out)


# trapcls adapt: a deployment needs this many readable frames before its priors are re-estimated,
# and the estimate is pulled towards the training priors by this many pseudo-frames (a Dirichlet
# prior): with 30 frames and strength 10, the training mix still weighs a quarter.
DEFAULT_MIN_FRAMES = 30
DEFAULT_PRIOR_STRENGTH = 10.0


@dataclass(frozen=True)
class AdaptConfig:
    """Everything `trapcls adapt` needs; the CLI only fills this in."""

    predictions: Path
    bundle: Path
    out: Path
    deployment_depth: int = DEFAULT_DEPLOYMENT_DEPTH
    min_frames: int = DEFAULT_MIN_FRAMES
    prior_strength: float = DEFAULT_PRIOR_STRENGTH
    blank_threshold: float | None = None
    report: Path | None = None  # JSON of the estimated priors; default: next to --out
