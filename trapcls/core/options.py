"""Option values checked where they are declared: each config field states its bounds or choices once.

A config class declares a field with `option(default, low=..., high=..., choices=...)` and calls
`check_options(self)` in `__post_init__`; a value outside raises `OptionError(field, problem)`
naming the field and what is valid. The CLI maps the field to its flag and exits 2 (bad usage),
whichever command or layer found it. Code deeper down that needs the same rule (a split given a
fraction, a backend given a thread count) asks the declaration with `check_value`, so no bound
is ever written twice. Free of heavy imports: the CLI builds its options from these classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trapcls.core.system.exceptions import OptionError

BOUNDS = "trapcls.bounds"  # the key of a field's Bounds in its dataclass metadata


@dataclass(frozen=True)
class Bounds:
    """What an option accepts: a range (either end open or closed, or absent) or a set of choices."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value (else low <= value)
    high_open: bool = False  # value < high (else value <= high)
    choices: tuple[str, ...] | None = None
    hint: str = ""  # what the value means, for the message: "0: one CSV for the whole inbox"

    def problem(self, value: Any) -> str | None:
        """Why `value` is not accepted, naming what is; None when it is (None itself is always accepted)."""
        if value is None:
            return None
        if self.choices is not None:
            if value in self.choices:
                return None
            return f"{value!r} is not one of {', '.join(repr(c) for c in self.choices)}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not (below or above):
            return None
        return f"must be {self.describe()}, got {value:g}" + (f" ({self.hint})" if self.hint else "")

    def describe(self) -> str:
        """The accepted range in words: "at least 1", "between 0 and 1", "in [0, 1)", "more than 0"."""
        if self.low is not None and self.high is not None:
            if not (self.low_open or self.high_open):
                return f"between {self.low:g} and {self.high:g}"
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"more than {self.low:g}" if self.low_open else f"at least {self.low:g}"
        return f"less than {self.high:g}" if self.high_open else f"at most {self.high:g}"


def option(default: Any = dataclasses.MISSING, **bounds: Any) -> Any:
    """A dataclass field with `default` (none: required) and the Bounds given by keyword (low=1, high=1,
    choices=(...), ...)."""
    return dataclasses.field(default=default, metadata={BOUNDS: Bounds(**bounds)})


def bounds_of(cls: type, name: str) -> Bounds:
    """The Bounds a config class declares for its field `name`."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get(BOUNDS, Bounds())
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def check_value(cls: type, name: str, value: Any) -> None:
    """OptionError(name, ...) unless `value` fits what `cls` declares for the field `name`."""
    problem = bounds_of(cls, name).problem(value)
    if problem is not None:
        raise OptionError(name, problem)


def check_options(config: Any) -> None:
    """OptionError for the first field of `config` (a dataclass) outside its declared Bounds."""
    for f in dataclasses.fields(config):
        bounds = f.metadata.get(BOUNDS)
        if bounds is not None:
            check_value(type(config), f.name, getattr(config, f.name))
