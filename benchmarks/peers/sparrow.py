"""SPARROW-Engine (Microsoft, Rust core, Python wheel `sparrow-engine`) as a torch-free peer of `trapcls predict`.

The peer runs a trapcls bundle's own model.onnx through SPARROW's own pipeline: its Rust decoder
(zune-jpeg, full resolution), its resize, its normalisation and its ONNX Runtime session, with the
engine's default threads. Nothing of trapcls runs in the peer's process.

Registering a trapcls bundle with SPARROW (`model_dir`): SPARROW reads models from a model folder,
one subfolder per model id holding manifest.toml, model.onnx and labels.txt. The manifest says
`method = "resize"` (the whole frame squashed to the input size, as trapcls does), the bundle's
`input_size` and `interpolation`, `layout = "nchw"`, `postprocessing = "softmax"`. SPARROW's manifest
offers only three normalisations (`unit`: x/255, `imagenet`, `none`), no mean/std of its own: a bundle
with ImageNet mean/std uses `imagenet` and the bundle's model.onnx unchanged (hard link); any other
mean/std (tf_efficientnet_lite*: 0.5/0.5) uses `unit` and a copy of model.onnx with two elementwise
nodes in front, (x - mean) / std. A calibration temperature other than 1 becomes one Div node on the
logits, so SPARROW's softmax gives trapcls's calibrated probabilities. The nodes cost well under 1% of
the model.

The venv: sparrow-engine 0.1.30 pins onnxruntime>=1.25.1,<1.26 and trapcls's venv has a newer one, so
the peer gets its own venv (benchmarks/.cache/peer-venv, Python >= 3.11) created by `ensure_venv` with
pip from the package index. It is never a trapcls dependency.

Standalone: `.venv/bin/python benchmarks/peers/sparrow.py agreement [--bundle B] [--images DIR]`
classifies the same frames with both and prints top-1 agreement and probability differences.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = HERE / "sparrow_child.py"
DEFAULT_CACHE = HERE.parent / ".cache"
PACKAGE, VERSION = "sparrow-engine", "0.1.30"
MODEL_ID, NULL_ID = "trapcls-bundle", "trapcls-null"
# Constants SPARROW uses for normalization = "imagenet" (sparrow-engine-cpu preprocess.rs).
SPARROW_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LAYOUT_VERSION = 1  # bump when the model folder written below changes
class PeerUnavailable(RuntimeError):
    """The peer's venv could not be created or does not import."""


def venv_python(cache: Path = DEFAULT_CACHE) -> Path:
    """The peer venv's interpreter."""
    return cache / "peer-venv" / "bin" / "python"


def base_python() -> str:
    """A Python >= 3.11 to create the venv with: $TRAPCLS_PEER_PYTHON, this venv's base interpreter, python3.11+."""
    if os.environ.get("TRAPCLS_PEER_PYTHON"):
        return os.environ["TRAPCLS_PEER_PYTHON"]
    if sys.version_info >= (3, 11):
        for candidate in (Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}",
                          Path(sys.base_prefix) / "bin" / "python3"):
            if candidate.exists():
                return str(candidate)
    for name in ("python3.13", "python3.12", "python3.11"):
        if shutil.which(name):
            return str(shutil.which(name))
    raise PeerUnavailable("SPARROW-Engine needs Python >= 3.11 for its venv; set TRAPCLS_PEER_PYTHON to one.")


def _peer_ok(python: Path) -> bool:
    """The venv imports sparrow_engine at the pinned version."""
    probe = f"import importlib.metadata as m, sparrow_engine; assert m.version('{PACKAGE}') == '{VERSION}'"
    return python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure_venv(cache: Path = DEFAULT_CACHE) -> Path:
    """The peer venv's interpreter, creating benchmarks/.cache/peer-venv with sparrow-engine==VERSION when missing.

    Raises PeerUnavailable with pip's last lines when it cannot be built (no network, no wheel for this
    platform, no Python >= 3.11).
    """
    python = venv_python(cache)
    if _peer_ok(python):
        return python
    shutil.rmtree(python.parents[1], ignore_errors=True)
    steps = {"python -m venv": [base_python(), "-m", "venv", str(python.parents[1])],
             f"pip install {PACKAGE}=={VERSION}": [str(python), "-m", "pip", "install", "--disable-pip-version-check",
                                                   "-q", f"{PACKAGE}=={VERSION}"]}
    for label, step in steps.items():
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            raise PeerUnavailable(f"could not build the SPARROW-Engine venv in {python.parents[1]} ({label}): {tail}. "
                                  "It needs the package index; offline, run with --no-peer.")
    if not _peer_ok(python):
        raise PeerUnavailable(f"{python} does not import sparrow_engine {VERSION} after installing it.")
    return python


def peer_versions(cache: Path = DEFAULT_CACHE) -> dict:
    """Python, sparrow-engine, onnxruntime and numpy versions inside the peer venv."""
    out = subprocess.run([str(venv_python(cache)), str(CHILD), "versions"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _bundle(bundle_dir: Path) -> dict:
    """bundle.json, with the fields the peer needs checked."""
    manifest = json.loads((bundle_dir / "bundle.json").read_text(encoding="utf-8"))
    for key in ("classes", "preprocess", "files"):
        if key not in manifest:
            raise ValueError(f"{bundle_dir}/bundle.json has no {key!r}")
    return manifest


def _manifest_toml(model_id: str, spec: dict, normalization: str) -> str:
    """SPARROW's manifest for a classifier that squashes the whole frame to the input size."""
    return f"""\
# Written by benchmarks/peers/sparrow.py from a trapcls bundle.json.
[model]
id = "{model_id}"
format = "onnx"
file = "model.onnx"

[preprocessing]
method = "resize"
input_size = [{int(spec["width"])}, {int(spec["height"])}]
layout = "nchw"
normalization = "{normalization}"
interpolation = "{spec.get("interpolation", "bilinear")}"

[inference]
strategy = "single"

[postprocessing]
method = "softmax"

[labels]
file = "labels.txt"
format = "one_per_line"
"""


def _is_imagenet(spec: dict) -> bool:
    """The bundle's mean/std are the ones SPARROW's `imagenet` normalisation applies."""
    pairs = zip([*spec["mean"], *spec["std"]], [*SPARROW_IMAGENET[0], *SPARROW_IMAGENET[1]])
    return all(abs(float(a) - b) < 1e-6 for a, b in pairs)


def _wrap_model(src: Path, dst: Path, mean: list | None, std: list | None, temperature: float) -> None:
    """Copy of `src` with (x - mean) / std in front of the first input and logits / temperature after the
    first output (either left out when None / 1)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    first, last = graph.input[0].name, graph.output[0].name
    nodes_in, nodes_out = [], []
    if mean is not None:
        inner = f"{first}__trapcls_normalised"
        for node in graph.node:
            node.input[:] = [inner if name == first else name for name in node.input]
        graph.initializer.extend([
            numpy_helper.from_array(np.asarray(mean, np.float32).reshape(1, 3, 1, 1), "trapcls_mean"),
            numpy_helper.from_array(np.asarray(std, np.float32).reshape(1, 3, 1, 1), "trapcls_std")])
        nodes_in = [helper.make_node("Sub", [first, "trapcls_mean"], [f"{first}__centred"]),
                    helper.make_node("Div", [f"{first}__centred", "trapcls_std"], [inner])]
    if temperature != 1.0:
        raw = f"{last}__trapcls_raw"
        for node in graph.node:
            node.output[:] = [raw if name == last else name for name in node.output]
        graph.initializer.append(numpy_helper.from_array(np.asarray(temperature, np.float32), "trapcls_temperature"))
        nodes_out = [helper.make_node("Div", [raw, "trapcls_temperature"], [last])]
    all_nodes = [*nodes_in, *graph.node, *nodes_out]
    del graph.node[:]
    graph.node.extend(all_nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def _null_model(dst: Path, size: tuple[int, int], classes: int) -> None:
    """A classifier of next to no compute with the bundle's input and output shapes (for the peer's t_d)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    height, width = size
    weights = numpy_helper.from_array(np.ones((3, classes), np.float32) / 3, "w")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"])],
        "null", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def prepare_model_dir(bundle_dir: Path, cache: Path = DEFAULT_CACHE) -> Path:
    """SPARROW's model folder for `bundle_dir` (MODEL_ID, and NULL_ID for the work bound), built once per
    model.onnx sha256 under cache/peer-models/. Returns the folder to pass as SPARROW's model_dir."""
    bundle = _bundle(bundle_dir)
    spec, classes = bundle["preprocess"], bundle["classes"]
    temperature = float(bundle.get("calibration", {}).get("temperature", 1.0))
    key = hashlib.sha256(json.dumps([LAYOUT_VERSION, bundle["files"]["model.onnx"]["sha256"], spec, classes,
                                     temperature], sort_keys=True).encode()).hexdigest()[:12]
    root = cache / "peer-models" / f"{bundle_dir.name}-{key}"
    if (root / "ready").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".tmp-"))
    try:
        imagenet = _is_imagenet(spec)
        for model_id in (MODEL_ID, NULL_ID):
            folder = tmp / model_id
            folder.mkdir()
            (folder / "labels.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
            (folder / "manifest.toml").write_text(
                _manifest_toml(model_id, spec, "imagenet" if imagenet else "unit"), encoding="utf-8")
        if imagenet and temperature == 1.0:
            os.link(bundle_dir / "model.onnx", tmp / MODEL_ID / "model.onnx")
        else:
            _wrap_model(bundle_dir / "model.onnx", tmp / MODEL_ID / "model.onnx",
                        None if imagenet else spec["mean"], None if imagenet else spec["std"], temperature)
        _null_model(tmp / NULL_ID / "model.onnx", (int(spec["height"]), int(spec["width"])), len(classes))
        (tmp / "ready").write_text(json.dumps({"bundle": str(bundle_dir), "normalization": "imagenet" if imagenet
                                               else "unit + (x-mean)/std in the graph", "temperature": temperature}))
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def peer_cmd(model_dir: Path, images_dir: Path, out_csv: str | Path, cache: Path = DEFAULT_CACHE) -> list[str]:
    """The child command classifying `images_dir` into `out_csv` (relative to the child's working folder)."""
    return [str(venv_python(cache)), str(CHILD), "classify", str(model_dir), MODEL_ID, str(images_dir), str(out_csv)]


def peer_bound(model_dir: Path, images_dir: Path, repeats: int, cache: Path = DEFAULT_CACHE) -> dict:
    """The peer's own t_d and t_m on one core (seconds per image; see sparrow_child.py `bound`)."""
    out = subprocess.run([str(venv_python(cache)), str(CHILD), "bound", str(model_dir), MODEL_ID, NULL_ID,
                          str(images_dir), str(repeats)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------------------------------------------
# Agreement: the same frames through trapcls predict and through the peer.
# ---------------------------------------------------------------------------------------------------------------

def read_probs(path: Path, classes: list[str]) -> dict[str, list[float]]:
    """path -> probabilities in class order, for the ok rows of a prediction CSV."""
    with path.open(newline="", encoding="utf-8") as f:
        return {r["path"]: [float(r[c]) for c in classes] for r in csv.DictReader(f) if r.get("status") == "ok"}


def agreement(ours: dict[str, list[float]], peer: dict[str, list[float]], classes: list[str]) -> dict:
    """Top-1 agreement, mean and max absolute probability difference, the difference in trapcls's top-1
    probability, and each disagreement with both sides' top-1 class and probability."""
    common = sorted(set(ours) & set(peer))

    def top(p: list[float]) -> int:
        return max(range(len(p)), key=p.__getitem__)

    disagree = [{"path": k, "trapcls": [classes[top(ours[k])], round(max(ours[k]), 4)],
                 "peer": [classes[top(peer[k])], round(max(peer[k]), 4)]}
                for k in common if top(ours[k]) != top(peer[k])]
    diffs = [abs(a - b) for k in common for a, b in zip(ours[k], peer[k])]
    top_diffs = [abs(ours[k][top(ours[k])] - peer[k][top(ours[k])]) for k in common]
    return {"frames": len(common), "only_one_side": len(set(ours) ^ set(peer)),
            "top1_agreement": 1 - len(disagree) / len(common), "mean_abs_diff": sum(diffs) / len(diffs),
            "max_abs_diff": max(diffs), "mean_abs_diff_top1_prob": sum(top_diffs) / len(top_diffs),
            "disagreements": disagree}


def compare(bundle_dir: Path, images_dir: Path, cache: Path = DEFAULT_CACHE) -> dict:
    """Run `trapcls predict` (this interpreter) and the peer on `images_dir`; their agreement."""
    classes = _bundle(bundle_dir)["classes"]
    with tempfile.TemporaryDirectory() as tmp:
        ours_csv, peer_csv = Path(tmp) / "trapcls.csv", Path(tmp) / "peer.csv"
        subprocess.run([sys.executable, "-m", "trapcls", "predict", str(images_dir), "--bundle", str(bundle_dir),
                        "--out", str(ours_csv)], check=True, capture_output=True)
        ensure_venv(cache)  # timing is predict_throughput.py's job: here only the peer's CSV counts
        subprocess.run(peer_cmd(prepare_model_dir(bundle_dir, cache), images_dir.resolve(), peer_csv.resolve(),
                                cache), check=True, capture_output=True)
        return agreement(read_probs(ours_csv, classes), read_probs(peer_csv, classes), classes)


def main(argv: list[str] | None = None) -> None:
    """`agreement`: print trapcls vs SPARROW agreement for a bundle on a folder of frames."""
    p = argparse.ArgumentParser(description="SPARROW-Engine peer: agreement with trapcls predict on the same frames")
    p.add_argument("mode", choices=("agreement",))
    p.add_argument("--bundle", type=Path, default=HERE.parents[1] / "trapcls" / "default_bundle")
    p.add_argument("--images", type=Path, action="append",
                   help="folder of frames (repeatable); default: ../shared/data/ena24_small and cct_sample")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    data = HERE.parents[2] / "shared" / "data"
    folders = args.images or [data / "ena24_small", data / "cct_sample"]
    ensure_venv(args.cache)
    print(f"peer: {json.dumps(peer_versions(args.cache))}; bundle {args.bundle.resolve()}")
    for folder in folders:
        found = compare(args.bundle, folder, args.cache)
        print(f"{folder}: " + json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in found.items()}))


if __name__ == "__main__":
    main()
