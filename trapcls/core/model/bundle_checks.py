"""What `load_bundle` checks in a bundle it did not write: a hand-edited or hostile bundle is refused in one line.

The class names (also what training refuses in labels, since labels become a bundle's classes), the
fields a run reads, the files bundle.json lists (inside the bundle, as hashed), the blank policy, and
model.onnx against bundle.json: one image input of the preprocess size with only the batch axis free,
a fixed class axis of the listed length, and no external data (weights outside model.onnx would be
outside its sha256, which names the model in every row and keys its TensorRT engines). All of it is
read from the files' headers and bundle.json, never by running the model, so loading stays cheap.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from trapcls.core.model.blank import BLANK_NAMES, blank_classes
from trapcls.core.system.exceptions import BundleError
from trapcls.core.system.fsutil import sha256_file
from trapcls.core.table.layout import RESERVED_NAMES

# Fields a run reads with dict methods: present, each must be an object.
OBJECT_FIELDS = ("calibration", "metrics", "training", "export", "engines")
# Characters a CSV line or a header cannot carry as text: control characters (CR, LF, ESC, ...), lone
# surrogates (name bytes that are not UTF-8) and the Unicode line and paragraph separators.
_NOT_TEXT = frozenset({"Cc", "Cs", "Zl", "Zp"})
_FLOAT = 1  # onnx.TensorProto.FLOAT, without importing onnx


def class_names_problem(classes: Sequence[str]) -> str | None:
    """What makes these class names unfit to be a model's classes (the CSV columns it writes), or None."""
    odd = [name for name in classes if name != name.strip() or any(
        unicodedata.category(ch) in _NOT_TEXT for ch in name)]
    if odd:
        return (f"class names {', '.join(map(repr, odd))} hold control characters, name bytes that are not UTF-8, "
                "or spaces at an end; a CSV header cannot carry them. Rename those classes")
    duplicates = sorted(name for name, n in Counter(classes).items() if n > 1)
    if duplicates:
        return f"duplicate class names {duplicates}"
    reserved = sorted(set(classes) & RESERVED_NAMES)
    if reserved:
        return f"class names {reserved} clash with CSV columns {sorted(RESERVED_NAMES)}; rename them"
    blanks = blank_classes(classes)
    if len(blanks) > 1:
        keep = next((name for name in BLANK_NAMES if name in blanks), blanks[0])  # "blank" where there is one
        others = [name for name in blanks if name != keep]
        return (f"several classes mean blank: {', '.join(map(repr, blanks))} (is_blank reads one class only). Merge "
                f"them into one: relabel the frames of {' and '.join(map(repr, others))} as {keep!r}")
    return None


def check_classes(classes: Any, where: Path) -> None:
    """BundleError unless `classes` is a list of at least 2 names fit to be CSV columns."""
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c.strip() for c in classes):
        raise BundleError(f"{where}: 'classes' must be a non-empty list of non-empty names.")
    if len(classes) < 2:
        raise BundleError(f"{where}: a classifier needs at least 2 classes, got {classes}.")
    problem = class_names_problem(classes)
    if problem:
        raise BundleError(f"{where}: {problem}. This class list cannot be used; train the model again.")


def check_fields(manifest: dict[str, Any], where: Path) -> None:
    """The optional sections a run reads (calibration, metrics, export, ...) are objects where present."""
    for key in OBJECT_FIELDS:
        if key in manifest and not isinstance(manifest[key], dict):
            raise BundleError(f"{where}: {key!r} must be an object, got {manifest[key]!r}. Re-export the bundle.")


def check_files(root: Path, files: Any, where: Path, *, required: str) -> None:
    """Every file bundle.json lists is inside the bundle, exists and has the recorded sha256.

    A name leading outside (`../../etc/passwd`, an absolute path, a link out of the folder) is refused
    before that file is opened: a bundle from elsewhere must not make trapcls read, hash and echo it.
    """
    if not isinstance(files, dict) or required not in files:
        raise BundleError(f"{where}: 'files' must list {required} with its sha256.")
    inside = root.resolve()
    for name, info in files.items():
        if not isinstance(info, dict):
            raise BundleError(f"{where}: files.{name} must be an object with its sha256, got {info!r}. "
                              "Re-export the bundle.")
        if not _inside(root, name, inside):
            raise BundleError(f"{where}: files lists {name!r}, which is not inside the bundle folder {root}; a "
                              "bundle lists only its own files. Re-export the bundle.")
        file_path = root / name
        if not file_path.is_file():
            raise BundleError(f"{file_path} is missing: the bundle lists it in {where.name}. Re-export the bundle.")
        actual = sha256_file(file_path)
        if actual != info.get("sha256"):
            raise BundleError(
                f"{file_path}: sha256 mismatch (bundle.json records {info.get('sha256')}, the file has {actual}). "
                "The file changed after export; re-run `trapcls export onnx` to rebuild the bundle."
            )


def _inside(root: Path, name: str, inside: Path) -> bool:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        return False
    try:
        return (root / name).resolve().is_relative_to(inside)
    except (OSError, RuntimeError, ValueError):  # a NUL in the name; a loop of links (RuntimeError before 3.13)
        return False


def check_blank_policy(policy: Any, where: Path) -> None:
    """A stored blank policy has a threshold, and the numbers its description shows are numbers."""
    if policy is None:
        return
    threshold = policy.get("threshold") if isinstance(policy, dict) else None
    if not _share(threshold):
        raise BundleError(f"{where}: blank_policy.threshold must be a number between 0 and 1, got {threshold!r}. "
                          "Certify it again with `trapcls evaluate --blank-miss ... --write-bundle`.")
    for key in ("target_miss", "confidence"):
        if key in policy and not _share(policy[key]):
            raise BundleError(f"{where}: blank_policy.{key} must be a number between 0 and 1, got "
                              f"{policy[key]!r}. Certify it again with `trapcls evaluate --blank-miss ... "
                              "--write-bundle`.")
    frames = policy.get("animal_frames", 0)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
        raise BundleError(f"{where}: blank_policy.animal_frames must be a count, got {frames!r}. Certify it again "
                          "with `trapcls evaluate --blank-miss ... --write-bundle`.")


def _share(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value <= 1.0)


def check_onnx(path: Path, *, height: int, width: int, classes: int, where: Path) -> None:
    """model.onnx fits bundle.json: no external data, one float32 (batch, 3, height, width) input, a
    (batch, classes) output; only the batch axis may vary."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        raise BundleError(f"{path} is not a readable ONNX model: {exc}") from exc
    external = sorted(_external_locations(model))
    if external:
        raise BundleError(f"{path} keeps weights in external data ({', '.join(external)}), outside the sha256 that "
                          "names the model; a bundle's model.onnx holds all its weights. Re-export the bundle with "
                          "`trapcls export onnx`.")
    initialised = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initialised]
    if len(inputs) != 1 or not model.graph.output:
        raise BundleError(f"{path} has {len(inputs)} inputs and {len(model.graph.output)} outputs; a bundle's model "
                          "takes one image batch and outputs its logits. Re-export the bundle.")
    image = inputs[0].type.tensor_type
    if image.elem_type != _FLOAT:
        raise BundleError(f"{path} takes {onnx.TensorProto.DataType.Name(image.elem_type)} input; a bundle's model "
                          "takes float32 images. Re-export the bundle.")
    size = _axes(path, "takes input", image, ("batch", 3, height, width))
    if size[1:] != [3, height, width]:
        raise BundleError(f"{path} takes input of shape {_shape(size)}, {_why(size[1:])}, but the preprocess size in "
                          f"{where} needs {_shape(['batch', 3, height, width])} ({height}x{width}, height x width): "
                          "the model and bundle.json do not belong together. Re-export the bundle.")
    scores = _axes(path, "outputs", model.graph.output[0].type.tensor_type, ("batch", classes))[1]
    if isinstance(scores, str):
        raise BundleError(f"{path} outputs a class axis of any size ({scores!r}); it must be fixed at the {classes} "
                          f"classes {where} lists, so that every row has one score per class. Re-export the bundle.")
    if scores != classes:
        raise BundleError(f"{path} outputs {scores} scores but {where} lists {classes} classes. The model and the "
                          "class list do not belong together; re-export the bundle.")


def _axes(path: Path, verb: str, tensor_type: Any, expected: tuple[int | str, ...]) -> list[int | str]:
    """The axes of an input or output, each its fixed size or its name when it may vary ("?" unnamed); the
    count must be that of `expected`, and the first (the batch) must vary."""
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
    if len(dims) != len(expected):
        raise BundleError(f"{path} {verb} of shape {_shape(dims)}; expected {_shape(list(expected))}: "
                          f"{len(expected)} axes. Re-export the bundle.")
    if isinstance(dims[0], int):
        raise BundleError(f"{path} {verb} of shape {_shape(dims)}, a fixed batch of {dims[0]}; trapcls sends "
                          "batches of any size. Re-export the bundle with a dynamic batch axis (`trapcls export "
                          "onnx` writes one).")
    return dims


def _shape(dims: list[int | str]) -> str:
    return f"({', '.join(map(str, dims))})"


def _why(dims: list[int | str]) -> str:
    free = [str(d) for d in dims if isinstance(d, str)]
    return f"axes {', '.join(free)} of any size" if free else "another size"


def _external_locations(model: Any) -> set[str]:
    """Where the model's tensors stored outside model.onnx are (external data), if any."""
    from onnx.external_data_helper import uses_external_data

    found = set()
    for tensor in _tensors(model):
        if uses_external_data(tensor):
            found.add(next((e.value for e in tensor.external_data if e.key == "location"), "?"))
    return found


def _tensors(model: Any) -> Iterator[Any]:
    """Every tensor a model holds: initialisers and constant attributes, in subgraphs and functions too."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
        for sparse in attribute.sparse_tensors:
            yield from (sparse.values, sparse.indices)
        for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            yield from _graph_tensors(graph)
