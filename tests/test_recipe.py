"""The fine-tuning recipe's parts, each checked on its own, and two short real runs."""

from __future__ import annotations

import csv
import logging
import random
from collections import Counter

import pytest
import torch

from helpers import DEMO, noise_image, trapcls
from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.model.build import create_model
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.training import TrainConfig, train
from trapcls.training.epoch import Stepper, set_backbone_trainable
from trapcls.training.recipe import (
    BalancedSampler,
    class_weights,
    crop_box,
    ema_model,
    make_optimizer,
    train_transform,
    warmup_cosine,
)


def test_training_crops_keep_most_of_the_frame_inside_it():
    rng = random.Random(0)
    for _ in range(2000):
        left, top, right, bottom = crop_box(2048, 1536, min_scale=0.7, rng=rng)
        assert 0 <= left < right <= 2048 and 0 <= top < bottom <= 1536
        share = (right - left) * (bottom - top) / (2048 * 1536)
        assert 0.7 * 0.75 <= share <= 1.0
        assert 0.7 <= ((right - left) / (bottom - top)) / (2048 / 1536) <= 1.4


@pytest.mark.parametrize("augment", ["trivial", "randaugment", "none"])
def test_train_transform_gives_the_input_size(augment):
    spec = PreprocessSpec(height=48, width=64, mean=(0, 0, 0), std=(1, 1, 1))
    out = train_transform(spec, augment=augment, min_scale=0.7)(noise_image((400, 300)))
    assert out.size == (64, 48) and out.mode == "RGB"
    with pytest.raises(OptionError, match="augment: 'mixup' is not one of"):
        train_transform(spec, augment="mixup", min_scale=0.7)


def test_no_weight_decay_on_norms_and_biases_and_layer_wise_rates():
    model = create_model("test_efficientnet", 3)
    optimizer = make_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            assert group["weight_decay"] == (0.0 if p.ndim <= 1 else 0.05), name
            rates[name] = group["lr"]
    assert rates["classifier.weight"] == pytest.approx(1e-3)
    assert rates["conv_stem.weight"] < rates["blocks.3.0.conv_pw.weight"] < rates["classifier.weight"]
    plain = make_optimizer(model, name="sgd", lr=1e-2, weight_decay=0.0, layer_decay=None)
    assert {g["lr"] for g in plain.param_groups} == {1e-2}


def test_warmup_then_cosine():
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) < 0.1 < factor(5) < factor(9) < 1.0 and factor(10) == pytest.approx(1.0)
    after = [factor(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(after, after[1:])) and after[-1] == pytest.approx(0.0, abs=1e-9)


def test_class_balance():
    labels = [0, 0, 0, 1]
    assert class_weights(labels, 2) == pytest.approx([4 / 6, 2.0])
    many = labels * 250  # 750 of class 0, 250 of class 1
    drawn = Counter(many[i] for i in BalancedSampler(many, 2, seed=0))
    assert sum(drawn.values()) == len(many) and abs(drawn[0] - drawn[1]) < 0.1 * len(many)


def test_balanced_sampler_is_fixed_by_seed_and_epoch_and_splits_one_draw_over_ranks():
    labels = [0, 0, 0, 1] * 25
    one = BalancedSampler(labels, 2, seed=3)
    one.set_epoch(2)
    draw = list(one)
    assert draw == list(one)  # a resumed run repeats the epoch's draws exactly
    one.set_epoch(3)
    assert list(one) != draw
    one.set_epoch(2)
    ranks = [BalancedSampler(labels, 2, seed=3, rank=r, world=3) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(2)
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [33, 33, 33] == [len(s) for s in ranks]
    assert [x for trio in zip(*shares) for x in trio] == draw[:99]  # rank r takes draws r, r + 3, ...


def test_stepper_accumulates_and_ema_averages():
    model = torch.nn.Linear(2, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema = ema_model(model, 0.5)
    step = Stepper(optimizer, scheduler, accumulate=3, amp_dtype=None, ema=ema)
    start = model.weight.detach().clone()
    for i in range(7):  # 3 + 3 + the epoch's last batch: three optimizer steps
        step.backward(model(torch.ones(1, 2)).sum(), model, last=i == 6)
    assert scheduler.last_epoch == 3
    moved = start - model.weight.detach()
    assert torch.allclose(moved, torch.full_like(moved, 0.1 * (1 + 1 + 1 / 3)))
    assert not torch.equal(ema.module.weight, model.weight)  # lags behind the live weights


def test_freezing_leaves_only_the_head_trainable():
    model = create_model("test_efficientnet", 3)
    set_backbone_trainable(model, False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())


def _metrics(run):
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_early_stop_ends_a_run_that_stopped_improving(tmp_path):
    # Learning rate 0 with a frozen backbone: validation log loss never improves after epoch 1.
    run = tmp_path / "run"
    train(TrainConfig(data=DEMO / "train", out=run, arch="test_efficientnet", epochs=6, img_size=64, batch_size=8,
                      lr=0.0, freeze_backbone=True, early_stop=2, workers=0, export="none", calibrate=False))
    assert [int(r["epoch"]) for r in _metrics(run)] == [1, 2, 3]


def test_warm_up_unfreezes_and_recipe_options_run(tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        result = train(TrainConfig(data=DEMO / "train", out=run, arch="test_efficientnet", epochs=2, img_size=64,
                                   batch_size=4, freeze_epochs=1, layer_decay=0.7, balance="sampler", accumulate=2,
                                   ema_decay=0.9, augment="randaugment", workers=0, export="none"))
    assert "epoch 2: unfreezing the backbone" in caplog.text
    rows = _metrics(run)
    assert len(rows) == 2 and all(0 <= float(r["val_macro_f1"]) <= 1 for r in rows)
    assert result.calibration is not None
    with pytest.raises(OptionError, match="balance: 'oversample' is not one of"):
        train(TrainConfig(data=DEMO / "train", out=tmp_path / "x", arch="test_efficientnet", balance="oversample"))


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_metrics(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    def command(out):
        return ["train", DEMO / "train", "--arch", "test_efficientnet", "--epochs", "4", "--img-size", "64",
                "--batch-size", "4", "--workers", "0", "--no-export", "--ema-decay", "0.9", "--balance", "sampler",
                "--out", out]

    reference = tmp_path / "reference"
    trapcls(*command(reference), here=False)
    run = tmp_path / "run"
    # Popen, not the helpers' runner: the run is killed while it trains.
    proc = subprocess.Popen([sys.executable, "-m", "trapcls", *map(str, command(run))], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if (run / "metrics.csv").exists() and len(_metrics(run)) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(_metrics(run)) < 4, "the run ended before it was killed"
    refused = trapcls(*command(run), rc=1, here=False)
    assert "--resume" in refused.stderr
    trapcls(*command(run), "--resume", here=False)
    timing = {"images_per_s", "seconds"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(_metrics(run)) == strip(_metrics(reference))
    assert len(_metrics(run)) == 4


def test_retraining_from_a_bundle_keeps_or_resets_the_head(tiny_run, tmp_path, caplog):
    import shutil

    from safetensors.torch import load_file

    from trapcls.core.model.bundle import load_bundle

    bundle = load_bundle(tiny_run / "bundle")
    start = load_file(str(bundle.weights_path))
    same = tmp_path / "same"
    with caplog.at_level(logging.INFO):
        train(TrainConfig(data=DEMO / "train", out=same, from_bundle=bundle.root, epochs=1, lr=0.0, batch_size=8,
                          freeze_backbone=True, workers=0, export="none", calibrate=False))
    assert "same classes: classifier kept" in caplog.text
    from trapcls.core.model.checkpoint import load_checkpoint

    kept = load_checkpoint(same)
    assert kept["arch"] == "test_efficientnet" and kept["preprocess"]["height"] == 64
    for name in ("conv_stem.weight", "classifier.weight", "classifier.bias"):
        assert torch.equal(kept["state_dict"][name], start[name]), name

    season = tmp_path / "season2"
    for label in ("baboon", "zebra", "blank"):
        shutil.copytree(DEMO / "train" / label, season / ("empty" if label == "blank" else label))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(TrainConfig(data=season, out=tmp_path / "new", from_bundle=bundle.root, epochs=1, lr=0.0, batch_size=8,
                          freeze_backbone=True, workers=0, export="none", calibrate=False))
    assert "class list changed" in caplog.text and "classifier re-initialised" in caplog.text
    fresh = load_checkpoint(tmp_path / "new")["state_dict"]
    assert torch.equal(fresh["conv_stem.weight"], start["conv_stem.weight"])
    assert fresh["classifier.weight"].shape[0] == 3
    with pytest.raises(OptionError, match="differs from the bundle's"):
        train(TrainConfig(data=season, out=tmp_path / "x", from_bundle=bundle.root, arch="resnet18"))
    with pytest.raises(OptionError, match="arch: is required"):
        train(TrainConfig(data=season, out=tmp_path / "y"))


@pytest.mark.slow
def test_lr_range_test_writes_a_plot_and_suggests_a_rate(tmp_path):
    out = tmp_path / "lr"
    proc = trapcls("train", DEMO / "train", "--arch", "test_efficientnet", "--img-size", "64", "--batch-size", "4",
                   "--workers", "0", "--find-lr", "--out", out, here=False)
    suggested = float(proc.stdout.split("suggested --lr ")[1].split()[0])
    with open(out / "lr_find.csv") as fh:
        rows = list(csv.DictReader(fh))
    lrs = [float(r["lr"]) for r in rows]
    assert len(rows) >= 10 and lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-7)
    best = lrs[min(range(len(rows)), key=lambda i: float(rows[i]["smoothed_loss"]))]
    assert suggested == pytest.approx(best / 10, rel=0.05)
    assert (out / "lr_find.png").stat().st_size > 10_000 and not (out / "best.pt").exists()


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_match_one_process(tmp_path):
    import json
    import subprocess
    import sys

    args = ["-m", "trapcls", "train", str(DEMO / "train"), "--arch", "test_efficientnet", "--epochs", "3",
            "--img-size", "64", "--batch-size", "8", "--workers", "0", "--no-export"]
    trapcls(*args[2:], "--out", tmp_path / "one", here=False)
    # torchrun starts the trapcls processes itself: a raw command line.
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("best epoch") == 1  # rank 0 alone reports and writes
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["processes"] == 2
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert abs(float(a["val_log_loss"]) - float(b["val_log_loss"])) < 0.05  # the same recipe, within noise
    with pytest.raises(OptionError, match="must divide by"):
        from trapcls.training.distributed import Dist
        from trapcls.training.trainer import check_config

        check_config(TrainConfig(data=DEMO / "train", out=tmp_path / "x", arch="test_efficientnet", batch_size=7),
                  Dist(rank=0, world=2, local_rank=0, device="cpu"))


@pytest.mark.slow
def test_torchrun_freezes_balances_and_finds_lr_like_one_process(tmp_path):
    """--freeze-epochs (DDP is rebuilt when the backbone unfreezes), --balance sampler (one global
    draw split over ranks) and --find-lr under torchrun; the run itself refuses to finish if the
    ranks' weights diverged, so a passing run shows the gradients stayed synchronised."""
    import subprocess
    import sys

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["-m", "trapcls", "train", str(DEMO / "train"), "--arch", "test_efficientnet", "--epochs", "3",
            "--img-size", "64", "--batch-size", "8", "--workers", "0", "--no-export", "--freeze-epochs", "1",
            "--balance", "sampler"]
    trapcls(*args[2:], "--out", tmp_path / "one", here=False)
    ddp = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "unfreezing the backbone" in ddp.stderr and "all 2 processes hold identical weights" in ddp.stderr
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert abs(float(a["val_log_loss"]) - float(b["val_log_loss"])) < 0.1  # the same recipe, within noise
    sweep = [*args[:args.index("--epochs")], "--img-size", "64", "--batch-size", "8", "--workers", "0", "--find-lr",
             "--find-lr-steps", "30"]
    lr = subprocess.run([*torchrun, *sweep, "--out", str(tmp_path / "lr")], capture_output=True, text=True,
                        timeout=180)
    assert lr.returncode == 0, lr.stderr[-3000:]
    assert lr.stdout.count("suggested --lr") == 1 and (tmp_path / "lr" / "lr_find.png").is_file()


def test_export_targets_and_a_missing_tensorrt_refused_before_training(tmp_path):
    import importlib.util

    from trapcls.core.system.exceptions import MissingDependencyError
    from trapcls.export import parse_targets
    from trapcls.workflow import run_train

    assert parse_targets("onnx") == ("onnx",) and parse_targets(" none ") == () and parse_targets("") == ()
    assert parse_targets("tensorrt") == parse_targets("ONNX,tensorrt") == ("onnx", "tensorrt")
    with pytest.raises(DataError, match="unknown: trt"):
        parse_targets("onnx,trt")
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here; the refusal is for machines without it")
    with pytest.raises(MissingDependencyError, match=r"trapcls\[tensorrt\]"):
        run_train(TrainConfig(data=DEMO / "train", out=tmp_path / "run", arch="test_efficientnet",
                              export="onnx,tensorrt"))
    assert not (tmp_path / "run").exists()  # refused before anything was trained or written


def test_checkpoint_keeper_keeps_the_best_stops_early_and_restores_every_part(tmp_path):
    from trapcls.core.model.checkpoint import load_checkpoint
    from trapcls.training.checkpoint import LAST, CheckpointKeeper, GlobalRng, LoaderRng, load_train_state

    model = torch.nn.Linear(2, 2)
    meta = {"arch": "test_efficientnet", "classes": ["a", "b"], "config": {"epochs": 4},
            "spec": PreprocessSpec(height=32, width=32, mean=(0, 0, 0), std=(1, 1, 1))}
    keeper = CheckpointKeeper(tmp_path, early_stop=2, meta=meta)
    decisions = []
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7], start=1):
        best = keeper.update(epoch, {"epoch": epoch, "val_log_loss": loss}, model, validated=True)
        decisions.append((best, keeper.stopped))
    assert decisions == [(True, False), (True, False), (False, False), (False, True)]
    assert load_checkpoint(tmp_path)["epoch"] == 2 and keeper.best["val_log_loss"] == 0.5

    generator = torch.Generator().manual_seed(5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()  # momentum buffers exist now
    parts = {"model": model, "optimizer": optimizer, "loader_rng": LoaderRng(generator), "rng": GlobalRng()}
    keeper.save_last(4, parts)
    weight, momentum = model.weight.detach().clone(), optimizer.state[model.weight]["momentum_buffer"].clone()
    expected = (torch.rand(3, generator=generator), torch.rand(3), random.random())

    with torch.no_grad():
        model.weight.add_(1.0)
    optimizer.state[model.weight]["momentum_buffer"].zero_()
    torch.manual_seed(123)
    random.seed(9)
    fresh = CheckpointKeeper(tmp_path, early_stop=2, meta=meta)
    assert fresh.resume(load_train_state(tmp_path / LAST), parts) == 5
    assert fresh.state_dict() == keeper.state_dict()
    assert torch.equal(model.weight, weight)
    assert torch.equal(optimizer.state[model.weight]["momentum_buffer"], momentum)
    again = (torch.rand(3, generator=generator), torch.rand(3), random.random())
    assert torch.equal(again[0], expected[0]) and torch.equal(again[1], expected[1]) and again[2] == expected[2]
