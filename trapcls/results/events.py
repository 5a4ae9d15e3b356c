"""Camera-trap events: the frames and video clips one visit produced, grouped by camera and capture time.

Grouping: a deployment is a camera folder (the first N folders of a frame's path; frames directly
under the root form the deployment "."). Within it, frames are sorted by capture time and a new
event starts when a frame comes more than `gap` seconds after the previous one; equal times are
one event. File names and row order never matter. A frame without a capture time is an event of
its own, flagged `untimed`. An unreadable frame counts in its event (`unreadable`) but adds no
evidence; an event with no readable frame has no label.

A video clip is one item of its deployment, like a frame, placed by its start time (the container's
creation time). It lasts: the gap is counted from the end of the event so far (the latest end of its
items, a clip's end being its start plus its duration), so the clips of a camera that re-triggers while
an animal stays are one event however long each clip is, and the event's `end` is when its last clip ends.
A frame lasts no time, so for frames the end is the last capture time, as before clips.

The event's probabilities are its readable frames' combined by `core/model/probs.combine_frames`, the rule a
video clip's sampled frames are combined by too (written there once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from trapcls.core.model.blank import BlankRule
from trapcls.core.model.probs import combine_frames
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import refuse_input_as_output, write_csv, writing
from trapcls.core.system.names import neutralise
from trapcls.core.table.blank import rule_for_table
from trapcls.core.table.read import Table, read_field
from trapcls.core.table.row import Row, number
from trapcls.results.clips import clip_end
from trapcls.results.config import EventsConfig, files_phrase


@dataclass(frozen=True)
class Event:
    """The frames (and clips) of one visit, in time order, their combined probabilities (None if none was readable)
    and when the visit ended (the capture time of its last frame, or the end of its last clip, as text)."""

    id: str
    deployment: str
    frames: tuple[Row, ...]
    probs: np.ndarray | None
    end: str = ""

    @property
    def timed(self) -> bool:
        return bool(self.frames[0].captured)

    @property
    def start(self) -> str:
        return self.frames[0].captured

    @property
    def unreadable(self) -> int:
        return sum(not f.ok for f in self.frames)


def deployment_of(path: str, depth: int) -> str:
    """The camera folder of a frame: its first `depth` folders ("." for a frame directly under the root)."""
    folders = path.split("/")[:-1][:depth]
    return "/".join(folders) if folders else "."


def group_events(table: Table, *, gap: float, deployment: Callable[[str], str], relative: bool = False) -> list[Event]:
    """The events of a field table; `deployment` maps a frame's path to its camera folder. `relative`: the paths are
    already relative to their camera folder (a camera's own CSV, as the watch writes it), not to the table's root."""
    by_deployment: dict[str, list[Row]] = {}
    for frame in table.rows:
        by_deployment.setdefault(deployment(frame.path), []).append(frame)
    events = []
    for name in sorted(by_deployment):
        for frames in _split(by_deployment[name], gap):
            events.append(_event(name, frames, table.blank, relative))
    return events


def _split(frames: list[Row], gap: float) -> Iterable[list[Row]]:
    """Timed frames (and clips) in runs where none starts more than `gap` after the run so far ended, then each
    untimed one alone (by path, for a stable order)."""
    timed = sorted((f for f in frames if f.captured), key=lambda f: (f.time, f.path))
    current: list[Row] = []
    end = None
    for frame in timed:
        if current and (frame.time - end).total_seconds() > gap:
            yield current
            current = []
        finish = clip_end(frame.time, frame)
        end = finish if not current else max(end, finish)
        current.append(frame)
    if current:
        yield current
    for frame in sorted((f for f in frames if not f.captured), key=lambda f: f.path):
        yield [frame]


def _event(deployment: str, frames: list[Row], blank: int | None, relative: bool = False) -> Event:
    first = frames[0]
    # Stable: the same frames give the same id whatever the file order. Starts within a deployment
    # are strictly increasing (events are split by time), so the start names a timed event.
    inside = first.path if relative or deployment == "." else first.path[len(deployment) + 1:]
    suffix = first.time.strftime("%Y%m%dT%H%M%S") if first.captured else "untimed:" + inside
    readable = [f.probs for f in frames if f.ok]
    probs = combine_frames(np.stack(readable), blank) if readable else None
    return Event(id=f"{deployment}/{suffix}", deployment=deployment, frames=tuple(frames), probs=probs,
                 end=_end(frames))


def _end(frames: list[Row]) -> str:
    """The latest end among `frames`, as text: a frame's capture time as the CSV wrote it, a clip's computed end."""
    if not frames[0].captured:
        return ""
    last = max(reversed(frames), key=lambda f: clip_end(f.time, f))  # on a tie, the last in time order
    moment = datetime.fromisoformat(last.captured)
    finish = clip_end(moment, last, whole_seconds=True)
    return last.captured if finish == moment else finish.isoformat(timespec="seconds")


def events_header(classes: tuple[str, ...], blank: int | None) -> list[str]:
    """events.csv's columns."""
    flag = ["is_blank"] if blank is not None else []
    return ["event_id", "deployment", "start", "end", "frames", "unreadable", "untimed", "label", "probability",
            *flag, *map(neutralise, classes), "first_file", "model"]


def event_row(event: Event, classes: tuple[str, ...], blank: int | None, *, rule: BlankRule | None,
              model: str | None) -> list[str]:
    """One events.csv row; label, probability and class cells are empty for an event with no readable frame."""
    flag = 1 if blank is not None else 0
    if event.probs is None:
        verdict = ["", "", *([""] * flag), *([""] * len(classes))]
    else:
        top = int(np.argmax(event.probs))
        is_blank = ["true" if rule.is_blank(event.probs[blank]) else "false"] if flag else []
        verdict = [neutralise(classes[top]), number(event.probs[top]), *is_blank, *map(number, event.probs)]
    return [neutralise(event.id), neutralise(event.deployment), event.start, event.end, str(len(event.frames)),
            str(event.unreadable), "false" if event.timed else "true", *verdict, neutralise(event.frames[0].path),
            neutralise(model or "")]


def write_events(events: list[Event], table: Table, out: Path, *, rule: BlankRule | None) -> None:
    """Write events.csv atomically (temp file, fsync, rename); `rule` decides is_blank (None: no blank class)."""
    write_csv(out, events_header(table.classes, table.blank),
              (event_row(e, table.classes, table.blank, rule=rule, model=table.model) for e in events))


@dataclass(frozen=True)
class EventsSummary:
    """What `trapcls events` did."""

    out: Path
    frames: int
    events: int
    deployments: int
    untimed: int  # frames without a capture time (each its own event)
    unreadable: int
    blank_events: int | None  # None when the model has no blank class
    rule: BlankRule | None  # the blank rule applied, and why (None: no blank class)
    clips: int = 0  # how many of the rows (`frames`) are video clips

    def lines(self) -> list[str]:
        """What was written, for the terminal."""
        blank = "" if self.blank_events is None else f", {self.blank_events} blank"
        return [f"{files_phrase(self.frames, self.clips)} -> {self.events} events{blank} in {self.deployments} "
                f"deployments -> {self.out}"]

    def notices(self) -> list[str]:
        """What the user should know besides: the blank rule applied and why, frames that stand alone."""
        notes = [self.rule.describe()] if self.rule else []
        files = "frames or clips" if self.clips else "frames"
        if self.untimed:
            notes.append(f"note: {self.untimed} {files} have no capture time; each is an event of its own "
                         "(untimed = true).")
        if self.unreadable:
            notes.append(f"note: {self.unreadable} {files} were unreadable; they are counted in their events "
                         "(unreadable) but add no evidence.")
        return notes


def run_events(config: EventsConfig) -> EventsSummary:
    """Group a field CSV's frames into events and write one row per event."""
    refuse_input_as_output(config.out, config.inputs())
    table = read_field(config.predictions)
    rule = rule_for_table(table, given=config.blank_threshold, bundle=config.bundle)
    events = group_events(table, gap=config.gap,
                          deployment=lambda path: deployment_of(path, config.deployment_depth))
    if config.out.is_dir():
        raise DataError(f"--out {config.out} is a folder; give a CSV file path, e.g. {config.out / 'events.csv'}.")
    with writing(config.out):
        write_events(events, table, config.out, rule=rule)
    blank = table.blank
    return EventsSummary(
        out=config.out, frames=len(table.rows), clips=sum(f.clip is not None for f in table.rows), events=len(events),
        deployments=len({e.deployment for e in events}),
        untimed=sum(not f.captured for f in table.rows), unreadable=sum(not f.ok for f in table.rows), rule=rule,
        blank_events=None if rule is None else sum(e.probs is not None and rule.is_blank(e.probs[blank])
                                                   for e in events))
