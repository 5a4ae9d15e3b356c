"""What this machine has: CPU cores and instruction sets, and the GPU and TensorRT facts an engine is bound to.

A TensorRT engine runs only on the GPU model (compute capability and SM count) and the
TensorRT version that built it, so export records these facts and loading compares them; an
OpenVINO bf16 check is bound the same way to the CPU and its bf16 instructions.
Nothing here runs at import time; each probe imports its library only when called.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass

# Instructions that do bf16 arithmetic natively: OpenVINO's CPU plugin runs bf16 on them (on its own, by default).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# What doctor reports: bf16, and the int8 dot-product instructions (VNNI, AMX) an int8 model would use.
ISA_FLAGS = (*BF16_FLAGS, "avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Cpu:
    """The CPU as an OpenVINO precision check records it."""

    name: str  # model name and, where /proc/cpuinfo says, vendor, family and model numbers
    flags: frozenset[str] | None  # the instruction-set flags; None where the OS does not list them

    def isa(self, names: tuple[str, ...] = BF16_FLAGS) -> dict[str, bool]:
        """Each of `names` -> whether this CPU has it; empty where the flags are unknown."""
        return {} if self.flags is None else {name: name in self.flags for name in names}


@dataclass(frozen=True)
class Gpu:
    """One CUDA device as the engine metadata records it."""

    name: str
    compute_capability: str  # "8.7"
    sm_count: int | None  # None when the probe could not tell (nvidia-smi does not report it)
    source: str  # which library answered: torch, cuda-python or nvidia-smi

    def to_dict(self) -> dict:
        return asdict(self)


def cores() -> int:
    """CPU cores this process may use (cgroup/affinity aware where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what platform says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_info() -> Cpu:
    """This CPU's identity and flags, from /proc/cpuinfo on Linux (elsewhere: the model name, flags unknown).

    Virtual machines often call every CPU "Intel(R) Xeon(R) Processor", so the family and model
    numbers go into the name too: they tell a Sapphire Rapids from an Ice Lake.
    """
    fields = _cpuinfo_fields()
    ident = " ".join(f"{label} {fields[key]}" for label, key in (("family", "cpu family"), ("model", "model"))
                     if key in fields)
    vendor = fields.get("vendor_id", "")
    name = cpu_model() + (f" ({vendor + ' ' if vendor else ''}{ident})" if ident else "")
    listed = fields.get("flags", fields.get("Features"))  # x86 says flags, ARM Features
    return Cpu(name=name, flags=frozenset(listed.split()) if listed is not None else None)


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo; empty where there is none."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    if fields:
                        break  # the first processor is enough: they are alike
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def openvino_version() -> str | None:
    """The installed openvino package's version (e.g. 2026.4.1), or None; imports nothing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        return None


def memory_gib() -> float | None:
    """Total RAM in GiB (from /proc/meminfo on Linux), or None where the OS does not say."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_present() -> bool:
    """Whether an NVIDIA GPU device node exists (x86 or Jetson); cheap, imports nothing."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/nvhost-ctrl-gpu"))


def tensorrt_version() -> str | None:
    """The installed TensorRT Python bindings' version, or None; imports tensorrt only if it is installed."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        return str(importlib.import_module("tensorrt").__version__)
    except Exception:  # a broken install (missing libnvinfer) is "not usable", not a crash
        return None


def gpu_info(device: int = 0) -> Gpu | None:
    """Name, compute capability and SM count of CUDA device `device`, or None without a usable GPU.

    Asks cuda-python first (light), then torch, then nvidia-smi (x86 only; no SM count); without
    an NVIDIA device node it asks none of them.
    """
    if not gpu_present():
        return None
    for probe in (_from_cuda_python, _from_torch, _from_nvidia_smi):
        try:
            found = probe(device)
        except Exception:  # each probe may be missing or fail on a driverless box
            found = None
        if found is not None:
            return found
    return None


def _from_cuda_python(device: int) -> Gpu | None:
    if importlib.util.find_spec("cuda") is None:
        return None
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    err, props = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        return None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return Gpu(name=name.rstrip("\x00").strip(), compute_capability=f"{props.major}.{props.minor}",
               sm_count=int(props.multiProcessorCount), source="cuda-python")


def _from_torch(device: int) -> Gpu | None:
    if importlib.util.find_spec("torch") is None:
        return None
    torch = importlib.import_module("torch")
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(device)
    return Gpu(name=props.name, compute_capability=f"{props.major}.{props.minor}",
               sm_count=int(props.multi_processor_count), source="torch")


def _from_nvidia_smi(device: int) -> Gpu | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    out = subprocess.run([exe, f"--id={device}", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    name, _, cc = out.rpartition(",")
    return Gpu(name=name.strip(), compute_capability=cc.strip(), sm_count=None, source="nvidia-smi") if name else None
