"""Train throughput: images/s of the trapcls training step, FP32 contiguous against AMP + channels_last.

Method (one run, one random-init model, one in-memory batch reused for every step):
  step      the body of `trapcls.training.trainer.train_one_epoch`: forward and loss under `Stepper.autocast`,
            `Stepper.backward` (GradScaler, AdamW step, zero_grad, per-step schedule), then `loss.item()` and
            the correct count, as `trapcls train` does with its default optimizer, weight decay and label
            smoothing (`TrainConfig`). Not timed: decoding and augmentation (the batch is decoded once)
            and the host-to-device copy (the batch already lives on the device).
  fp32      amp_dtype None, model and batch contiguous: the baseline.
  amp+cl    `autocast_dtype(device, amp=True)` (bf16 where the GPU supports it, else fp16 with the
            GradScaler) and channels_last model and batch: what `trapcls train` runs on CUDA.
            On the CPU trapcls trains in FP32 contiguous only, so this row says "not applicable".
Each configuration builds the model from the same initial weights and its own optimizer, runs --warmup
steps, then --repeats timed runs of --steps steps (CUDA synchronised before each clock read);
images/s = batch * steps / seconds, median and min-max of the repeats. Peak GPU memory is
torch.cuda.max_memory_allocated over the configuration's whole run (weights, optimizer state, activations).
cudnn.benchmark stays at torch's default, as in `trapcls train`.

Usage:
  .venv/bin/python benchmarks/train_throughput.py --device cuda --arch efficientnet_b0
  .venv/bin/python benchmarks/train_throughput.py --device cuda --arch resnet50 --images ../shared/data/ena24_small
  .venv/bin/python benchmarks/train_throughput.py --device cpu --arch resnet18 --img-size 128 --steps 3 --repeats 2
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import machine, versions  # noqa: E402

NUM_CLASSES = 8
PACKAGES = ("trapcls", "torch", "timm")
NOT_APPLICABLE = "not applicable (AMP and channels_last are CUDA-only in trapcls)"


def load_batch(args: argparse.Namespace, spec) -> tuple[torch.Tensor, str]:
    """One batch of inputs in memory: real frames decoded with trapcls's preprocessing, or noise."""
    generator = torch.Generator().manual_seed(0)
    if args.images is None:
        shape = (args.batch_size, 3, spec.height, spec.width)
        return torch.randn(shape, generator=generator), "synthetic noise (torch.randn)"
    from trapcls.core.frames.preprocess import IMAGE_SUFFIXES, preprocess

    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        sys.exit(f"error: --images {args.images} holds no {'/'.join(IMAGE_SUFFIXES)} files; "
                 "point it at a folder of camera-trap frames, or drop it for synthetic noise.")
    chosen = [files[i % len(files)] for i in range(args.batch_size)]  # cycle when the folder is small
    batch = torch.stack([torch.from_numpy(preprocess(f, spec)) for f in chosen])
    return batch, f"{len(set(chosen))} real frames from {args.images} (decoded once, trapcls preprocess)"


def run_config(base_model, images: torch.Tensor, labels: torch.Tensor, *, amp: bool, args) -> dict:
    """Warm up, then time --repeats runs of --steps training steps; images/s per repeat and peak memory."""
    from trapcls.training.config import TrainConfig
    from trapcls.training.epoch import Stepper
    from trapcls.training.recipe import autocast_dtype, make_optimizer, warmup_cosine

    cuda = args.device == "cuda"
    if cuda:  # the previous configuration's tensors are gone before this one's peak is measured
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    defaults = TrainConfig(data=Path("."), out=Path("."))  # the optimizer and loss `trapcls train` uses by default
    amp_dtype = autocast_dtype(args.device, amp)
    layout = torch.channels_last if amp else torch.contiguous_format
    model = copy.deepcopy(base_model).to(args.device, memory_format=layout).train()
    x, y = images.to(args.device).contiguous(memory_format=layout), labels.to(args.device)
    optimizer = make_optimizer(model, name=defaults.optimizer, lr=defaults.peak_lr,
                               weight_decay=defaults.weight_decay, layer_decay=defaults.layer_decay)
    total = args.warmup + args.steps * args.repeats
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, args.warmup))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=defaults.label_smoothing)
    step = Stepper(optimizer, scheduler, accumulate=1, amp_dtype=amp_dtype, ema=None)

    def steps(count: int) -> None:
        """`count` steps of train_one_epoch's body, on the batch already on the device."""
        for _ in range(count):
            with step.autocast(args.device):
                logits = model(x)
                loss = criterion(logits, y)
            step.backward(loss, model, last=True)
            with torch.no_grad():
                loss.item()  # train_one_epoch reads the loss every step (a device sync); so do we
                int((logits.argmax(1) == y).sum())

    sync = torch.cuda.synchronize if cuda else (lambda: None)

    steps(args.warmup)
    rates = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        steps(args.steps)
        sync()
        rates.append(args.batch_size * args.steps / (time.perf_counter() - start))
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {"amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32",
            "layout": "channels_last" if amp else "contiguous", "rates": rates, "peak_mib": peak,
            "scaler": amp_dtype == torch.float16}


def machine_line(device: str) -> str:
    """The machine as benchmarks/environment.py describes it, plus torch's threads and the GPU's training facts."""
    info = machine(device)
    text = f"{info['cpu']}, {info['cores']} cores, torch threads {torch.get_num_threads()}"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        text += (f"; GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
                 f"cuDNN {torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}")
    return text + f"; device {device}"


def render(rows: list[list[str]]) -> list[str]:
    """Aligned text lines: first column left, the rest right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in rows]


def table(results: dict[str, dict | None]) -> list[str]:
    """One row per configuration; a configuration that does not apply says why instead of a number."""
    rows = [["config", "autocast", "memory format", "median img/s", "min-max img/s", "vs fp32", "peak GPU MiB"]]
    baseline = statistics.median(results["fp32"]["rates"])
    for name, r in results.items():
        if r is not None:
            median = statistics.median(r["rates"])
            rows.append([name, r["amp"] + (" +GradScaler" if r["scaler"] else ""), r["layout"], f"{median:.1f}",
                         f"{min(r['rates']):.1f}-{max(r['rates']):.1f}", f"{median / baseline:.2f}x",
                         f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "- (cpu)"])
    return render(rows) + [f"{name}  {NOT_APPLICABLE}" for name, r in results.items() if r is None]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; device-dependent defaults filled in after parsing."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="efficientnet_b0", help="timm ResNet/EfficientNet name, e.g. resnet50")
    p.add_argument("--img-size", type=int, default=224, help="square input size (default 224)")
    p.add_argument("--batch-size", type=int, help="images per step (default 32 on CUDA, 8 on CPU)")
    p.add_argument("--steps", type=int, help="timed steps per repeat (default 20 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed steps before timing (default 5 on CUDA, 2 on CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; median and min-max reported")
    p.add_argument("--images", type=Path, help="folder of JPEG/PNG frames for the batch (default: synthetic noise)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA build of torch and a visible GPU; use --device cpu or auto")
    cuda = args.device == "cuda"
    args.batch_size = args.batch_size if args.batch_size is not None else (32 if cuda else 8)
    args.steps = args.steps if args.steps is not None else (20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--steps", args.steps, 1),
                               ("--warmup", args.warmup, 0), ("--repeats", args.repeats, 1),
                               ("--img-size", args.img_size, 32)):
        if value < least:
            p.error(f"{flag} must be at least {least}, got {value}")
    if args.images is not None and not args.images.is_dir():
        p.error(f"--images {args.images} is not a folder; pass a folder of frames or drop it for synthetic noise")
    return args


def main(argv: list[str] | None = None) -> None:
    """Build the model and batch, time both configurations, print the report."""
    args = parse_args(argv)
    from trapcls.core.model.build import create_model, preprocess_spec
    from trapcls.core.system.exceptions import TrapclsError

    torch.manual_seed(0)
    try:
        model = create_model(args.arch, NUM_CLASSES)  # random init: speed does not depend on the weights
    except TrapclsError as exc:
        sys.exit(f"error: {exc}")
    images, source = load_batch(args, preprocess_spec(model, args.img_size))
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=torch.Generator().manual_seed(1))
    results: dict[str, dict | None] = {"fp32": run_config(model, images, labels, amp=False, args=args)}
    results["amp+cl"] = run_config(model, images, labels, amp=True, args=args) if args.device == "cuda" else None
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print("\n".join([
        f"machine : {machine_line(args.device)}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions(PACKAGES).items()),
        f"model   : {args.arch}, random init, {params:.1f} M parameters, {NUM_CLASSES} classes, {args.img_size}px",
        f"data    : {source}",
        f"steps   : batch {args.batch_size}, {args.warmup} warm-up + {args.repeats} x {args.steps} timed steps",
        "", *table(results), "",
        "step: forward + loss + backward + AdamW step + schedule, as in train_one_epoch; no decoding, augmentation",
        "or host-to-device copy. img/s = batch * steps / seconds, median and min-max over the repeats."]))

if __name__ == "__main__":
    main()
