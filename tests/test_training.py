"""Training: data sources, the split, weight loading by name, checkpoints, and what a run leaves."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import DEMO, LITE0_WEIGHTS
from trapcls.core.frames.labels import Sample, load_samples
from trapcls.core.frames.preprocess import PreprocessSpec, preprocess
from trapcls.core.model.build import check_arch, create_model, load_weights
from trapcls.core.model.checkpoint import load_checkpoint
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.training.split import stratified_split

IMAGENET_ZEBRA = 340


def test_folder_tree_gives_one_sample_per_image():
    samples = load_samples(DEMO / "train")
    counts = Counter(s.label for s in samples)
    assert counts == {"baboon": 4, "buffalo": 4, "elephant": 4, "warthog": 4, "zebra": 2, "blank": 3}


def test_csv_paths_are_relative_to_the_csv(tmp_path):
    import os

    folder = tmp_path / "labels"
    folder.mkdir()
    samples = load_samples(DEMO / "train")
    lines = ["filepath,label,site"] + [f"{os.path.relpath(s.path, folder)},{s.label},site1" for s in samples]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    from_csv = load_samples(folder / "labels.csv")
    assert [(s.path.resolve(), s.label) for s in from_csv] == [(s.path.resolve(), s.label) for s in samples]


@pytest.mark.parametrize(("content", "message"), [
    ("path,species\na.jpg,x\n", "expected columns filepath,label"),
    ("filepath,label\nmissing.jpg,x\nalso.jpg,y\n", "2 listed files do not exist"),
    ("filepath,label\n", "no rows"),
    ("filepath,label\n,x\n", "rows without filepath or label"),
])
def test_bad_csvs_are_explained(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_samples(path)


def test_single_class_and_empty_class_are_refused(tmp_path):
    (tmp_path / "one" / "only").mkdir(parents=True)
    (tmp_path / "one" / "only" / "a.jpg").write_bytes((DEMO / "train" / "zebra" / "zebra-1.jpg").read_bytes())
    with pytest.raises(DataError, match="at least 2"):
        load_samples(tmp_path / "one")
    (tmp_path / "one" / "empty").mkdir()
    with pytest.raises(DataError, match="class folders without JPEG/PNG images: empty"):
        load_samples(tmp_path / "one")


def test_stratified_split_is_seeded_disjoint_and_covers_each_class():
    samples = [Sample(path=Path(f"{label}/{i}.jpg"), label=label)
               for label, n in (("a", 10), ("b", 5), ("c", 2), ("d", 1)) for i in range(n)]
    train, val = stratified_split(samples, 0.2, seed=7)
    again, val_again = stratified_split(list(reversed(samples)), 0.2, seed=7)
    assert [s.path for s in val] == [s.path for s in val_again] and len(train) == len(again)
    assert not {s.path for s in train} & {s.path for s in val}
    assert len(train) + len(val) == len(samples)
    assert Counter(s.label for s in val) == {"a": 2, "b": 1, "c": 1}  # "d" has one image: train only
    other, _ = stratified_split(samples, 0.2, seed=8)
    assert [s.path for s in other] != [s.path for s in train]


def test_lite0_weights_map_by_name_and_recognise_a_zebra():
    model = create_model("tf_efficientnet_lite0", 1000, weights=LITE0_WEIGHTS).eval()
    spec = PreprocessSpec(height=224, width=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = torch.from_numpy(preprocess(DEMO / "train" / "zebra" / "zebra-1.jpg", spec))[None]
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)[0]
    assert int(probs.argmax()) == IMAGENET_ZEBRA and float(probs.max()) > 0.5


def test_new_head_keeps_the_backbone_and_starts_the_classifier_fresh():
    model = create_model("tf_efficientnet_lite0", 6, weights=LITE0_WEIGHTS)
    reference = torch.load(LITE0_WEIGHTS, map_location="cpu", weights_only=True)
    assert torch.equal(model.conv_stem.weight, reference["_conv_stem.weight"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, reference["_blocks.15._project_conv.weight"])
    assert model.classifier.weight.shape == (6, 1280)


def test_weights_for_another_architecture_are_refused():
    model = create_model("test_resnet", 3)
    with pytest.raises(DataError, match="not an EfficientNet"):
        load_weights(model, LITE0_WEIGHTS)


def test_unknown_arch_lists_what_is_valid():
    with pytest.raises(OptionError, match="arch: 'vit_base_patch16_224' is not a timm.*resnet50"):
        check_arch("vit_base_patch16_224")


def test_a_run_leaves_checkpoint_metrics_split_config_and_bundle(tiny_run):
    assert {p.name for p in tiny_run.iterdir()} >= {"best.pt", "metrics.csv", "split.csv", "config.json", "bundle"}
    with open(tiny_run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_log_loss", "val_macro_f1"):
            assert np.isfinite(float(row[key]))
    with open(tiny_run / "split.csv") as fh:
        split = Counter(r["part"] for r in csv.DictReader(fh))  # data.write_split: filepath,label,site,group,part
    assert split["train"] + split["val"] == 21 and split["val"] == 6
    ckpt = load_checkpoint(tiny_run)  # a run folder means its best.pt, loaded with weights_only=True
    assert ckpt["arch"] == "test_efficientnet" and len(ckpt["classes"]) == 6
    best = min(rows, key=lambda r: float(r["val_log_loss"]))
    assert ckpt["epoch"] == int(best["epoch"])
    assert json.loads((tiny_run / "config.json").read_text())["preprocess"]["height"] == 64


def test_run_folder_is_not_overwritten_by_accident(tiny_run):
    from trapcls.training import TrainConfig, train

    with pytest.raises(DataError, match="not empty"):
        train(TrainConfig(data=DEMO / "train", out=tiny_run, arch="test_efficientnet"))


def test_a_pickle_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(DataError, match="not a trapcls checkpoint"):
        load_checkpoint(path)


def test_weights_with_other_shapes_are_refused_with_the_offending_keys(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file(create_model("resnet18", 3).state_dict(), str(path))
    with pytest.raises(DataError, match="does not fit test_resnet: .*shape-mismatched"):
        load_weights(create_model("test_resnet", 3), path)


def test_calibration_is_fitted_on_validation_stored_and_applied_by_predict(tiny_run, tmp_path):
    import pandas as pd

    from trapcls.core.model.bundle import load_bundle
    from trapcls.core.model.probs import probabilities
    from trapcls.predict.backends import create_backend
    from trapcls.predict.runner import PredictConfig, run_predict

    manifest = json.loads((tiny_run / "bundle" / "bundle.json").read_text())
    calibration = manifest["calibration"]
    assert calibration["fitted"] and calibration["images"] > 0
    assert calibration["val_log_loss_after"] <= calibration["val_log_loss_before"]
    assert load_checkpoint(tiny_run)["calibration"]["temperature"] == calibration["temperature"] != 1.0

    bundle = load_bundle(tiny_run / "bundle")
    frame = sorted((DEMO / "frames").glob("*.jpg"))[0]
    logits = create_backend("onnxruntime", bundle).logits(preprocess(frame, bundle.preprocess)[None])
    out = tmp_path / "p.csv"
    run_predict(PredictConfig(inputs=[frame], bundle=bundle.root, out=out))
    row = pd.read_csv(out).iloc[0]
    np.testing.assert_allclose(row[list(bundle.classes)].to_numpy(dtype=float),
                               probabilities(logits, bundle.temperature)[0], atol=1e-7)
    assert not np.allclose(probabilities(logits, 1.0)[0], probabilities(logits, bundle.temperature)[0], atol=1e-6)


def test_drivendata_layout_trains_with_a_site_grouped_split(tmp_path):
    from trapcls.training import TrainConfig, train

    frames = sorted((DEMO / "train").glob("*/*.jpg"))
    classes = sorted({p.parent.name for p in frames})
    data = tmp_path / "conservision"
    (data / "train_features").mkdir(parents=True)
    features, labels = ["id,filepath,site"], ["id," + ",".join(classes)]
    for i, frame in enumerate(frames):
        target = data / "train_features" / f"ZJ{i:06d}.jpg"
        target.write_bytes(frame.read_bytes())
        features.append(f"ZJ{i:06d},train_features/{target.name},S{i % 5:04d}")
        labels.append(f"ZJ{i:06d}," + ",".join("1.0" if c == frame.parent.name else "0.0" for c in classes))
    (data / "train_features.csv").write_text("\n".join(features) + "\n")
    (data / "train_labels.csv").write_text("\n".join(labels) + "\n")
    run = tmp_path / "run"
    train(TrainConfig(data=data, out=run, arch="test_efficientnet", epochs=1, img_size=64, batch_size=8,
                      workers=0, export="none"))
    assert json.loads((run / "config.json").read_text())["split"] == "site"
    with open(run / "split.csv") as fh:
        rows = list(csv.DictReader(fh))
    sites = {part: {r["site"] for r in rows if r["part"] == part} for part in ("train", "val")}
    assert len(rows) == len(frames) and sites["train"] and sites["val"] and not sites["train"] & sites["val"]


def test_a_run_leaves_pictures_per_class_metrics_and_safetensors(tiny_run):
    from PIL import Image
    from safetensors.torch import load_file

    for name in ("curves.png", "confusion.png"):
        with Image.open(tiny_run / name) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
    with open(tiny_run / "per_class.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == ["baboon", "blank", "buffalo", "elephant", "warthog", "zebra"]
    assert sum(int(r["support"]) for r in rows) == 6
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in ("precision", "recall", "f1"))
    state = load_file(str(tiny_run / "best.safetensors"))
    assert torch.equal(state["classifier.weight"], load_checkpoint(tiny_run)["state_dict"]["classifier.weight"])


def test_per_class_metrics_and_confusion_by_hand():
    from trapcls.core.metrics import confusion_matrix, macro_f1, per_class

    probs = np.eye(3)[[0, 0, 1, 2, 2, 2]]  # predictions
    labels = np.array([0, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(confusion_matrix(probs, labels, 3), [[1, 0, 1], [1, 1, 0], [0, 0, 2]])
    rows = {r["class"]: r for r in per_class(probs, labels, ["a", "b", "c"])}
    assert rows["a"]["precision"] == 0.5 and rows["a"]["recall"] == 0.5 and rows["b"]["precision"] == 1.0
    assert rows["c"]["precision"] == pytest.approx(2 / 3) and rows["c"]["recall"] == 1.0
    assert macro_f1(probs, labels) == pytest.approx(np.mean([0.5, 2 / 3, 0.8]))
