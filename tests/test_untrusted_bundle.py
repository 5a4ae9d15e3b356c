"""A hand-edited or hostile bundle, and class names that cannot be CSV columns: refused in one line, never run.

Each bundle is a copy of the tiny trained one with bundle.json edited as a careless or hostile hand
would, or its model.onnx rewritten with the onnx package (a dynamic class axis, external data) and
bundle.json re-sealed with the new sha256, so that only the check under test can refuse it. Each
refusal goes through the real CLI: `trapcls predict FRAMES --bundle B` exits 1 with one `error:`
line naming the field, no traceback, and writes no CSV. Labels that would make such a bundle
(two blank classes, a control character in a class name) are refused by `trapcls train` before
any training.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import DEMO, trapcls, write_jpeg


def refused(done: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a command that stopped cleanly: exit 1, no traceback."""
    shown = f"rc={done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 1, shown
    assert "Traceback" not in done.stderr, shown
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, shown
    return errors[0]


@pytest.fixture()
def frames(tmp_path) -> Path:
    return write_jpeg(tmp_path / "frames" / "a.jpg").parent


def predict(frames: Path, bundle: Path) -> str:
    """`trapcls predict FRAMES --bundle B`, which must refuse the bundle; its one error line."""
    out = frames.parent / "out.csv"
    line = refused(trapcls("predict", frames, "--bundle", bundle, "--out", out, rc=None))
    assert not out.exists(), "a refused bundle classified frames"
    return line


def edit(bundle: Path, **changes) -> Path:
    """bundle.json with top-level fields replaced (as a hand with a text editor would)."""
    path = bundle / "bundle.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return bundle


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "bundle.json").read_text())


def reseal(bundle: Path, *extra: str) -> Path:
    """Record model.onnx's new sha256 (and list `extra` files with theirs), so only the check under test refuses."""
    files = manifest(bundle)["files"]
    for name in ("model.onnx", *extra):
        data = (bundle / name).read_bytes()
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return edit(bundle, files=files)


def rewrite_model(bundle: Path, change, **save) -> None:
    """model.onnx loaded, changed by `change(model)`, saved back (with onnx.save's keyword arguments)."""
    import onnx

    model = onnx.load(str(bundle / "model.onnx"))
    change(model)
    onnx.save_model(model, str(bundle / "model.onnx"), **save)


def free_axes(*axes: tuple[str, int, str]):
    """A change making axis `index` of the input or output named `name` vary (a dim_param)."""
    def change(model):
        for where, index, name in axes:
            value = model.graph.input[0] if where == "input" else model.graph.output[0]
            value.type.tensor_type.shape.dim[index].dim_param = name
    return change


# --- bundle.json edited by hand --------------------------------------------------------------------------


def test_a_huge_preprocess_size_is_refused_before_any_memory_is_spent(bundle_copy, frames):
    """100000 x 100000 would be a 120 GB array per frame (the process was killed for memory). A real process
    under a 4 GiB address-space limit, so the bundle this test checks cannot take the machine down with it."""
    spec = manifest(bundle_copy)["preprocess"]
    edit(bundle_copy, preprocess={**spec, "height": 100000, "width": 100000})
    limit = 4 << 30
    out = frames.parent / "out.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRAPCLS_BUNDLE"}
    done = subprocess.run([sys.executable, "-m", "trapcls", "predict", str(frames), "--bundle", str(bundle_copy),
                           "--out", str(out)], capture_output=True, text=True, timeout=120, env=env,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    line = refused(done)
    assert "bundle.json" in line and "100000x100000" in line and "at most 2048" in line, line
    assert not out.exists()


@pytest.mark.parametrize("field, value, said", [
    ("std", [float("nan")] * 3, "std must be 3 finite numbers"),
    ("mean", [0.5, float("inf"), 0.5], "mean and std must be 3 finite"),
    ("height", 96, "preprocess size"),  # the model takes 64x64
])
def test_a_preprocess_that_cannot_feed_the_model_is_refused(bundle_copy, frames, field, value, said):
    """NaN std gave `ok` rows of NaN probabilities; a size the model does not take, an ONNX Runtime traceback."""
    edit(bundle_copy, preprocess={**manifest(bundle_copy)["preprocess"], field: value})
    line = predict(frames, bundle_copy)
    assert said in line and "bundle.json" in line, line


@pytest.mark.parametrize("policy, said", [
    ({"threshold": 0.2, "target_miss": "five percent", "confidence": 0.95}, "blank_policy.target_miss"),
    ({"threshold": 0.2, "target_miss": 0.05, "confidence": [0.95]}, "blank_policy.confidence"),
    ({"threshold": 0.2, "target_miss": 0.05, "animal_frames": -3}, "blank_policy.animal_frames"),
])
def test_a_blank_policy_with_words_for_numbers_is_refused(bundle_copy, frames, policy, said):
    """A string target_miss gave a traceback from the line that describes the rule."""
    line = predict(frames, edit(bundle_copy, blank_policy=policy))
    assert said in line, line


@pytest.mark.parametrize("field", ["export", "training", "metrics", "engines"])
def test_a_section_that_is_not_an_object_is_refused(bundle_copy, frames, field):
    """`"export": null` gave an AttributeError traceback (the precision is read from it)."""
    line = predict(frames, edit(bundle_copy, **{field: None}))
    assert f"'{field}' must be an object" in line, line


def test_files_outside_the_bundle_are_neither_read_nor_hashed(bundle_copy, frames, tmp_path):
    """`files` naming ../../etc/passwd made trapcls read that file and echo its sha256 in the error."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    secret_sha = hashlib.sha256(secret.read_bytes()).hexdigest()
    (bundle_copy / "inside-link.txt").symlink_to(secret)
    (bundle_copy / "loop").symlink_to("loop")
    depth = "../" * len(bundle_copy.parts)
    for name in ("../secret.txt", f"{depth}{str(secret).lstrip('/')}", str(secret), "inside-link.txt", "loop",
                 "nul\x00.onnx"):
        files = {**manifest(bundle_copy)["files"], name: {"sha256": "0" * 64}}
        line = predict(frames, edit(bundle_copy, files=files))
        assert "not inside the bundle folder" in line and repr(name) in line, line
        assert secret_sha not in line
        edit(bundle_copy, files={k: v for k, v in files.items() if k != name})


# --- model.onnx against bundle.json ----------------------------------------------------------------------


def test_a_dynamic_class_axis_is_refused(bundle_copy, frames):
    """A class axis of any size skipped the class-count check: 6 scores for 5 listed classes gave a ragged CSV or
    an IndexError. The axis must be fixed (so the check by its size always runs)."""
    rewrite_model(bundle_copy, free_axes(("output", 1, "classes")))
    edit(reseal(bundle_copy), classes=manifest(bundle_copy)["classes"][:-1])
    line = predict(frames, bundle_copy)
    assert "class axis of any size ('classes')" in line and "5 classes" in line, line


def test_a_model_returning_another_width_than_it_declares_is_refused_not_written_ragged(bundle_copy, frames):
    """The declared class axis matches bundle.json, the scores the model returns do not (ONNX Runtime only
    warns): the run stops with one line instead of writing rows one cell too long."""
    def declare_one_class_fewer(model):
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value -= 1
    rewrite_model(bundle_copy, declare_one_class_fewer)
    edit(reseal(bundle_copy), classes=manifest(bundle_copy)["classes"][:-1])
    out = frames.parent / "out.csv"
    line = refused(trapcls("predict", frames, "--bundle", bundle_copy, "--out", out, rc=None))
    assert "the model returned logits of shape" in line, line


@pytest.mark.parametrize("axes, said", [
    ([("input", 2, "height"), ("input", 3, "width")], "axes height, width of any size"),
    ([("input", 1, "channels")], "axes channels of any size"),
])
def test_an_input_of_any_size_is_refused(bundle_copy, frames, axes, said):
    """Only the batch axis may vary: the input size is the preprocess size, checked here rather than by a
    traceback (or by a model that only works at one size) at the first batch."""
    rewrite_model(bundle_copy, free_axes(*axes))
    line = predict(frames, reseal(bundle_copy))
    assert said in line and "(batch, 3, 64, 64)" in line, line


def test_a_fixed_batch_is_refused(bundle_copy, frames):
    def one_image(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1

    rewrite_model(bundle_copy, one_image)
    line = predict(frames, reseal(bundle_copy))
    assert "a fixed batch of 1" in line, line


def test_external_weights_are_refused(bundle_copy, frames):
    """Weights in model.onnx.data were outside the sha256 that names the model: new weights, same model id (and
    the same TensorRT engine key). Refused even when bundle.json lists and hashes the data file."""
    rewrite_model(bundle_copy, lambda model: None, save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=0)
    assert (bundle_copy / "model.onnx.data").stat().st_size > 100_000
    line = predict(frames, reseal(bundle_copy, "model.onnx.data"))
    assert "external data (model.onnx.data)" in line, line


# --- class names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rename, said", [
    ({"baboon": "BLANK"}, "'BLANK', 'blank'"),
    ({"zebra": "empty"}, "'blank', 'empty'"),
    ({"baboon": "baboon\r"}, r"'baboon\r'"),
    ({"zebra": "zebra\x1b[31m"}, r"'zebra\x1b[31m'"),
])
def test_a_bundle_with_ambiguous_or_unwritable_class_names_is_refused(bundle_copy, frames, rename, said):
    """Two blank classes made is_blank read whichever came first; a CR in a class name gave a CSV header that
    trapcls itself then called damaged."""
    classes = [rename.get(name, name) for name in manifest(bundle_copy)["classes"]]
    line = predict(frames, edit(bundle_copy, classes=classes))
    assert said in line and "classes" in line, line


def _train(data: Path, out: Path) -> str:
    """`trapcls train DATA`, which must refuse the labels; its one error line."""
    done = trapcls("train", data, "--out", out, "--arch", "test_efficientnet", "--epochs", "1", "--img-size", "32",
                   "--batch-size", "8", "--workers", "0", rc=None)
    line = refused(done)
    assert not (out / "bundle").exists()
    return line


def _class_tree(tmp_path: Path, rename: dict[str, str | bytes]) -> Path:
    """The demo class-per-folder tree, with some class folders renamed (bytes: a name that is not UTF-8)."""
    root = Path(shutil.copytree(DEMO / "train", tmp_path / "labels"))
    for old, new in rename.items():
        os.rename(root / old, os.path.join(os.fsencode(root), new) if isinstance(new, bytes) else root / new)
    return root


@pytest.mark.parametrize("rename, said", [
    ({"baboon": "BLANK"}, "'BLANK', 'blank'"),
    ({"zebra": "Empty"}, "'Empty', 'blank'"),
])
def test_training_labels_with_two_blank_classes_are_refused(tmp_path, rename, said):
    line = _train(_class_tree(tmp_path, rename), tmp_path / "run")
    assert said in line and "Merge them into one" in line and "relabel" in line, line


@pytest.mark.parametrize("rename, said", [
    ({"zebra": "zebra\r"}, r"'zebra\r'"),
    ({"warthog": "wart\x07hog"}, r"'wart\x07hog'"),
    ({"buffalo": b"b\xfffalo"}, r"'b\udcfffalo'"),  # a Latin-1 folder name: not UTF-8
])
def test_training_labels_with_unwritable_class_names_are_refused(tmp_path, rename, said):
    line = _train(_class_tree(tmp_path, rename), tmp_path / "run")
    assert said in line and "Rename those classes" in line, line


def test_a_labels_csv_with_blank_and_empty_is_refused(tmp_path):
    """The same rule for a filepath,label CSV (merging two sources' labels is how both names meet)."""
    rows = ["filepath,label"]
    for folder in sorted((DEMO / "train").iterdir()):
        for i, image in enumerate(sorted(folder.iterdir())):
            label = "empty" if folder.name == "blank" and i % 2 else folder.name
            rows.append(f"{image},{label}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    line = _train(labels, tmp_path / "run")
    assert "'blank', 'empty'" in line and str(labels) in line, line
