"""The `trapcls` command line: each command turns its options into a config and calls one library function.

Errors are handled here, once: a TrapclsError prints its message and exits 1; bad usage (an
unknown option, a value outside its choices) exits 2 (typer/click); success exits 0.

No default is written here: each option's default is read from its config class
(trapcls.*.config), and the config is built from the options by name. Only the config modules
are imported up front, so `trapcls --help` loads neither numpy nor any model runtime.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from trapcls import __version__
from trapcls.core.model.blank import DEFAULT_BLANK_THRESHOLD
from trapcls.core.model.profile import Profile
from trapcls.core.system.exceptions import OptionError, TrapclsError
from trapcls.evaluate.config import EvaluateConfig
from trapcls.export import parse_targets
from trapcls.predict.config import BACKEND_NAMES, FORMATS, PredictConfig
from trapcls.results.config import TARGETS, AdaptConfig, ConvertConfig, EventsConfig
from trapcls.training.config import AUGMENTS, BALANCES, DEFAULT_LR, GROUP_BY, OPTIMIZERS, TrainConfig
from trapcls.watch.config import WatchConfig

app = typer.Typer(
    name="trapcls",
    help="Offline camera-trap image classifier: train, export, and classify folders of frames into CSVs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
export_app = typer.Typer(help="Turn a trained checkpoint into a deployable model bundle; build and check it "
                                "on the device that runs it (tensorrt, openvino).", no_args_is_help=True)
app.add_typer(export_app, name="export")


def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A typer choice type from a library's table, so the CLI offers exactly what the library knows."""
    return enum.Enum(name, {value: value for value in values}, type=str)


OutputFormat = _choices("OutputFormat", FORMATS)
BackendName = _choices("BackendName", ("auto", *BACKEND_NAMES))
Optimizer = _choices("Optimizer", OPTIMIZERS)
Augment = _choices("Augment", AUGMENTS)
Balance = _choices("Balance", BALANCES)
GroupBy = _choices("GroupBy", GROUP_BY)
ConvertTarget = _choices("ConvertTarget", TARGETS)

# The defaults, read from the configs (a field's default is its class attribute).
T, P, W, E, PROFILE = TrainConfig, PredictConfig, WatchConfig, EvaluateConfig, Profile
EV, CV, AD = EventsConfig, ConvertConfig, AdaptConfig


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trapcls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def _export_targets(value: str) -> str:
    """--export checked at parse time, so a typo is a usage error (exit 2) before anything starts."""
    try:
        parse_targets(value)
    except TrapclsError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Argument(
        help="Class-per-folder tree (DATA/<class>/*.jpg), a filepath,label[,site] CSV, a DrivenData folder "
             "(train_features.csv + train_labels.csv), or a folder of images with --label-regex. May come from "
             "--config instead.", show_default=False, metavar="DATA")] = None,
    out: Annotated[Path, typer.Option(help="Run folder to create (checkpoint, metrics, bundle).")] = ...,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="Options from a JSON file, e.g. an earlier run's RUN/config.json to rerun its recipe. "
                         "Precedence: defaults < this file < the flags you type.")] = None,
    arch: Annotated[Optional[str], typer.Option(
        help="timm ResNet/EfficientNet name, e.g. tf_efficientnet_lite0, resnet50 (default with --from-bundle: "
             "the bundle's).")] = T.arch,
    from_bundle: Annotated[Optional[Path], typer.Option(
        help="Start from an earlier bundle's weights (a new season's labels); the classifier is re-initialised "
             "when the class list changed.")] = T.from_bundle,
    weights: Annotated[Optional[Path], typer.Option(
        help="Initial weights: .safetensors or torch state dict (efficientnet_pytorch keys are mapped).")] = T.weights,
    pretrained: Annotated[bool, typer.Option(
        help="Download ImageNet weights from the timm hub (needs internet).")] = T.pretrained,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = T.epochs,
    img_size: Annotated[Optional[int], typer.Option(
        help="Square input size; default: the architecture's.")] = T.img_size,
    batch_size: Annotated[int, typer.Option(help="Images per step (across all processes).")] = T.batch_size,
    optimizer: Annotated[Optimizer, typer.Option(help="adamw, or sgd (momentum 0.9, Nesterov).")]
    = Optimizer(T.optimizer),
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate; default: " + ", ".join(
        f"{rate:g} ({name})" for name, rate in DEFAULT_LR.items()) + ".")] = T.lr,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (never on norms and biases).")] = T.weight_decay,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing for the loss.")] = T.label_smoothing,
    freeze_backbone: Annotated[bool, typer.Option(
        help="Train only the classifier head (good for tiny datasets).")] = T.freeze_backbone,
    freeze_epochs: Annotated[int, typer.Option(
        help="Warm-up epochs that train only the head before the whole network is unfrozen.")] = T.freeze_epochs,
    layer_decay: Annotated[Optional[float], typer.Option(
        help="Discriminative learning rates: each block's LR is lr * layer_decay^(depth from the head), e.g. 0.7.")]
    = T.layer_decay,
    warmup_epochs: Annotated[float, typer.Option(
        help="Linear LR warm-up (epochs), then cosine decay to 0.")] = T.warmup_epochs,
    augment: Annotated[Augment, typer.Option(
        help="TrivialAugmentWide, RandAugment or none; always with a random crop keeping most of the frame and a "
             "horizontal flip.")] = Augment(T.augment),
    crop_scale: Annotated[float, typer.Option(
        help="Smallest share of the frame's area a training crop keeps.")] = T.crop_scale,
    balance: Annotated[Balance, typer.Option(
        help="For skewed classes: class-balanced sampling, inverse-frequency loss weights, or none.")]
    = Balance(T.balance),
    accumulate: Annotated[int, typer.Option(help="Batches per optimizer step (gradient accumulation).")] = T.accumulate,
    ema_decay: Annotated[Optional[float], typer.Option(
        help="Keep an exponential moving average of the weights (e.g. 0.999) and validate/save it.")] = T.ema_decay,
    early_stop: Annotated[int, typer.Option(
        help="Stop after this many epochs without a better validation log loss (0 = never).")] = T.early_stop,
    amp: Annotated[bool, typer.Option(help="Mixed precision (bf16, else fp16) and channels_last on CUDA.")] = T.amp,
    val_fraction: Annotated[float, typer.Option(
        help="Share of the images held out for validation (0 = none).")] = T.val_fraction,
    group_by: Annotated[GroupBy, typer.Option(
        help="Keep each group on one side of the split: auto (site when the data has sites, else stratified by "
             "class), site, folder (camera folder) or none.")] = GroupBy(T.group_by),
    folds: Annotated[int, typer.Option(help="k-fold cross-validation by group: the number of folds (0 = off).")]
    = T.folds,
    fold: Annotated[int, typer.Option(help="Which fold (1..--folds) is validation in this run.")] = T.fold,
    label_regex: Annotated[Optional[str], typer.Option(
        help="Label images by file name: a regex whose first (or 'label') group is the class, "
             "e.g. '(.+)_\\d+\\.jpg$'.")]
    = T.label_regex,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and shuffling.")] = T.seed,
    workers: Annotated[Optional[int], typer.Option(help="Data loader processes; default min(2, cores).")] = T.workers,
    overwrite: Annotated[bool, typer.Option(help="Reuse a non-empty --out folder.")] = T.overwrite,
    resume: Annotated[bool, typer.Option(
        help="Continue the interrupted run in --out after its last finished epoch (same options, same result).")]
    = T.resume,
    export: Annotated[str, typer.Option(
        callback=_export_targets,
        help="Re-export the best checkpoint at the end: onnx (OUT/bundle), onnx,tensorrt (also an FP16 engine "
             "built on this machine's GPU, verified) or none.")] = T.export,
    no_export: Annotated[bool, typer.Option("--no-export", help="Same as --export none.")] = False,
    find_lr: Annotated[bool, typer.Option(
        help="Run the learning-rate range test instead of training: writes OUT/lr_find.png and .csv and prints "
             "a suggested --lr.")] = T.find_lr,
    find_lr_steps: Annotated[int, typer.Option(help="Optimizer steps in the LR range test (1e-7 to 10).")]
    = T.find_lr_steps,
    calibrate: Annotated[bool, typer.Option(
        help="Fit a temperature on the validation split (minimising log loss) and store it in the bundle.")]
    = T.calibrate,
) -> None:
    """Fine-tune a timm model on labelled images; writes OUT/best.pt, metrics.csv, split.csv and OUT/bundle."""
    from trapcls.training.config import train_config
    from trapcls.workflow import run_train

    if data is None and config is None:
        raise typer.BadParameter("give the training data, or --config with a file that names it.", param_hint="DATA")
    flags = _options(ctx, TrainConfig, typed_only=True)
    if no_export:
        flags["export"] = "none"
    result = run_train(train_config({**flags, "command": _command_line()}, config_file=config), show_progress=True)
    if not result.main:
        return  # a torchrun process other than rank 0: rank 0 reports
    if result.lr_find:
        typer.echo(f"suggested --lr {result.lr_find.suggestion:.2g} (plot: {result.run_dir / 'lr_find.png'})")
        return
    summary = ", ".join(f"{k}={result.best_metrics[k]:.4f}" for k in ("val_accuracy", "val_log_loss")
                        if k in result.best_metrics)
    typer.echo(f"best epoch {result.best_epoch}{': ' + summary if summary else ''}")
    if result.calibration:
        c = result.calibration
        typer.echo(f"calibration: temperature {c.temperature:.3f}, validation log loss "
                   f"{c.val_log_loss_before:.4f} -> {c.val_log_loss_after:.4f}")
    typer.echo(f"run folder: {result.run_dir}")
    if result.bundle_dir:
        typer.echo(f"bundle: {result.bundle_dir}")


@export_app.command("onnx")
def export_onnx(
    source: Annotated[Path, typer.Argument(help="A run folder from `trapcls train` or its best.pt.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to write (model.onnx, weights.safetensors, bundle.json).")],
    verify_images: Annotated[Optional[Path], typer.Option(
        help="Folder of real frames for the PyTorch-vs-ONNX check (and the FP16/INT8 check); default: frames "
             "shipped with trapcls. Uses the first 32 (with --int8, 256).")] = None,
    fp16: Annotated[bool, typer.Option(
        help="Store the model in FP16 (half the size; for ONNX Runtime's CUDA provider and small downloads), "
             "verified against FP32 on CPU: mean abs probability difference <= 1e-3, top-1 agreement >= 99% "
             "(flips between classes within 0.01 of each other excused). Slower than FP32 on a CPU.")] = False,
    int8: Annotated[bool, typer.Option(
        help="Store a static INT8 model for the CPU (ONNX Runtime, QDQ, per-channel weights; the first conv, "
             "pooling and classifier stay float), calibrated on --calibration-images and kept only if it passes "
             "the --fp16 check (mean abs probability difference <= 1e-3, top-1 >= 99%) against FP32 on "
             "--verify-images; otherwise nothing is written. ~1.5x faster on one x86 core with VNNI, but the "
             "EfficientNet-Lite models tried so far missed the check (README). Not with --fp16 or TensorRT.")] = False,
    calibration_images: Annotated[Optional[Path], typer.Option(
        help="With --int8: folder of frames typical of your cameras (day, night, blank; a few hundred, at most "
             "256 used, spread over the folder) to set the INT8 ranges. Must not share a frame with "
             "--verify-images: the check has to run on frames the calibration did not see.")] = None,
) -> None:
    """Export to ONNX (dynamic batch) and refuse the bundle unless it matches PyTorch on real frames."""
    from trapcls.export.onnx import MAX_ABS_TOL
    from trapcls.export.onnx import export_onnx as run_export
    from trapcls.export.parity import FP16_MEAN_ABS_TOL, FP16_MIN_TOP1

    if fp16 and int8:
        raise typer.BadParameter("choose one of --fp16 and --int8.", param_hint="--int8")
    if int8 != (calibration_images is not None):
        raise typer.BadParameter("--int8 and --calibration-images go together: INT8 needs calibration frames, "
                                 "and only INT8 uses them.", param_hint="--calibration-images")
    report = run_export(source, out, verify_images=_frames(verify_images, 256 if int8 else 32), fp16=fp16,
                        int8=int8, calibration_images=_frames(calibration_images, None))
    p = report.parity
    typer.echo(f"parity on {p.images} images: max abs probability difference {p.max_abs_diff:.2e} "
               f"(tolerance {MAX_ABS_TOL:.0e}), mean {p.mean_abs_diff:.2e}, top-1 agreement {p.top1_agreement:.1%}")
    for label, q in (("fp16", report.fp16_parity), ("int8", report.int8_parity)):
        if q is not None:
            typer.echo(f"{label} parity on {q.images} images: max abs probability difference {q.max_abs_diff:.2e}, "
                       f"mean {q.mean_abs_diff:.2e} (tolerance {FP16_MEAN_ABS_TOL:.0e}), top-1 agreement "
                       f"{q.top1_agreement:.1%}, {q.top1_agreement_excusing_near_ties:.1%} excusing near-ties "
                       f"(minimum {FP16_MIN_TOP1:.0%})")
    typer.echo(f"bundle: {report.bundle.root}")


@app.command()
def predict(
    ctx: typer.Context,
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="Folders (searched recursively), image files, or quoted globs such as 'cams/**/*.JPG'.")] = None,
    bundle: Annotated[Optional[Path], typer.Option(
        help="Model bundle folder (from `trapcls export onnx` or `trapcls train`); default: $TRAPCLS_BUNDLE, else "
             "the small demonstration model shipped with trapcls.")] = None,
    out: Annotated[Path, typer.Option(help="CSV to write. If it exists, files already in it are skipped (resume).")]
    = ...,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", help="field (path, capture time, label, blank flag, probabilities, status) or submission "
                         "(id + one probability column per class).")] = OutputFormat(P.fmt),
    file_list: Annotated[Optional[Path], typer.Option(
        help="Text file with one image path per line (relative to the list's folder; # comments).")] = P.file_list,
    backend: Annotated[BackendName, typer.Option(
        help="Inference engine; auto picks the fastest available and says which. openvino (CPU) runs bf16 only "
             "where `trapcls export openvino` verified it on this CPU, else f32, and says why; auto picks it on a "
             "CPU box only where such a check passed.")] = BackendName(P.backend),
    batch_size: Annotated[Optional[int], typer.Option(
        help="Images per inference batch; default 8 on a CPU, 32 on a GPU.")] = P.batch_size,
    threads: Annotated[Optional[int], typer.Option(
        help="CPU inference threads, each running its own batch; default: all cores.")] = P.threads,
    workers: Annotated[Optional[int], typer.Option(help="Image decoding threads; default: all cores.")] = P.workers,
    shard: Annotated[Optional[str], typer.Option(
        help="K/N: classify only shard K of N (1-based, by a hash of each path); join the CSVs with `trapcls merge`.")]
    = None,
    tta: Annotated[bool, typer.Option(help="Average with a horizontally flipped copy (twice the model work).")]
    = P.tta,
    blank_threshold: Annotated[Optional[float], typer.Option(
        help=f"is_blank is true when P(blank) >= this (field format, bundles with a blank class). Default: the "
             f"bundle's certified blank policy if it has one (see evaluate --blank-miss), else "
             f"{DEFAULT_BLANK_THRESHOLD}.")] = P.blank_threshold,
    overwrite: Annotated[bool, typer.Option(help="Start --out afresh instead of resuming it.")] = P.overwrite,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any image classified in this run could not be read.")]
    = False,
) -> None:
    """Classify JPEG/PNG images into a CSV of per-class probabilities; unreadable files become error rows.

    Rows are appended as batches finish. Interrupted? Run the same command again: it skips what
    is done, repairs a torn last line, and ends with the same CSV an uninterrupted run writes.
    """
    import warnings

    from PIL import Image

    from trapcls.predict.shard import parse_shard

    # Oversized frames become error rows; Pillow's warning for them would only be noise.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    config = _config(ctx, PredictConfig, inputs=inputs or [], bundle=_bundle(bundle),
                     shard=parse_shard(shard) if shard else None)
    summary = _predict_with_progress(config)
    rate = summary.classified / summary.seconds if summary.seconds > 0 else 0.0
    typer.echo(f"backend: {summary.backend} on {summary.device} ({summary.reason})", err=True)
    if summary.precision:
        typer.echo(f"precision: {summary.precision}", err=True)
    if summary.blank_rule:
        typer.echo(summary.blank_rule.describe(), err=True)
    if summary.skipped:
        typer.echo(f"resumed: {summary.skipped} files were already in {summary.out}", err=True)
    if summary.repaired:
        typer.echo(f"repaired: cut an incomplete last line from {summary.out}", err=True)
    if summary.classified or not summary.skipped:
        typer.echo(f"{summary.classified} images -> {summary.out} ({summary.failed} unreadable) "
                   f"in {summary.seconds:.1f}s, {rate:.1f} images/s")
    else:
        typer.echo(f"nothing to do: all {summary.images} images are already in {summary.out}")
    _echo_unclassified(summary.unclassified)
    if summary.failed:
        for result in summary.failures[:5]:
            typer.echo(f"  {result.error}", err=True)
        if config.fmt == "submission":
            typer.echo("warning: unreadable images got the uniform distribution in the submission", err=True)
        if strict:
            raise typer.Exit(1)


def _echo_unclassified(per_folder: dict, limit: int = 10) -> None:
    """Videos and other non-image files the walk met: the totals, then a line per folder (never silent)."""
    from trapcls.core.frames.discover import Unclassified

    total = Unclassified()
    for folder in per_folder.values():
        total.merge(folder)
    if total.videos:
        typer.echo(f"{total.videos} video{'s' if total.videos > 1 else ''} not classified: trapcls classifies "
                   "still images (JPEG, PNG)", err=True)
    if total.others:
        typer.echo(f"{total.others} other file{'s' if total.others > 1 else ''} not classified: not JPEG or PNG",
                   err=True)
    for name in sorted(per_folder)[:limit]:
        typer.echo(f"  {name}: {per_folder[name].describe()} ({per_folder[name].example()})", err=True)
    if len(per_folder) > limit:
        typer.echo(f"  ... and {len(per_folder) - limit} more folders", err=True)


def _predict_with_progress(config: PredictConfig):
    """run_predict with a progress bar once the number of files is known; Ctrl-C exits 130 keeping the rows."""
    from trapcls.core.system.progress import bar
    from trapcls.predict import run_predict

    bars = []  # created once the number of files is known, so errors before that print cleanly
    try:
        return run_predict(config, progress=lambda n: bars[0].update(n),
                           on_total=lambda n: bars.append(bar(n, "classify", enabled=True)))
    except KeyboardInterrupt:
        for progress in bars:
            progress.close()
        typer.echo(f"interrupted: the rows written so far are kept in {config.out}; run the same command again "
                   "to finish the rest.", err=True)
        raise typer.Exit(130) from None
    finally:
        for progress in bars:
            progress.close()


@export_app.command("tensorrt")
def export_tensorrt(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (from `trapcls export onnx` or `trapcls train`).")],
    min_batch: Annotated[int, typer.Option(help="Smallest batch the engine accepts.")] = PROFILE.min_batch,
    opt_batch: Annotated[int, typer.Option(help="Batch size TensorRT tunes its kernels for.")] = PROFILE.opt_batch,
    max_batch: Annotated[int, typer.Option(
        help="Largest batch the engine accepts (more needs more GPU memory).")] = PROFILE.max_batch,
    workspace_mib: Annotated[int, typer.Option(
        "--workspace", help="Builder workspace limit in MiB; the default suits an 8 GB Jetson (GPU and CPU share "
                            "its memory).")]
    = PROFILE.workspace_mib,
    verify_images: Annotated[Optional[Path], typer.Option(
        help="Folder of real frames for the engine-vs-ONNX Runtime check; default: frames shipped with trapcls.")]
    = None,
) -> None:
    """Build an FP16 TensorRT engine for THIS machine's GPU into BUNDLE/engines, verify it, and record it.

    Run it on the device that will classify (a Jetson or a GPU box): an engine only runs on the
    GPU model and TensorRT version that built it. `predict --backend auto` then uses it.
    """
    from trapcls.export.parity import FP16_MEAN_ABS_TOL, FP16_MIN_TOP1
    from trapcls.export.tensorrt import export_tensorrt as run_export

    result = run_export(bundle, Profile(min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                                        workspace_mib=workspace_mib), verify_images=_frames(verify_images, 64))
    meta, check = result.meta, result.meta.verification
    typer.echo(f"engine: {result.engine} ({meta.engine_bytes / 2**20:.1f} MiB, {meta.precision} via "
               f"{meta.fp16_mode}, TensorRT {meta.tensorrt_version}, {meta.gpu_name})")
    typer.echo(f"verified on {check['images']} images against ONNX Runtime: top-1 agreement "
               f"{check['top1_agreement']:.1%} (needs {FP16_MIN_TOP1:.0%}), mean abs probability difference "
               f"{check['mean_abs_diff']:.2e} (tolerance {FP16_MEAN_ABS_TOL:.0e}), max {check['max_abs_diff']:.2e}")


@export_app.command("openvino")
def export_openvino(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (from `trapcls export onnx` or `trapcls train`); "
                                                "it must be writable: copy an installed one first.")],
    verify_images: Annotated[Optional[Path], typer.Option(
        help="Folder of real frames (the first 64) for the OpenVINO-vs-ONNX Runtime check; default: the few frames "
             "shipped with trapcls. Frames from your own cameras make the check mean more.")] = None,
) -> None:
    """Check OpenVINO f32 and bf16 on THIS CPU against ONNX Runtime FP32 and record both in BUNDLE/bundle.json.

    bf16 (AMX / AVX512-BF16 CPUs; inference ~2.5x faster than f32 on an AMX Xeon) is kept only within the FP16 export
    tolerances: mean abs probability difference <= 1e-3, top-1 agreement >= 99% (near-ties
    excused); a refusal is recorded with its numbers. `predict --backend openvino` then runs bf16
    only where a passing record matches this CPU, this OpenVINO and the bundle's model.onnx, and
    `--backend auto` picks openvino on a CPU box only where the precision it would run passed.
    """
    from trapcls.export.openvino import FEW_FRAMES
    from trapcls.export.openvino import export_openvino as run_export

    result = run_export(bundle, verify_images=_frames(verify_images, 64))
    for check in result.checks:
        verdict = "passed" if check.passed else "refused"
        typer.echo(f"{check.precision}: {verdict}: {check.summary}")
    f32, bf16 = (next(c for c in result.checks if c.precision == p) for p in ("f32", "bf16"))
    then = "bf16" if bf16.passed else "f32" if f32.passed else "nothing (use --backend onnxruntime)"
    typer.echo(f"recorded for {bf16.cpu}, OpenVINO {bf16.openvino_version} in {result.bundle / 'bundle.json'}; "
               f"predict --backend openvino will run {then} here")
    frames = max(c.verification.get("images", 0) for c in result.checks)
    if frames < FEW_FRAMES:
        typer.echo(f"note: checked on only {frames} frames; --verify-images with frames from your cameras makes "
                   "the check mean more.", err=True)


@app.command()
def doctor(
    bundle: Annotated[Optional[Path], typer.Option(
        help="The bundle to check: its TensorRT engines and OpenVINO checks, whether each matches this machine, "
             "what predict would use (backend and precision, and why); default: the model predict uses without "
             "--bundle.")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Print what this machine can run (Python, ONNX Runtime, torch/CUDA, TensorRT, OpenVINO, GPU, the CPU's bf16 and
    int8 instructions) to paste into an issue."""
    import json

    from trapcls.core.model.bundle import default_bundle
    from trapcls.doctor import collect, render

    report = collect(bundle or default_bundle())
    typer.echo(json.dumps(report, indent=2) if json_out else render(report))


@app.command()
def merge(
    shards: Annotated[list[Path], typer.Argument(help="CSVs written by `trapcls predict --shard K/N` (same model "
                                                      "and format).")],
    out: Annotated[Path, typer.Option(help="The joined CSV to write.")],
) -> None:
    """Join shard CSVs into one, sorted like an unsharded run; refuses mismatched or overlapping shards."""
    from trapcls.predict import merge_csvs

    summary = merge_csvs(shards, out)
    typer.echo(f"{summary.rows} rows from {summary.sources} files -> {summary.out}")


@app.command()
def watch(
    ctx: typer.Context,
    inbox: Annotated[Path, typer.Argument(help="Folder where camera folders (SD-card copies) arrive.")],
    bundle: Annotated[Optional[Path], typer.Option(
        help="Model bundle folder (from `trapcls export onnx` or `trapcls train`); default: $TRAPCLS_BUNDLE, else "
             "the small demonstration model shipped with trapcls.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Where each camera folder's predictions.csv and the journal (.trapcls/) go; default: INBOX.")] = W.out,
    folder_depth: Annotated[int, typer.Option(
        help="Folder levels under INBOX that make a camera folder (one CSV each); 0 = one CSV for everything.")]
    = W.folder_depth,
    settle: Annotated[float, typer.Option(
        help="Seconds a file's size and mtime must stay unchanged before it counts as copied.")] = W.settle,
    rescan_interval: Annotated[float, typer.Option(
        help="Seconds between full rescans that catch files whose events were lost.")] = W.rescan_interval,
    polling: Annotated[bool, typer.Option(
        help="Poll instead of inotify: for network shares (NFS/CIFS), FUSE and exFAT mounts.")] = W.polling,
    poll_interval: Annotated[float, typer.Option(help="Seconds between polls with --polling.")] = W.poll_interval,
    file_events: Annotated[bool, typer.Option(
        help="Use file events (inotify, or polling with --polling); --no-file-events relies on the rescans alone.")]
    = W.file_events,
    events: Annotated[bool, typer.Option(
        "--events", help="Also keep an events.csv next to each predictions.csv: the frames grouped into events "
                         "(see `trapcls events`), the camera folder being the deployment.")] = W.events,
    gap: Annotated[float, typer.Option(
        help="With --events: seconds between two frames that start a new event.")] = W.gap,
    backend: Annotated[BackendName, typer.Option(
        help="Inference engine, as for predict; auto picks the fastest available.")] = BackendName(W.backend),
    batch_size: Annotated[Optional[int], typer.Option(
        help="Images per inference batch; default 8 on a CPU, 32 on a GPU.")] = W.batch_size,
    threads: Annotated[Optional[int], typer.Option(help="CPU inference threads; default: all cores.")] = W.threads,
    workers: Annotated[Optional[int], typer.Option(help="Image decoding threads; default: all cores.")] = W.workers,
    max_attempts: Annotated[int, typer.Option(
        help="Tries per file before it becomes an error row (a changed file starts again).")] = W.max_attempts,
    flush_interval: Annotated[float, typer.Option(
        help="While a card is being processed, rewrite its CSV at most this often (seconds); always at the end.")]
    = W.flush_interval,
    all_csv: Annotated[Optional[Path], typer.Option(
        help="Also append every result to this one CSV, a log (paths relative to INBOX; a file classified "
             "again after it changed gets a second row, while its camera CSV keeps one).")] = W.all_csv,
    blank_threshold: Annotated[Optional[float], typer.Option(
        help=f"is_blank is true when P(blank) >= this. Default: the bundle's certified blank policy if it has "
             f"one, else {DEFAULT_BLANK_THRESHOLD}.")] = W.blank_threshold,
    idle_exit: Annotated[Optional[float], typer.Option(
        help="Exit after this many seconds with nothing to do (for one-off runs); default: run until stopped.")]
    = W.idle_exit,
    min_free: Annotated[float, typer.Option(
        help="MiB that must stay free on --out's disk (and --all-csv's) to take work, so the journal can always "
             "commit; below it the daemon pauses until there is room (0: no reserve).")] = W.min_free,
) -> None:
    """Classify every image that lands in INBOX exactly once and keep each camera folder's predictions.csv current.

    Runs until SIGTERM/Ctrl-C (which finish the current batch, write the CSVs and exit 0). A SQLite
    journal in OUT/.trapcls/ records every file, so a crash or power cut loses nothing: restart and
    it carries on. Under systemd it reports readiness and watchdog pings (see systemd/).
    """
    from trapcls.watch import Watcher

    Watcher(_config(ctx, WatchConfig, bundle=_bundle(bundle))).run()


@app.command()
def status(
    folder: Annotated[Path, typer.Argument(help="The watch's --out folder (default there: the inbox).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Whether the watch runs or is paused (a full or lost disk), backlog, done, errors, last activity, throughput
    and failing files (safe while it runs)."""
    import json
    from datetime import datetime

    from trapcls.core.frames.discover import Unclassified
    from trapcls.watch.daemon import journal_path, state_path
    from trapcls.watch.journal import Journal
    from trapcls.watch.state import daemon_state, describe

    journal = Journal(journal_path(folder), readonly=True)
    try:
        stats = journal.stats()
        unclassified = journal.unclassified()  # videos and other files per camera folder, as the rescans found
    finally:
        journal.close()
    daemon = daemon_state(folder, state_path(folder))
    if json_out:
        typer.echo(json.dumps({"daemon": daemon, **stats, "unclassified": unclassified}, indent=2))
        return
    stamp = stats["last_activity"]
    last = datetime.fromtimestamp(stamp).isoformat(timespec="seconds") if stamp else "never"
    typer.echo(f"daemon: {describe(daemon)}")
    typer.echo(f"backlog: {stats['backlog']}\ndone: {stats['done']}\nerrors: {stats['errors']}\n"
               f"last activity: {last}\nthroughput (last {stats['recent_window_s'] / 60:.0f} min): "
               f"{stats['files_per_s_recent']:.2f} files/s")
    for f in stats["failing"]:
        state = "gave up" if f["status"] == "error" else f"will retry ({f['attempts']} tries so far)"
        typer.echo(f"failing: {f['path']}: {f['error']} [{state}]")
    for name, counts in unclassified.items():
        u = Unclassified(**counts)
        typer.echo(f"not classified: {name}: {u.describe()} ({u.example()}); trapcls classifies still images")


@app.command()
def evaluate(
    ctx: typer.Context,
    predictions: Annotated[list[Path], typer.Argument(
        help="A predictions CSV from `trapcls predict` (field or submission format), or two to compare.")],
    labels: Annotated[Path, typer.Option(
        help="The true labels, in any layout `trapcls train` reads: class folders, a filepath,label[,site] CSV "
             "(a run's split.csv too), a DrivenData folder, or a folder with --label-regex.")],
    label_regex: Annotated[Optional[str], typer.Option(help="Labels from file names, as for train.")]
    = E.label_regex,
    report: Annotated[Optional[Path], typer.Option(
        help="Write one self-contained HTML report (tables, confusion matrix, reliability diagram, galleries of "
             "mistakes) that opens offline in any browser.")] = E.report,
    bundle: Annotated[Optional[Path], typer.Option(help="The model's bundle, summarised in the report.")] = E.bundle,
    blank_threshold: Annotated[float, typer.Option(
        help="Blank-vs-animal scores count a frame as blank when P(blank) >= this.")] = E.blank_threshold,
    blank_miss: Annotated[Optional[float], typer.Option(
        help="Certify a blank threshold: the lowest P(blank) cut-off at which at most this share of animal frames "
             "(e.g. 0.02) would be set aside as blank, with --confidence; exact binomial bound, valid for the "
             "threshold it picks. Needs labelled blank and animal frames.")] = E.blank_miss,
    confidence: Annotated[float, typer.Option(help="Confidence of the --blank-miss guarantee.")] = E.confidence,
    write_bundle: Annotated[Optional[Path], typer.Option(
        help="Store the certified policy in this bundle's bundle.json (the model files are untouched): predict "
             "and watch then use it for is_blank. The predictions must come from this bundle.")] = E.write_bundle,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON instead of tables.")] = False,
) -> None:
    """Score predictions against labels: log loss, accuracy, balanced accuracy, macro-F1, per class and per site.

    With --blank-miss it also certifies a blank threshold (README: "Setting blanks aside safely").
    """
    import json

    from trapcls.evaluate import evaluate as run_evaluate
    from trapcls.evaluate import render_text

    result = run_evaluate(_config(ctx, EvaluateConfig, command=_command_line()))
    typer.echo(json.dumps(result.to_json(), indent=2) if json_out else render_text(result))


FIELD_CSV_HELP = ("A field-format CSV that `trapcls predict` or `trapcls watch` wrote (paths, capture times, "
                  "probabilities).")
GAP_HELP = "Seconds between two frames of a deployment that start a new event (equal times are one event)."
DEPTH_HELP = ("Folders of a frame's path that name its deployment (camera); 1: the top folder. Frames directly "
              "under the root form the deployment '.'.")


@app.command()
def events(
    ctx: typer.Context,
    predictions: Annotated[Path, typer.Argument(help=FIELD_CSV_HELP, metavar="PRED.csv")],
    out: Annotated[Path, typer.Option(help="The events CSV to write (one row per event).")],
    gap: Annotated[float, typer.Option(help=GAP_HELP)] = EV.gap,
    deployment_depth: Annotated[int, typer.Option(help=DEPTH_HELP)] = EV.deployment_depth,
    blank_threshold: Annotated[Optional[float], typer.Option(
        help=f"An event is blank when its P(blank) >= this. Default {DEFAULT_BLANK_THRESHOLD}.")]
    = EV.blank_threshold,
) -> None:
    """Group frames into camera-trap events (the burst one visit produced) with one probability vector each.

    Per deployment, frames are sorted by EXIF capture time and a new event starts after a gap of
    more than --gap seconds; a frame without a capture time is an event of its own (untimed). The
    event is as little blank as its most animal-looking frame; the rest of its probability is
    shared among the classes by the frames' summed evidence (README, "Results for the field").
    """
    from trapcls.results import run_events

    summary = run_events(_config(ctx, EventsConfig))
    blank = "" if summary.blank_events is None else f", {summary.blank_events} blank"
    typer.echo(f"{summary.frames} frames -> {summary.events} events{blank} in {summary.deployments} deployments "
               f"-> {summary.out}")
    if summary.untimed:
        typer.echo(f"note: {summary.untimed} frames have no capture time; each is an event of its own "
                   "(untimed = true).", err=True)
    if summary.unreadable:
        typer.echo(f"note: {summary.unreadable} frames were unreadable; they are counted in their events "
                   "(unreadable) but add no evidence.", err=True)


@app.command()
def convert(
    ctx: typer.Context,
    predictions: Annotated[Path, typer.Argument(help=FIELD_CSV_HELP, metavar="PRED.csv")],
    to: Annotated[ConvertTarget, typer.Option(
        help="megadetector: MegaDetector batch output 1.6 JSON for Timelapse; camtrap-dp: a Camtrap DP 1.0.2 "
             "package (folder) for GBIF, Agouti, camtrapR.")],
    out: Annotated[Path, typer.Option(help="The JSON file (megadetector) or package folder (camtrap-dp) to write.")],
    taxa: Annotated[Optional[Path], typer.Option(
        help="CSV class,scientificName[,observationType,vernacularName,taxonRank]: what each class means. Blank, "
             "human and vehicle classes have defaults; with a file, every animal class must be in it.")] = CV.taxa,
    deployments: Annotated[Optional[Path], typer.Option(
        help="camtrap-dp: CSV deploymentID,latitude,longitude[,deploymentStart,deploymentEnd,...] per deployment; "
             "without it, coordinates are placeholders (0, 0) and dates come from the frames.")] = CV.deployments,
    timezone: Annotated[Optional[str], typer.Option(
        help="camtrap-dp: the cameras' clock zone, an IANA name (Africa/Maputo) or an offset (+02:00); EXIF "
             "times carry none.")] = CV.timezone,
    gap: Annotated[float, typer.Option(help=GAP_HELP + " (camtrap-dp event observations)")] = CV.gap,
    deployment_depth: Annotated[int, typer.Option(help=DEPTH_HELP)] = CV.deployment_depth,
    blank_threshold: Annotated[Optional[float], typer.Option(
        help=f"A frame or event is blank when P(blank) >= this. Default {DEFAULT_BLANK_THRESHOLD}.")]
    = CV.blank_threshold,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = CV.overwrite,
) -> None:
    """Convert a field CSV for the tools field work continues in: Timelapse (MegaDetector JSON) or Camtrap DP."""
    from trapcls.results import run_convert

    summary = run_convert(_config(ctx, ConvertConfig))
    events = f", {summary.events} events" if summary.events else ""
    typer.echo(f"{summary.frames} frames{events} -> {summary.out} ({summary.to})")
    for note in summary.notes:
        typer.echo(f"note: {note}", err=True)


@app.command()
def adapt(
    ctx: typer.Context,
    predictions: Annotated[Path, typer.Argument(help=FIELD_CSV_HELP, metavar="PRED.csv")],
    out: Annotated[Path, typer.Option(help="The adapted field CSV to write (same columns, corrected probabilities).")],
    bundle: Annotated[Optional[Path], typer.Option(
        help="The bundle that wrote the predictions (its training class frequencies are the starting priors); "
             "default: $TRAPCLS_BUNDLE, else the shipped model.")] = None,
    deployment_depth: Annotated[int, typer.Option(help=DEPTH_HELP)] = AD.deployment_depth,
    min_frames: Annotated[int, typer.Option(
        help="Deployments with fewer readable frames are left as they are.")] = AD.min_frames,
    prior_strength: Annotated[float, typer.Option(
        help="Pseudo-frames pulling each estimate towards the training priors (0: plain EM).")] = AD.prior_strength,
    blank_threshold: Annotated[Optional[float], typer.Option(
        help="is_blank in the adapted CSV; default: the bundle's policy, else "
             f"{DEFAULT_BLANK_THRESHOLD}.")] = AD.blank_threshold,
    report: Annotated[Optional[Path], typer.Option(
        help="JSON of the estimated priors per deployment; default: OUT with .priors.json.")] = AD.report,
) -> None:
    """Re-estimate each deployment's class priors from its own frames (EM, Saerens et al. 2002) and correct them.

    Every camera sees its own species mix; the model's probabilities carry its training mix. The
    estimate is damped by --prior-strength and skipped below --min-frames (README, "Per-camera priors").
    """
    from trapcls.results import run_adapt

    summary = run_adapt(_config(ctx, AdaptConfig, bundle=_bundle(bundle)))
    names = summary.classes
    typer.echo(f"{'deployment':<24}{'frames':>8}  estimated priors (training prior), top 3")
    for e in summary.estimates:
        top = sorted(range(len(names)), key=lambda i: -e.prior[i])[:3]
        mix = ", ".join(f"{names[i]} {e.prior[i]:.2f} ({summary.training_prior[i]:.2f})" for i in top)
        typer.echo(f"{e.deployment[:23]:<24}{e.frames:>8}  {mix if e.adapted else 'not adapted: ' + e.reason}")
    typer.echo(f"-> {summary.out}; priors in {summary.report}")
    for note in summary.notes:
        typer.echo(f"note: {note}", err=True)


def _plain(value: Any) -> Any:
    """A choice option's value as the library's plain string."""
    return value.value if isinstance(value, enum.Enum) else value


def _options(ctx: typer.Context, cls: type, *, typed_only: bool = False) -> dict[str, Any]:
    """This command's options named after fields of `cls`, choices as plain strings; with `typed_only`
    only those the user typed (or set in the environment), which take precedence over a config file."""
    names = {f.name for f in dataclasses.fields(cls)}
    # By name: typer may bring its own copy of click, whose ParameterSource is another enum than click's.
    typed = {"COMMANDLINE", "ENVIRONMENT"}
    return {k: _plain(v) for k, v in ctx.params.items()
            if k in names and (not typed_only or getattr(ctx.get_parameter_source(k), "name", None) in typed)}


def _config(ctx: typer.Context, cls: type, **values: Any):
    """`cls` built from this command's options of the same names, then `values`."""
    return cls(**{**_options(ctx, cls), **values})


def _frames(folder: Path | None, limit: int | None) -> list[Path] | None:
    """The first `limit` (None: all) images under a folder option, or None when the option was not given."""
    if folder is None:
        return None
    from trapcls.core.frames.discover import discover_images

    return [f.path for f in discover_images([folder])][:limit]


def _bundle(given: Path | None) -> Path:
    """--bundle, else $TRAPCLS_BUNDLE, else the shipped default model; says which on stderr."""
    from trapcls.core.model.bundle import resolve_bundle

    path, source = resolve_bundle(given)
    if source != "--bundle":
        typer.echo(f"model: {path} ({source})", err=True)
    return path


def _command_line() -> str:
    """This invocation as one shell-quoted line, for reports."""
    import shlex

    return "trapcls " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# What is kept when a command stops on a full or unwritable disk, for `main`'s one-line message.
_KEPT_ON_DISK_ERROR = {
    "predict": "the rows written so far are kept, and the command resumes after them",
    "train": "add --resume to carry on after the last saved epoch (or --overwrite to start over if none was)",
    "watch": "its journal keeps every finished result",
}


def _flag(field: str) -> str:
    """The flag of the config field `field` in the command this process runs (from its typer declaration)."""
    command = typer.main.get_command(app)
    for word in sys.argv[1:]:
        sub = getattr(command, "commands", {}).get(word)
        if sub is not None:
            command = sub
    for param in getattr(command, "params", []):
        if param.name == field:
            return max(param.opts, key=len) if param.opts and param.opts[0].startswith("-") else param.name.upper()
    return "--" + field.replace("_", "-")


def main() -> None:
    """Console-script entry point: typer handles usage errors (exit 2); TrapclsError exits 1, and so does a
    write that failed because the disk is full, read-only or gone (one line naming the file, no traceback)."""
    try:
        app()
    except OptionError as exc:  # a bad option value, wherever it was found: bad usage, like typer's own checks
        logging.getLogger(__name__).debug("the traceback behind the error below:", exc_info=True)
        typer.echo(f"error: Invalid value for '{_flag(exc.field)}': {exc.render(_flag)}.", err=True)
        sys.exit(2)
    except TrapclsError as exc:
        # --verbose (debug logging) shows what led to it, for bug reports; the message stays one line.
        logging.getLogger(__name__).debug("the traceback behind the error below:", exc_info=True)
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (OSError, sqlite3.Error) as exc:  # only those of the storage itself; anything else is a bug
        from trapcls.core.system.fsutil import KEPT, storage_fault, write_error

        if storage_fault(exc) is None or getattr(exc, "errno", None) in (errno.ENOENT, errno.ENOTDIR):
            raise  # a missing file is more likely a bug than a vanished disk here
        logging.getLogger(__name__).debug("the traceback behind the error below:", exc_info=True)
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        typer.echo(f"error: {write_error(exc, kept=_KEPT_ON_DISK_ERROR.get(command, KEPT))}", err=True)
        sys.exit(1)
