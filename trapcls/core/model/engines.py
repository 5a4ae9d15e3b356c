"""TensorRT engines in a bundle: their metadata, where they live, and whether one may be loaded here.

An engine is a GPU- and TensorRT-specific compilation of the bundle's ONNX. Each one lives in
`BUNDLE/engines/` with a JSON file beside it recording what it was built from and for; the
bundle's `bundle.json` lists every engine with its sha256. Before an engine is deserialised,
`check_engine` compares all of it with this machine and the bundle, and a mismatch is refused
with the exact command that rebuilds it. Nothing here imports TensorRT, so every check is
testable on any machine.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trapcls.core.model.bundle import MANIFEST, Bundle
from trapcls.core.model.profile import Profile
from trapcls.core.model.records import Judged, device_problem, judge, model_problem, version_problem
from trapcls.core.system.exceptions import BundleError
from trapcls.core.system.fsutil import atomic_write_text, sha256_file
from trapcls.core.system.hardware import Gpu

ENGINE_DIR = "engines"
TIMING_CACHE = "timing.cache"
METADATA_VERSION = 1


@dataclass(frozen=True)
class EngineMeta:
    """Everything an engine is bound to, as written next to it (`<engine>.json`)."""

    engine_file: str  # relative to the bundle, e.g. engines/orin-sm87-trt10.3.0-fp16.engine
    engine_sha256: str
    engine_bytes: int
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    sm_count: int | None
    onnx_sha256: str
    precision: str  # "fp16": confirmed from the built engine's layers (see trapcls.export.tensorrt)
    fp16_mode: str  # "builder-flag" (TensorRT 10.0-10.11) or "strongly-typed" (10.12+, 11)
    profile: dict[str, int]
    input_name: str
    output_name: str
    built_at: str
    build_seconds: float
    trapcls_version: str
    precision_evidence: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    metadata_version: int = METADATA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @property
    def batch_range(self) -> tuple[int, int]:
        return self.profile["min_batch"], self.profile["max_batch"]


def engine_name(gpu: Gpu, tensorrt_version: str, precision: str = "fp16") -> str:
    """A file name that says which device and TensorRT an engine is for, so several can share a bundle."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-")[:40] or "gpu"
    return f"{slug}-sm{gpu.compute_capability.replace('.', '')}-trt{tensorrt_version}-{precision}.engine"


def metadata_path(engine: Path) -> Path:
    return engine.with_suffix(".json")


def write_metadata(meta: EngineMeta, bundle_root: Path) -> Path:
    path = metadata_path(bundle_root / meta.engine_file)
    atomic_write_text(path, meta.to_json())
    return path


def read_metadata(path: Path) -> EngineMeta:
    """Load `<engine>.json`; a missing, unreadable or incomplete file is a BundleError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: the engine's metadata is needed to check it fits this "
                          "machine.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("metadata_version") != METADATA_VERSION:
        raise BundleError(f"{path}: unknown engine metadata version {data.get('metadata_version')!r}"
                          if isinstance(data, dict) else f"{path} must hold a JSON object.")
    try:
        return EngineMeta(**data)
    except TypeError as exc:
        raise BundleError(f"{path} is incomplete or has unknown fields ({exc}).") from exc


def record_engine(bundle: Bundle, meta: EngineMeta) -> None:
    """List the engine (sha256, size, metadata file) in the bundle's bundle.json."""
    manifest_path = bundle.root / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    engines = manifest.setdefault("engines", {})
    engines[meta.engine_file] = {"sha256": meta.engine_sha256, "bytes": meta.engine_bytes,
                                 "metadata": str(Path(meta.engine_file).with_suffix(".json")),
                                 "tensorrt_version": meta.tensorrt_version, "gpu_name": meta.gpu_name,
                                 "compute_capability": meta.compute_capability, "precision": meta.precision}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")


def recorded_engines(bundle: Bundle) -> dict[str, dict[str, Any]]:
    """The engines bundle.json lists: {relative path: record}."""
    engines = bundle.manifest.get("engines", {})
    if not isinstance(engines, dict):
        raise BundleError(f"{bundle.root / MANIFEST}: 'engines' must be an object.")
    return engines


def rebuild_command(bundle: Bundle, profile: dict[str, int] | Profile | None = None) -> str:
    """The exact command that builds a fresh engine for this machine from `bundle`."""
    if isinstance(profile, dict):
        profile = Profile(**{k: profile[k] for k in ("min_batch", "opt_batch", "max_batch", "workspace_mib")
                             if k in profile})
    return f"trapcls export tensorrt {shlex.quote(str(bundle.root))} {(profile or Profile()).flags()}"


def engine_problems(bundle: Bundle, engine_file: str, meta: EngineMeta, *, tensorrt_version: str | None,
                    gpu: Gpu | None) -> list[str]:
    """Why the engine at `engine_file` (relative to the bundle) may not run here; empty when it may.

    Checked before deserialising: the engine is one the bundle recorded, its bytes are the
    recorded ones, it was built from the bundle's current ONNX, for this TensorRT version and
    this GPU (name, compute capability, SM count), and it is the precision it claims.
    """
    problems = []
    record = recorded_engines(bundle).get(engine_file)
    path = bundle.root / engine_file
    if not path.resolve().is_relative_to(bundle.root.resolve()):
        return [f"{engine_file} lies outside the bundle {bundle.root}; engines are only loaded from inside it"]
    if record is None:
        problems.append(f"{engine_file} is not recorded in {bundle.root / MANIFEST}; engines are only loaded "
                        "from the bundle that built them")
    elif not path.is_file():
        problems.append(f"{path} is missing")
    elif sha256_file(path) != record.get("sha256") or meta.engine_sha256 != record.get("sha256"):
        problems.append(f"{path} does not match the sha256 recorded for it (changed or corrupted after export)")
    if meta.engine_file != engine_file:
        problems.append(f"its metadata describes {meta.engine_file}, not {engine_file}")
    problems += [p for p in (model_problem(meta.onnx_sha256, bundle, "it was built from"),
                             version_problem("TensorRT", meta.tensorrt_version, tensorrt_version, "it was built with"))
                 if p]
    if gpu is None:
        problems.append("no CUDA GPU is visible here")
    else:
        problems += [p for p in [device_problem("GPU", meta.gpu_name, gpu.name, "it was built on")] if p]
        if meta.compute_capability != gpu.compute_capability:
            problems.append(f"it was built for compute capability {meta.compute_capability}, this GPU has "
                            f"{gpu.compute_capability}")
        if gpu.sm_count is not None and meta.sm_count is not None and meta.sm_count != gpu.sm_count:
            problems.append(f"it was built for {meta.sm_count} SMs, this GPU has {gpu.sm_count}")
    if meta.precision != "fp16" or meta.precision_evidence.get("fp16_confirmed") is not True:
        problems.append(f"its precision ({meta.precision}) was not confirmed as FP16 when it was built")
    return problems


@dataclass(frozen=True)
class EngineMatch:
    """The outcome of looking for an engine that fits this machine."""

    engine: Path | None
    meta: EngineMeta | None
    # Per recorded engine, why it does not fit (empty for the match).
    rejected: dict[str, list[str]]

    def explain(self, bundle: Bundle) -> str:
        if not self.rejected:
            return f"{bundle.root} has no TensorRT engine. Build one here with: {rebuild_command(bundle)}"
        lines = [f"{name}: {'; '.join(reasons)}" for name, reasons in self.rejected.items()]
        profile = next((m.profile for m in [self.meta] if m is not None), None)
        return ("No TensorRT engine in " + str(bundle.root) + " fits this machine:\n  " + "\n  ".join(lines)
                + f"\nRebuild it here with: {rebuild_command(bundle, profile)}")


def check_engines(bundle: Bundle, *, tensorrt_version: str | None, gpu: Gpu | None) -> Iterator[Judged]:
    """Each engine bundle.json records, judged (trapcls.core.model.records): its name, its metadata (None if
    unreadable), and why it may not run here (empty when it may)."""
    def parse(engine_file: str, record: dict) -> EngineMeta:
        return read_metadata(bundle.root / str(record.get("metadata", Path(engine_file).with_suffix(".json"))))

    return judge(recorded_engines(bundle).items(), parse,
                 lambda name, meta: engine_problems(bundle, name, meta, tensorrt_version=tensorrt_version, gpu=gpu))


def find_engine(bundle: Bundle, *, tensorrt_version: str | None, gpu: Gpu | None) -> EngineMatch:
    """The first engine recorded in `bundle` that may run on this machine, with reasons for the others."""
    rejected: dict[str, list[str]] = {}
    last_meta = None
    for engine_file, meta, problems in check_engines(bundle, tensorrt_version=tensorrt_version, gpu=gpu):
        if meta is not None and not problems:
            return EngineMatch(engine=bundle.root / engine_file, meta=meta, rejected={})
        last_meta = meta or last_meta
        rejected[engine_file] = problems
    return EngineMatch(engine=None, meta=last_meta, rejected=rejected)
