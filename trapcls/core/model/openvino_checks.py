"""OpenVINO precision checks in a bundle: what `trapcls export openvino` found on each CPU, and whether it holds here.

OpenVINO's CPU plugin runs models in bf16 on its own on CPUs with AMX or AVX512-BF16, and bf16
keeps 8 bits of mantissa against FP16's 11: whether a model survives that depends on the model
and on the kernels this CPU and this OpenVINO pick. So the openvino backend uses bf16 only where
`trapcls export openvino` ran it against ONNX Runtime FP32 on real frames, on this CPU, with this
OpenVINO and this model.onnx, and it stayed within the FP16 tolerances. Each such check, passed
or refused, is one record in bundle.json's "openvino_checks"; a record applies only where all
of it matches (`check_problems`), otherwise f32 is used and the reason said. Nothing here
imports OpenVINO, so every rule is testable on any machine.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from trapcls.core.model.bundle import MANIFEST, Bundle, default_bundle
from trapcls.core.model.records import Judged, device_problem, judge, model_problem, version_problem
from trapcls.core.system.exceptions import BundleError
from trapcls.core.system.fsutil import atomic_write_text
from trapcls.core.system.hardware import Cpu

CHECKS_KEY = "openvino_checks"
RECORD_VERSION = 1
PRECISIONS = ("f32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT values the check runs, in that order


@dataclass(frozen=True)
class PrecisionCheck:
    """One run of a precision against ONNX Runtime FP32 on one CPU, as bundle.json records it."""

    precision: str  # "bf16" or "f32"
    passed: bool
    summary: str  # one line: the numbers, or why it could not run
    cpu: str  # trapcls.core.system.hardware.Cpu.name
    isa: dict[str, bool]  # the bf16 instruction flags (hardware.BF16_FLAGS) as the OS listed them
    openvino_version: str
    onnx_sha256: str
    checked_at: str
    trapcls_version: str
    verification: dict[str, Any] = field(default_factory=dict)  # ParityReport fields and the tolerances
    record_version: int = RECORD_VERSION

    @property
    def short_date(self) -> str:
        return self.checked_at[:10]


def export_command(bundle: Bundle) -> str:
    """The command that checks `bundle` on this CPU and records the result (on a copy of the shipped model)."""
    if is_shipped(bundle):
        return f"cp -r {shlex.quote(str(bundle.root))} my-bundle && trapcls export openvino my-bundle"
    return f"trapcls export openvino {shlex.quote(str(bundle.root))}"


def is_shipped(bundle: Bundle) -> bool:
    """Whether `bundle` is the default model inside the trapcls package, whose files an export must not change."""
    return bundle.root.resolve() == default_bundle().resolve()


def recorded_checks(bundle: Bundle) -> list[Any]:
    """The records in bundle.json's "openvino_checks" (as stored; `parse_check` reads one)."""
    records = bundle.manifest.get(CHECKS_KEY, [])
    if not isinstance(records, list):
        raise BundleError(f"{bundle.root / MANIFEST}: {CHECKS_KEY!r} must be a list; run "
                          f"{export_command(bundle)} to record it afresh.")
    return records


def parse_check(record: Any) -> PrecisionCheck:
    """A stored record as a PrecisionCheck; ValueError saying what is wrong with it."""
    if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
        raise ValueError(f"unknown record (record_version {record.get('record_version')!r})"
                         if isinstance(record, dict) else "a record must be a JSON object")
    known = {f.name for f in fields(PrecisionCheck)}
    try:
        check = PrecisionCheck(**{k: v for k, v in record.items() if k in known})
    except TypeError as exc:
        raise ValueError(f"incomplete record ({exc})") from None
    if check.precision not in PRECISIONS or not isinstance(check.passed, bool) or not isinstance(check.isa, dict):
        raise ValueError(f"malformed record for precision {check.precision!r}")
    return check


def check_problems(check: PrecisionCheck, bundle: Bundle, *, cpu: Cpu, openvino_version: str | None) -> list[str]:
    """Why `check` does not apply to this CPU, this OpenVINO and the bundle's model.onnx; empty when it does."""
    problems = [p for p in (model_problem(check.onnx_sha256, bundle, "it checked"),
                            version_problem("OpenVINO", check.openvino_version, openvino_version, "it ran on"),
                            device_problem("CPU", check.cpu, cpu.name, "it ran on")) if p]
    here = cpu.isa(tuple(check.isa)) if check.isa else cpu.isa()
    if here != check.isa:
        problems.append(f"it ran on a CPU with {_flags(check.isa)}, this one has {_flags(here)}")
    return problems


def _flags(isa: dict[str, bool]) -> str:
    if not isa:
        return "unknown instruction flags"
    present = [name for name, has in isa.items() if has]
    return " ".join(present) if present else "none of " + "/".join(isa)


@dataclass(frozen=True)
class CheckMatch:
    """The record that applies here for one precision, if any, and why each other one does not."""

    check: PrecisionCheck | None
    rejected: list[str]


def judged_checks(bundle: Bundle, *, cpu: Cpu, openvino_version: str | None) -> Iterator[Judged]:
    """Each record in bundle.json judged (trapcls.core.model.records): ("record N", the check, why it does not
    apply here); an unreadable record comes as ("record N", None, [what is wrong with it])."""
    entries = ((f"record {index + 1}", record) for index, record in enumerate(recorded_checks(bundle)))
    return judge(entries, lambda _, record: parse_check(record),
                 lambda _, check: check_problems(check, bundle, cpu=cpu, openvino_version=openvino_version))


def find_check(bundle: Bundle, precision: str, *, cpu: Cpu, openvino_version: str | None) -> CheckMatch:
    """The latest record of `precision` that applies to this machine and model, with reasons for the others."""
    rejected, found = [], None
    for label, check, problems in judged_checks(bundle, cpu=cpu, openvino_version=openvino_version):
        if check is None:
            rejected.append(f"{label}: {problems[0]}")
            continue
        if check.precision != precision:
            continue
        if problems:
            rejected.append(f"the {precision} check of {check.short_date}: {'; '.join(problems)}")
        elif found is None or check.checked_at >= found.checked_at:
            found = check
    return CheckMatch(check=found, rejected=rejected)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision the openvino backend runs and why; `verified`: a passing check of it applies here."""

    precision: str
    reason: str
    verified: bool


def choose_precision(bundle: Bundle, *, cpu: Cpu, openvino_version: str | None, bf16_supported: bool
                     ) -> PrecisionChoice:
    """bf16 only where a passing bf16 check applies here; otherwise f32, saying why.

    A recorded f32 check that failed (OpenVINO itself disagreeing with ONNX Runtime on this
    model) is a BundleError: nothing the openvino backend could run here is trustworthy.
    """
    f32 = find_check(bundle, "f32", cpu=cpu, openvino_version=openvino_version).check
    if f32 is not None and not f32.passed:
        raise BundleError(f"OpenVINO f32 disagrees with ONNX Runtime on {bundle.root} on this CPU ({f32.summary}, "
                          f"checked {f32.short_date}); use --backend onnxruntime.")
    match = find_check(bundle, "bf16", cpu=cpu, openvino_version=openvino_version)
    bf16 = match.check
    if bf16_supported and bf16 is not None and bf16.passed:
        return PrecisionChoice("bf16", f"bf16 verified on this CPU {bf16.short_date}: {bf16.summary}", True)
    if not bf16_supported:
        why = f"this CPU has no bf16 support ({_flags(cpu.isa())})"
    elif bf16 is not None:
        why = f"bf16 refused on this CPU ({bf16.short_date}): {bf16.summary}"
    else:
        why = "bf16 not verified on this CPU" + (f" ({'; '.join(match.rejected)})" if match.rejected else "")
    if f32 is not None:
        return PrecisionChoice("f32", f"{why}; f32 verified {f32.short_date}", True)
    return PrecisionChoice("f32", f"{why}; f32 not verified either: run {export_command(bundle)}", False)


def record_checks(bundle: Bundle, checks: list[PrecisionCheck]) -> None:
    """Add `checks` to bundle.json, replacing earlier records of the same precision, CPU and OpenVINO version.

    Only bundle.json changes (atomically); the model files and their hashes stay as they are.
    """
    manifest_path = bundle.root / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    kept = []
    for record in manifest.get(CHECKS_KEY, []) if isinstance(manifest.get(CHECKS_KEY), list) else []:
        try:
            old = parse_check(record)
        except ValueError:
            old = None  # kept as it is: perhaps a newer trapcls's record
        if old is None or not any(_same_target(old, new) for new in checks):
            kept.append(record)
    manifest[CHECKS_KEY] = kept + [asdict(check) for check in checks]
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")


def _same_target(a: PrecisionCheck, b: PrecisionCheck) -> bool:
    return (a.precision, a.cpu, a.isa, a.openvino_version) == (b.precision, b.cpu, b.isa, b.openvino_version)
