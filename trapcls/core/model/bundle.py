"""The model bundle: the one contract between training, export and inference.

A bundle is a folder holding `bundle.json`, `model.onnx` (dynamic batch, outputs logits) and
optionally `weights.safetensors`. `bundle.json` records the format version, architecture,
ordered class names, preprocessing, calibration temperature, metrics, the trapcls version and
the sha256 of every file. `load_bundle` is the only reader and refuses anything inconsistent
(bundle_checks: a hand-edited or hostile bundle is refused in one line).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trapcls import __version__
from trapcls.core.frames.crop import CropSpec
from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.model.blank import BlankRule, given_rule, model_rule, rule_for
from trapcls.core.model.bundle_checks import check_blank_policy, check_classes, check_fields, check_files, check_onnx
from trapcls.core.system.exceptions import BundleError
from trapcls.core.system.fsutil import atomic_write_text, sha256_file
from trapcls.core.table.layout import Layout

FORMAT_VERSION = 1
MANIFEST = "bundle.json"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
SHORT_SHA = 12  # hex digits of model.onnx's sha256 in a model id: enough to tell any two models apart


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    root: Path
    arch: str
    classes: tuple[str, ...]
    preprocess: PreprocessSpec
    temperature: float
    metrics: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def onnx_path(self) -> Path:
        return self.root / ONNX_FILE

    @property
    def onnx_sha256(self) -> str | None:
        """model.onnx's sha256 as bundle.json records it (load_bundle checked it against the file)."""
        return self.manifest.get("files", {}).get(ONNX_FILE, {}).get("sha256")

    @property
    def onnx_precision(self) -> str:
        """How model.onnx stores its weights: "fp32" (bundles from before --fp16 say nothing), "fp16" or "int8"."""
        return self.manifest.get("export", {}).get("precision", "fp32")

    @property
    def model_id(self) -> str:
        """Who classified a row: "NAME [vVERSION] sha256:SHORT" (name and version from bundle.json, else the
        folder's name; SHORT is the start of model.onnx's sha256, so two models never share an id)."""
        name = str(self.manifest.get("name") or self.root.resolve().name)
        version = self.manifest.get("version")
        sha = str(self.manifest["files"][ONNX_FILE]["sha256"])[:SHORT_SHA]
        return " ".join([name, *([f"v{version}"] if version not in (None, "") else []), f"sha256:{sha}"])

    @property
    def crop(self) -> CropSpec | None:
        """The crop geometry the model was trained on (`train --detections`), or None: it takes whole frames."""
        section = self.manifest.get("crop")
        return None if section is None else CropSpec.from_dict(section, str(self.root / MANIFEST))

    @property
    def blank_policy(self) -> dict[str, Any] | None:
        """The certified blank threshold `trapcls evaluate --blank-miss --write-bundle` stored, if any."""
        return self.manifest.get("blank_policy")

    def blank_rule(self, given: float | None = None) -> BlankRule:
        """The rule for is_blank when this model runs: the threshold given, else its certified policy, else the
        default (trapcls.core.model.blank)."""
        return given_rule(given) if given is not None else model_rule(self.blank_policy, self.model_id)

    def layout(self, fmt: str, blank_threshold: float | None = None, *, clips: bool = False,
               detections: bool = False) -> Layout:
        """The CSV a run of this model writes: its blank rule (or the threshold given) where an is_blank column is
        written; a threshold given where there is none is refused. `clips`: it holds video clips, `detections`:
        frames classified from detector boxes (field format: their columns)."""
        rule = rule_for(self.classes, blank_threshold, self.blank_rule)
        return Layout(fmt, self.classes, rule if fmt == "field" else None, model=self.model_id,
                      clips=clips and fmt == "field", detections=detections and fmt == "field")

    @property
    def class_counts(self) -> dict[str, int] | None:
        """How many frames of each class the model was trained on (recorded since trapcls 0.1 runs with it)."""
        counts = self.manifest.get("training", {}).get("config", {}).get("train_class_counts")
        return counts if isinstance(counts, dict) and set(counts) == set(self.classes) else None

    @property
    def weights_path(self) -> Path | None:
        path = self.root / WEIGHTS_FILE
        return path if WEIGHTS_FILE in self.manifest.get("files", {}) else None


BUNDLE_ENV = "TRAPCLS_BUNDLE"
DEFAULT_BUNDLE_DIR = "default_bundle"


def default_bundle() -> Path:
    """The small demonstration model shipped inside the package (see its bundle.json's "about")."""
    from importlib import resources

    return Path(str(resources.files("trapcls") / DEFAULT_BUNDLE_DIR))


def resolve_bundle(path: str | Path | None) -> tuple[Path, str]:
    """The bundle to use and where that choice came from: --bundle, else $TRAPCLS_BUNDLE, else the shipped one."""
    if path is not None:
        return Path(path), "--bundle"
    env = os.environ.get(BUNDLE_ENV, "").strip()
    if env:
        return Path(env), f"${BUNDLE_ENV}"
    shipped = default_bundle()
    if not (shipped / MANIFEST).is_file():
        raise BundleError(f"No --bundle given, ${BUNDLE_ENV} is not set, and this installation has no default model "
                          f"({shipped} is missing). Pass --bundle BUNDLE_FOLDER.")
    return shipped, "the default model shipped with trapcls (a small demonstration model; --bundle to use yours)"


def write_manifest(
    root: str | Path,
    *,
    arch: str,
    classes: list[str],
    preprocess: PreprocessSpec,
    calibration: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
    name: str | None = None,
    crop: dict[str, Any] | None = None,
) -> Bundle:
    """Write bundle.json for the model files already in `root`, then load it back validated."""
    root = Path(root)
    check_classes(classes, root / MANIFEST)
    files = {}
    for file_name in (ONNX_FILE, WEIGHTS_FILE):
        path = root / file_name
        if path.exists():
            files[file_name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    if ONNX_FILE not in files:
        raise BundleError(f"{root / ONNX_FILE} does not exist; export the ONNX model before writing the manifest.")
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name or root.name,  # names the model in every CSV row and export (Bundle.model_id)
        "trapcls_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arch": arch,
        "classes": list(classes),
        "preprocess": preprocess.to_dict(),
        **({"crop": crop} if crop is not None else {}),  # trained on detector crops (core/frames/crop.py)
        "output": "logits",
        # A fitted calibration also records the validation log loss before and after it.
        "calibration": calibration or {"temperature": 1.0, "fitted": False},
        "metrics": metrics or {},
        "training": training or {},
        "export": export or {},
        "files": files,
    }
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return load_bundle(root)


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a bundle folder (or its bundle.json); raise BundleError saying what is wrong."""
    path = Path(path)
    root = path.parent if path.name == MANIFEST else path
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"Bundle folder {root} does not exist. Pass the folder `trapcls export onnx` wrote.")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing: {root} is not a trapcls bundle.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object.")

    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: unknown format_version {version!r}; this trapcls ({__version__}) reads "
            f"version {FORMAT_VERSION}. Upgrade trapcls or re-export the bundle."
        )
    for key in ("arch", "classes", "preprocess", "files"):
        if key not in manifest:
            raise BundleError(f"{manifest_path} lacks the required field {key!r}.")
    classes = manifest["classes"]
    check_classes(classes, manifest_path)
    try:
        spec = PreprocessSpec.from_dict(manifest["preprocess"])
    except BundleError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from exc
    check_fields(manifest, manifest_path)
    if manifest.get("crop") is not None:
        CropSpec.from_dict(manifest["crop"], str(manifest_path))
    temperature = _temperature(manifest.get("calibration", {}), manifest_path)
    check_files(root, manifest["files"], manifest_path, required=ONNX_FILE)
    check_blank_policy(manifest.get("blank_policy"), manifest_path)
    check_onnx(root / ONNX_FILE, height=spec.height, width=spec.width, classes=len(classes), where=manifest_path)
    return Bundle(
        root=root,
        arch=str(manifest["arch"]),
        classes=tuple(classes),
        preprocess=spec,
        temperature=float(temperature),
        metrics=manifest.get("metrics", {}),
        manifest=manifest,
    )


def _temperature(calibration: Any, manifest_path: Path) -> float:
    if not isinstance(calibration, dict):
        raise BundleError(f"{manifest_path}: 'calibration' must be an object, got {calibration!r}. "
                          "Re-export the bundle.")
    temperature = calibration.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise BundleError(f"{manifest_path}: calibration temperature must be a positive number, got {temperature!r}.")
    return float(temperature)


def store_blank_policy(root: Path, policy: dict[str, Any]) -> Bundle:
    """Add (or replace) the bundle's blank policy in bundle.json. The model files and their hashes are
    untouched, so the bundle stays valid; the manifest is replaced atomically."""
    bundle = load_bundle(root)
    check_blank_policy(policy, bundle.root / MANIFEST)
    manifest = {**bundle.manifest, "blank_policy": policy}
    atomic_write_text(bundle.root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return load_bundle(bundle.root)
