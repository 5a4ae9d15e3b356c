"""`trapcls train`: fine-tune a timm model on labelled images into a run folder and a verified bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trapcls.cli.options import DetectionThreshold, choices, command_line, options, show
from trapcls.core.system.exceptions import TrapclsError
from trapcls.export import parse_targets
from trapcls.training.config import AUGMENTS, BALANCES, DEFAULT_LR, GROUP_BY, OPTIMIZERS, TrainConfig

Optimizer = choices("Optimizer", OPTIMIZERS)
Augment = choices("Augment", AUGMENTS)
Balance = choices("Balance", BALANCES)
GroupBy = choices("GroupBy", GROUP_BY)
T = TrainConfig  # the defaults: a field's default is its class attribute


def _export_targets(value: str) -> str:
    """--export checked at parse time, so a typo is a usage error (exit 2) before anything starts."""
    try:
        parse_targets(value)
    except TrapclsError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


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
    folds: Annotated[int, typer.Option(help="k-fold cross-validation by group: the number of folds (0 = off). "
                                            "Every fold trains into OUT/fold-k/, then OUT/oof.csv holds the "
                                            "out-of-fold predictions (trapcls oof).")]
    = T.folds,
    fold: Annotated[Optional[int], typer.Option(
        help="Train only this fold (1..--folds) into OUT/fold-k/: what one task of a cluster array runs; "
             "`trapcls oof OUT` joins the folds [default: every fold, one after another].")] = T.fold,
    label_regex: Annotated[Optional[str], typer.Option(
        help="Label images by file name: a regex whose first (or 'label') group is the class, "
             "e.g. '(.+)_\\d+\\.jpg$'.")]
    = T.label_regex,
    detections: Annotated[Optional[Path], typer.Option(
        help="Train on detector crops: MegaDetector's batch-output JSON for DATA's frames. One sample per animal "
             "box at or above the detection threshold, labelled with its frame's label; blank frames give their "
             "false-positive boxes, or the whole frame when they have none; frames with no box are left out "
             "(counted). The bundle records the crop geometry.")] = T.detections,
    detection_threshold: DetectionThreshold = T.detection_threshold,
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
    from trapcls.folds import run_folds
    from trapcls.training.config import train_config
    from trapcls.workflow import run_train

    if data is None and config is None:
        raise typer.BadParameter("give the training data, or --config with a file that names it.", param_hint="DATA")
    flags = options(ctx, TrainConfig, typed_only=True)
    if no_export:
        flags["export"] = "none"
    settings = train_config({**flags, "command": command_line()}, config_file=config)
    result = (run_folds if settings.folds else run_train)(settings, show_progress=True)
    show(result.lines())


def oof(
    folds: Annotated[Path, typer.Argument(help="The --out of `trapcls train --folds K` (its fold-k/ folders).")],
    out: Annotated[Optional[Path], typer.Option(help="The out-of-fold CSV to write [default: FOLDS/oof.csv].")]
    = None,
    tta: Annotated[bool, typer.Option(help="Average each frame with its horizontal mirror, as predict --tta (use "
                                           "it if the test predictions use it).")] = False,
    batch_size: Annotated[Optional[int], typer.Option(help="Frames per inference batch [default: predict's].")]
    = None,
) -> None:
    """Join a fold set: every training frame with the probabilities of the fold model that did not train on it
    (id,<classes>,fold,model), the CV scores with their standard errors overall, per fold and per site, and
    FOLDS/bundle, the fold models averaged for the test set (its model id is the `model` column)."""
    from trapcls.oof import OofConfig, run_oof

    if batch_size is not None and batch_size < 1:
        raise typer.BadParameter(f"must be at least 1, got {batch_size}", param_hint="--batch-size")
    show(run_oof(OofConfig(folds=folds, out=out or folds / "oof.csv", tta=tta, batch_size=batch_size)).lines())
