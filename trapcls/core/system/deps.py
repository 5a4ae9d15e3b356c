"""Imports of optional heavy dependencies with an install hint instead of a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from trapcls.core.system.exceptions import MissingDependencyError

_EXTRA_FOR = {"torch": "train", "torchvision": "train", "timm": "train", "safetensors": "train",
              "tensorrt": "tensorrt", "openvino": "openvino"}


def require(module: str) -> ModuleType:
    """Import `module` or raise MissingDependencyError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA_FOR.get(module.split(".")[0], "train")
        raise MissingDependencyError(
            f"{module} is needed for this command but could not be imported ({exc}). "
            f"Install it with: pip install 'trapcls[{extra}]'"
        ) from exc
