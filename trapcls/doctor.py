"""`trapcls doctor`: what this machine can run, in one block a field technician can paste into an issue."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys
from pathlib import Path

from trapcls import __version__
from trapcls.core.system.exceptions import TrapclsError


def collect(bundle_path: Path | None = None) -> dict:
    """The facts as a dict (for --json): software versions, GPU, and the bundle's engines and their fit."""
    from trapcls.core.system.hardware import (
        ISA_FLAGS,
        cores,
        cpu_info,
        cpu_model,
        gpu_info,
        gpu_present,
        memory_gib,
        tensorrt_version,
    )

    report: dict = {
        "trapcls": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu_model(),
        "cpu_cores": cores(),
        # bf16 (what OpenVINO's CPU plugin runs bf16 on) and int8 dot products; None: the OS does not list flags.
        "cpu_isa": cpu_info().isa(ISA_FLAGS) or None,
        "memory_gib": memory_gib(),
        "jetson": _jetson_release(),
        "onnxruntime": _onnxruntime(),
        "torch": _torch(),
        "tensorrt": tensorrt_version() or _why_missing("tensorrt"),
        "openvino": _openvino(),
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
        elif key == "cpu_isa":
            value = (" ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in value.items()) if value
                     else "unknown (the OS lists no CPU flags)")
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
                lines.append("  engines: none (" + ("TensorRT builds from an FP32 or FP16 bundle, not this INT8 one)"
                                                 if bundle["onnx_precision"] == "int8"
                                                 else "build one with: " + bundle["rebuild"] + ")"))
            for name, fit in bundle["engines"].items():
                verdict = "matches this machine" if not fit else "does not match: " + "; ".join(fit)
                lines.append(f"  engine {name}: {verdict}")
            lines.extend(f"  openvino check: {check}" for check in bundle["openvino_checks"] or
                         ["none (record one on this CPU with: " + bundle["openvino_export"] + ")"])
            lines.append(f"  predict --backend openvino would run: {bundle['openvino_precision']}")
            lines.append(f"  predict --backend auto would use: {bundle['auto_backend']}")
    return "\n".join(lines)


def _bundle(path: Path, trt_version: str | None, gpu) -> dict:
    from trapcls.core.model.bundle import load_bundle
    from trapcls.core.model.engines import check_engines, rebuild_command
    from trapcls.core.model.openvino_checks import export_command
    from trapcls.predict.backends import choose_backend

    try:
        bundle = load_bundle(path)
    except TrapclsError as exc:
        return {"path": str(path), "error": str(exc)}
    engines = {name: problems for name, _, problems in check_engines(bundle, tensorrt_version=trt_version, gpu=gpu)}
    openvino = _openvino_precision(bundle)
    try:
        choice = choose_backend("auto", bundle)
        precision = f" in {openvino.split(' ', 1)[0]}" if choice.name == "openvino" else ""
        auto = f"{choice.name}{precision} ({choice.reason})"
    except TrapclsError as exc:
        auto = f"none ({exc})"
    return {"path": str(bundle.root), "arch": bundle.arch, "classes": len(bundle.classes),
            "onnx_precision": bundle.onnx_precision, "engines": engines,
            "rebuild": rebuild_command(bundle), "openvino_checks": _openvino_checks(bundle),
            "openvino_export": export_command(bundle), "openvino_precision": openvino, "auto_backend": auto}


def _openvino_checks(bundle) -> list[str]:
    """One line per OpenVINO check bundle.json records: precision, date, verdict, whether it applies here."""
    from trapcls.core.model.openvino_checks import judged_checks
    from trapcls.core.system.hardware import cpu_info, openvino_version

    lines = []
    try:
        for label, check, problems in judged_checks(bundle, cpu=cpu_info(), openvino_version=openvino_version()):
            if check is None:
                lines.append(f"{label}: {problems[0]}")
                continue
            fit = "applies here" if not problems else "does not apply here: " + "; ".join(problems)
            lines.append(f"{check.precision} {'passed' if check.passed else 'refused'} {check.short_date} on "
                         f"OpenVINO {check.openvino_version}, {fit}")
    except TrapclsError as exc:
        return [str(exc)]
    return lines


def _openvino_precision(bundle) -> str:
    """'bf16 (why)' / 'f32 (why)': what `--backend openvino` would run here, or why it cannot."""
    from trapcls.core.system.hardware import openvino_version

    if openvino_version() is None:
        return "nothing (openvino is not installed: pip install 'trapcls[openvino]')"
    try:
        from trapcls.predict.openvino import precision_here

        choice = precision_here(bundle)
    except TrapclsError as exc:
        return f"nothing ({exc})"
    return f"{choice.precision} ({choice.reason})"


def _openvino() -> str:
    """The openvino version and what its CPU plugin offers here, or why it is missing."""
    from trapcls.core.system.hardware import openvino_version

    version = openvino_version()
    if version is None:
        return "not installed (pip install 'trapcls[openvino]' for the openvino CPU backend)"
    try:
        import openvino as ov

        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # a broken install is a finding to report, not a crash
        return f"{version}, installed but not usable ({type(exc).__name__}: {exc})"
    return f"{version}, CPU plugin offers {' '.join(capabilities)}"


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
