"""Building timm models and loading local weights into them by name, with a shape check."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import DataError, OptionError, TrapclsError

log = logging.getLogger(__name__)

ARCH_FAMILIES = ("resnet", "resnext", "seresnet", "efficientnet", "tf_efficientnet", "test_resnet", "test_efficientnet")
ARCH_EXAMPLES = "resnet18, resnet50, efficientnet_b0, tf_efficientnet_lite0, test_efficientnet (tiny, for tests)"

# efficientnet_pytorch key names -> timm names, at top level and per block type.
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EFFNET_BLOCK = {
    "DepthwiseSeparableConv": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
                               "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"},
    "InvertedResidual": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                         "_project_conv": "conv_pwl", "_bn2": "bn3",
                         "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"},
}


def check_arch(arch: str) -> None:
    """Raise unless `arch` is a timm ResNet/EfficientNet name."""
    timm = require("timm")
    if not arch.startswith(ARCH_FAMILIES) or not timm.is_model(arch):
        raise OptionError("arch", f"{arch!r} is not a timm ResNet or EfficientNet name; e.g. {ARCH_EXAMPLES}")


def create_model(arch: str, num_classes: int, *, weights: Path | None = None, pretrained: bool = False,
                 fresh_head: bool = False):
    """A timm model with a fresh `num_classes` head, initialised from a local file, the hub, or at random."""
    timm = require("timm")
    check_arch(arch)
    if weights is not None and pretrained:
        raise OptionError("weights", "give either {weights} FILE or {pretrained}, not both")
    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    except Exception as exc:  # hub downloads fail in many ways offline
        if not pretrained:
            raise
        raise TrapclsError(
            f"Could not load pretrained {arch} weights from the timm hub ({exc}). "
            "Offline? Pass a local file with --weights instead."
        ) from exc
    if weights is not None:
        load_weights(model, weights, fresh_head=fresh_head)
    return model


def load_model(arch: str, num_classes: int, state_dict: dict[str, Any]):
    """A trained model rebuilt from its architecture and weights, in eval mode (export, the torch backend)."""
    model = create_model(arch, num_classes)
    model.load_state_dict(state_dict)
    return model.eval()


def preprocess_spec(model, img_size: int | None) -> PreprocessSpec:
    """The preprocessing for `model`: its pretrained mean/std, the requested square input size."""
    cfg = model.pretrained_cfg
    size = img_size or cfg["input_size"][-1]
    return PreprocessSpec(height=size, width=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors from a .safetensors file or a torch file loaded with weights_only=True (no pickled code)."""
    torch = require("torch")
    if not path.is_file():
        raise DataError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        return dict(require("safetensors.torch").load_file(str(path)))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path} could not be loaded as weights with weights_only=True: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DataError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model, path: Path, *, fresh_head: bool = False) -> None:
    """Load a state dict into `model` by name; the classifier is kept fresh when its shape differs
    (or always, with `fresh_head`: same count, other classes).

    Keys in efficientnet_pytorch style (`_conv_stem`, `_blocks.N...`) are renamed to timm's.
    Every other tensor must exist in the model with the same shape, and every model tensor
    outside the classifier must be provided.
    """
    state = read_state_dict(path)
    if any(k.startswith("_blocks.") for k in state):
        state = map_efficientnet_pytorch(state, model)
    target = model.state_dict()
    head = model.pretrained_cfg.get("classifier", "fc")
    in_head = lambda key: key == head or key.startswith(head + ".")  # noqa: E731
    unexpected = sorted(k for k in state if k not in target)
    mismatched = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
                        for k in state if k in target and state[k].shape != target[k].shape and not in_head(k))
    missing = sorted(k for k in target if k not in state and not in_head(k))
    problems = [(name, items) for name, items in (("unexpected", unexpected), ("shape-mismatched", mismatched),
                                                   ("missing", missing)) if items]
    if problems:
        detail = "; ".join(f"{len(items)} {name}: {', '.join(items[:4])}" for name, items in problems)
        raise DataError(f"{path} does not fit {model.pretrained_cfg.get('architecture')}: {detail}.")
    keep = {k: v for k, v in state.items() if not (in_head(k) and (fresh_head or v.shape != target[k].shape))}
    model.load_state_dict(keep, strict=False)
    fresh_head = len(keep) < len(state) or any(in_head(k) and k not in state for k in target)
    log.info("loaded %d tensors from %s%s", len(keep), path, "; classifier initialised fresh" if fresh_head else "")


def map_efficientnet_pytorch(state: dict[str, Any], model) -> dict[str, Any]:
    """Rename efficientnet_pytorch keys to timm's EfficientNet keys, block by block."""
    if not hasattr(model, "blocks"):
        raise DataError(f"the weights use efficientnet_pytorch names but {model.pretrained_cfg.get('architecture')} "
                        "is not an EfficientNet; pick a matching --arch.")
    blocks = [(s, i, type(block).__name__) for s, stage in enumerate(model.blocks) for i, block in enumerate(stage)]
    mapped = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            flat, module, param = int(match[1]), match[2], match[3]
            if flat >= len(blocks):
                raise DataError(f"weights have block {flat} but the model has {len(blocks)} blocks.")
            stage, index, kind = blocks[flat]
            names = _EFFNET_BLOCK.get(kind)
            if names is None or module not in names:
                raise DataError(f"cannot map {key} onto a timm {kind} block.")
            mapped[f"blocks.{stage}.{index}.{names[module]}.{param}"] = value
        else:
            module, _, param = key.partition(".")
            if module not in _EFFNET_TOP:
                raise DataError(f"cannot map weight {key} onto timm names.")
            mapped[f"{_EFFNET_TOP[module]}.{param}"] = value
    return mapped
