"""Field results: events from frames, per-deployment prior adaptation, and exports for Timelapse and Camtrap DP.

Entry points: `run_events(EventsConfig(...))` and `run_convert(ConvertConfig(...))`; both read a
`field` CSV that `predict` or `watch` wrote (`read_field`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trapcls.results.config import AdaptConfig, ConvertConfig, EventsConfig

if TYPE_CHECKING:
    from trapcls.results.adapt import run_adapt
    from trapcls.results.convert import run_convert
    from trapcls.results.events import run_events

__all__ = ["AdaptConfig", "ConvertConfig", "EventsConfig", "run_adapt", "run_convert", "run_events"]


def __getattr__(name: str):
    """The writers on first use, so that importing the configs (as the CLI does) loads nothing heavy."""
    if name == "run_events":
        from trapcls.results import events

        return events.run_events
    if name == "run_adapt":
        from trapcls.results import adapt

        return adapt.run_adapt
    if name == "run_convert":
        from trapcls.results import convert

        return convert.run_convert
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
