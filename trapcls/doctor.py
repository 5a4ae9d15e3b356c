"""`trapcls doctor`: what this machine can run, in one block a field technician can paste into an issue."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys
from pathlib import Path

from trapcls import __version__
from trapcls.core.exceptions import TrapclsError


def collect(bundle_path: Path | None = None) -> dict:
    """The facts as a dict (for --json): software versions, GPU, and the bundle's engines and their fit."""
    from trapcls.core.hardware import cores, cpu_model, gpu_info, gpu_present, memory_gib, tensorrt_version

    report: dict = {
        "trapcls": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu_model(),
        "cpu_cores": cores(),
        "memory_gib": memory_gib(),
        "jetson": _jetson_release(),
        "onnxruntime": _onnxruntime(),
        "torch": _torch(),
        "tensorrt": tensorrt_version() or _why_missing("tensorrt"),
        "cuda_python": _cuda_python(),
        "gpu_device_nodes": gpu_present(),
    }
    gpu = gpu_info()
    report["gpu"] = gpu.to_dict() if gpu else None
    if bundle_path is not None:
        report["bundle"] = _bundle(bundle_path, tensorrt_version(), gpu)
    return report


def render(report: dict) -> str:
    """The report as aligned `name: value` lines."""
    lines = []
    for key, value in report.items():
        if key == "bundle":
            continue
        if key == "gpu":
            value = (f"{value['name']} (compute capability {value['compute_capability']}, "
                     f"{value['sm_count'] if value['sm_count'] is not None else '?'} SMs; via {value['source']})"
                     if value else "none visible")
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"{key + ':':<18}{value}")
    bundle = report.get("bundle")
    if bundle:
        lines.append(f"{'bundle:':<18}{bundle['path']}")
        if "error" in bundle:
            lines.append(f"  error: {bundle['error']}")
        else:
            lines.append(f"  {bundle['arch']}, {bundle['classes']} classes, onnx {bundle['onnx_precision']}")
            if not bundle["engines"]:
                lines.append("  engines: none (build one with: " + bundle["rebuild"] + ")")
            for name, fit in bundle["engines"].items():
                verdict = "matches this machine" if not fit else "does not match: " + "; ".join(fit)
                lines.append(f"  engine {name}: {verdict}")
            lines.append(f"  predict --backend auto would use: {bundle['auto_backend']}")
    return "\n".join(lines)


def _bundle(path: Path, trt_version: str | None, gpu) -> dict:
    from trapcls.core.bundle import load_bundle
    from trapcls.core.engines import check_engines, rebuild_command
    from trapcls.predict.backends import choose_backend

    try:
        bundle = load_bundle(path)
    except TrapclsError as exc:
        return {"path": str(path), "error": str(exc)}
    engines = {name: problems for name, _, problems in check_engines(bundle, tensorrt_version=trt_version, gpu=gpu)}
    try:
        choice = choose_backend("auto", bundle)
        auto = f"{choice.name} ({choice.reason})"
    except TrapclsError as exc:
        auto = f"none ({exc})"
    return {"path": str(bundle.root), "arch": bundle.arch, "classes": len(bundle.classes),
            "onnx_precision": bundle.manifest.get("export", {}).get("precision", "fp32"), "engines": engines,
            "rebuild": rebuild_command(bundle), "auto_backend": auto}


def _onnxruntime() -> str:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"not importable ({exc})"
    return f"{ort.__version__}, providers {', '.join(ort.get_available_providers())}"


def _torch() -> str:
    if importlib.util.find_spec("torch") is None:
        return "not installed (pip install 'trapcls[train]')"
    try:
        torch = importlib.import_module("torch")
    except Exception as exc:
        return f"not importable ({exc})"
    cuda = torch.version.cuda or "none"
    usable = "usable" if torch.cuda.is_available() else "not usable here"
    return f"{torch.__version__}, built for CUDA {cuda}, CUDA {usable}"


def _cuda_python() -> str:
    """cuda-python's runtime bindings (torch 2.9+ wheels bring cuda-bindings along); the tensorrt backend's buffers."""
    from importlib.metadata import PackageNotFoundError, version

    for package in ("cuda-bindings", "cuda-python"):
        try:
            return f"{package} {version(package)}"
        except PackageNotFoundError:
            continue
    return "not installed (the tensorrt backend then takes its GPU buffers from torch)"


def _why_missing(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed (see export/README.md)"
    try:
        importlib.import_module(module)
    except Exception as exc:
        return f"installed but not importable ({exc})"
    return "installed"


def _jetson_release() -> str:
    """L4T release from /etc/nv_tegra_release on a Jetson; 'no' elsewhere."""
    path = "/etc/nv_tegra_release"
    if not os.path.exists(path):
        return "no"
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.readline().strip().lstrip("# ") or "yes"
