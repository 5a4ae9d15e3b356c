"""The options of `trapcls events` and `trapcls convert`, each default written once; the CLI reads them here.

Free of heavy imports: the CLI loads this module to build its options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trapcls.core.model.blank import BlankRule
from trapcls.core.options import check_options, option

# A new event starts when a frame comes more than this many seconds after the previous one of its
# deployment. 120 s spans a camera's burst and its quick re-triggers on one animal, and is short
# enough that two visits minutes apart stay two events (MegaDetector's and AddaxAI's tools default
# to 60-120 s for the same reason).
DEFAULT_GAP = 120.0
# Deployment = the first N folders of a frame's path (1: each top folder is one camera, like watch).
DEFAULT_DEPLOYMENT_DEPTH = 1
TARGETS = ("megadetector", "camtrap-dp")


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """What every command that reads a field CSV shares: how its frames group into deployments and events,
    and which blank rule applies (None: the one the CSV was written with, trapcls.core.table.blank)."""

    predictions: Path
    bundle: Path | None = None  # the model that wrote the CSV, for its blank policy
    deployment_depth: int = option(DEFAULT_DEPLOYMENT_DEPTH, low=0, hint="0: one deployment")
    blank_threshold: float | None = option(None, low=0, high=1)

    def __post_init__(self) -> None:
        check_options(self)

    def inputs(self) -> list[tuple[str, Path | None]]:
        """The files this command reads, named for a message: no output may be one of them."""
        return [("the predictions CSV", self.predictions), ("the --bundle", self.bundle)]


@dataclass(frozen=True, kw_only=True)
class EventOptions:
    """How frames group into events: watch --events, events and convert share it."""

    gap: float = option(DEFAULT_GAP, low=0)


@dataclass(frozen=True, kw_only=True)
class EventsConfig(ReadOptions, EventOptions):
    """Everything `trapcls events` needs; the CLI only fills this in."""

    out: Path


@dataclass(frozen=True, kw_only=True)
class ConvertConfig(ReadOptions, EventOptions):
    """Everything `trapcls convert` needs; the CLI only fills this in."""

    to: str = option(choices=TARGETS)
    out: Path
    deployments: Path | None = None  # camtrap-dp: a CSV of deploymentID, latitude, longitude, ...
    taxa: Path | None = None  # camtrap-dp and megadetector: class -> scientific name / observation type
    timezone: str | None = None  # camtrap-dp: the cameras' UTC offset or IANA zone (EXIF has none)
    overwrite: bool = False
    # A detection run (`predict --detections`): its boxes CSV (None: the sibling <stem>.boxes.csv) and the
    # detector's file it was classified from (megadetector: required, its boxes and detector are carried over).
    boxes: Path | None = None
    detections: Path | None = None

    def inputs(self) -> list[tuple[str, Path | None]]:
        """The files this command reads, named for a message: no output may be one of them."""
        return [*super().inputs(), ("the --taxa CSV", self.taxa), ("the --deployments CSV", self.deployments),
                ("the --boxes CSV", self.boxes), ("the --detections file", self.detections)]


def files_phrase(files: int, clips: int) -> str:
    """How many files a command read, for the terminal: "12 frames", or "10 frames and 2 clips" when some are
    video clips."""
    if not clips:
        return f"{files} frames"
    frames = files - clips
    return f"{frames} frames and {clips} clips" if frames else f"{clips} clips"


@dataclass
class ConvertSummary:
    """What a conversion wrote."""

    out: Path
    to: str
    frames: int = 0  # files written (frames and clips)
    events: int = 0
    notes: list[str] = field(default_factory=list)  # what the user should know (placeholders, frames left out)
    rule: BlankRule | None = None  # the blank rule applied, and why (None: no blank class)
    clips: int = 0  # how many of `frames` are video clips
    boxes: int = 0  # a detection run's: detector boxes written (megadetector), box observations (camtrap-dp)

    def lines(self) -> list[str]:
        """What was written, for the terminal."""
        boxes = f", {self.boxes} {'box observations' if self.to == 'camtrap-dp' else 'boxes'}" if self.boxes else ""
        events = f", {self.events} events" if self.events else ""
        return [f"{files_phrase(self.frames, self.clips)}{boxes}{events} -> {self.out} ({self.to})"]

    def notices(self) -> list[str]:
        """What the user should know besides: the blank rule applied and why, then the notes."""
        return ([self.rule.describe()] if self.rule else []) + [f"note: {note}" for note in self.notes]


# trapcls adapt: a deployment needs this many readable frames before its priors are re-estimated,
# and the estimate is pulled towards the training priors by this many pseudo-frames (a Dirichlet
# prior): with 30 frames and strength 10, the training mix still weighs a quarter.
DEFAULT_MIN_FRAMES = 30
DEFAULT_PRIOR_STRENGTH = 10.0


@dataclass(frozen=True, kw_only=True)
class AdaptConfig(ReadOptions):
    """Everything `trapcls adapt` needs; the CLI only fills this in (its bundle is required: its priors)."""

    bundle: Path
    out: Path
    min_frames: int = option(DEFAULT_MIN_FRAMES, low=1)
    prior_strength: float = option(DEFAULT_PRIOR_STRENGTH, low=0)
    report: Path | None = None  # JSON of the estimated priors; default: next to --out
