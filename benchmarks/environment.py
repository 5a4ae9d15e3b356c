"""The machine and software facts above every benchmark table, from `trapcls doctor`'s own probes.

One place for them, so the benchmarks and `trapcls doctor` describe a machine the same way.
"""

from __future__ import annotations

import importlib.metadata
import platform

from trapcls.doctor import collect


def machine(device: str) -> dict:
    """CPU model, the cores this process may use, RAM in GiB, and with device "cuda" the GPU's name."""
    facts = collect()
    info = {"cpu": facts["cpu"], "cores": facts["cpu_cores"], "ram_gib": facts["memory_gib"]}
    if device == "cuda":
        info["gpu"] = facts["gpu"]["name"] if facts["gpu"] else "none visible"
    return info


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Python and the installed version of each of `packages`."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
