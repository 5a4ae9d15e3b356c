"""Device records in a bundle: what a check on one machine found, and whether it applies to this one.

A TensorRT engine (trapcls.core.model.engines) and an OpenVINO precision check
(trapcls.core.model.openvino_checks) are both records of this kind: made on one machine, for one
model.onnx, with one version of a runtime, on one device. Both follow one rule, written here: a
record applies only where all of it matches this bundle and this machine, and every mismatch is a
reason said to the user in the same words. Nothing here imports a runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from trapcls.core.model.bundle import ONNX_FILE, Bundle
from trapcls.core.system.exceptions import BundleError


class Judged(NamedTuple):
    """One record as judged here: how it is named, the record (None when unreadable), why it does not apply."""

    label: str
    record: Any
    problems: list[str]

    @property
    def applies(self) -> bool:
        return self.record is not None and not self.problems


def judge(entries: Iterable[tuple[str, Any]], parse: Callable[[str, Any], Any],
          problems: Callable[[str, Any], list[str]]) -> Iterator[Judged]:
    """Each (label, stored record) parsed and judged; a record that cannot be parsed (BundleError or
    ValueError) comes with what is wrong with it. A generator: a caller looking for one match stops at it."""
    for label, stored in entries:
        try:
            record = parse(label, stored)
        except (BundleError, ValueError) as exc:
            yield Judged(label, None, [str(exc)])
            continue
        yield Judged(label, record, problems(label, record))


def model_problem(recorded_sha: str, bundle: Bundle, verb: str) -> str | None:
    """Why a record made for another model.onnx does not apply ("it was built from another model.onnx ...")."""
    ours = str(bundle.onnx_sha256)
    if recorded_sha == ours:
        return None
    return f"{verb} another {ONNX_FILE} (sha256 {recorded_sha[:12]}…, the bundle's is {ours[:12]}…)"


def version_problem(tool: str, recorded: str, here: str | None, verb: str) -> str | None:
    """Why a record made with another version of `tool` (or where it is missing) does not apply."""
    if here is None:
        return f"{tool} is not installed here"
    if recorded != here:
        return f"{verb} {tool} {recorded}, this machine has {here}"
    return None


def device_problem(device: str, recorded: str, here: str, verb: str) -> str | None:
    """Why a record made on another device (a GPU or CPU model) does not apply."""
    return None if recorded == here else f"{verb} a {recorded}, this {device} is a {here}"
