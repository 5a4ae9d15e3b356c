"""`trapcls events`, `convert` and `adapt`: a field CSV into events, into the formats field work continues in, and
corrected for each camera's own species mix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trapcls.cli.options import (
    BlankThreshold,
    DeploymentDepth,
    FieldCsv,
    Gap,
    WriterBundle,
    choices,
    config,
    run_bundle,
    show,
)
from trapcls.results.config import TARGETS, AdaptConfig, ConvertConfig, EventsConfig

ConvertTarget = choices("ConvertTarget", TARGETS)
# The defaults: a field's default is its class attribute.
EV, CV, AD = EventsConfig, ConvertConfig, AdaptConfig


def events(
    ctx: typer.Context,
    predictions: FieldCsv,
    out: Annotated[Path, typer.Option(help="The events CSV to write (one row per event).")],
    gap: Gap = EV.gap,
    deployment_depth: DeploymentDepth = EV.deployment_depth,
    bundle: WriterBundle = EV.bundle,
    blank_threshold: BlankThreshold = EV.blank_threshold,
) -> None:
    """Group frames into camera-trap events (the burst one visit produced) with one probability vector each.

    Per deployment, frames are sorted by EXIF capture time and a new event starts after a gap of
    more than --gap seconds; a frame without a capture time is an event of its own (untimed). The
    event is as little blank as its most animal-looking frame; the rest of its probability is
    shared among the classes by the frames' summed evidence (docs/results.md).
    """
    from trapcls.results import run_events

    summary = run_events(config(ctx, EventsConfig))
    show(summary.lines(), summary.notices())


def convert(
    ctx: typer.Context,
    predictions: FieldCsv,
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
    gap: Gap = CV.gap,
    deployment_depth: DeploymentDepth = CV.deployment_depth,
    bundle: WriterBundle = CV.bundle,
    blank_threshold: BlankThreshold = CV.blank_threshold,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = CV.overwrite,
    boxes: Annotated[Optional[Path], typer.Option(
        help="A detection run (predict --detections): its boxes CSV (predict --boxes-out); default: PRED.boxes.csv "
             "beside PRED.csv.")] = CV.boxes,
    detections: Annotated[Optional[Path], typer.Option(
        help="A detection run: the MegaDetector JSON predict read. Needed for --to megadetector (every box, those "
             "below the detection threshold too, and the detector are carried over); checked against the boxes "
             "CSV.")] = CV.detections,
) -> None:
    """Convert a field CSV for the tools field work continues in: Timelapse (MegaDetector JSON) or Camtrap DP.

    A detection run's CSV (predict --detections) is exported box by box: per-box classifications in the
    MegaDetector JSON, one observation with its bbox per box in Camtrap DP (docs/results.md).
    """
    from trapcls.results import run_convert

    summary = run_convert(config(ctx, ConvertConfig))
    show(summary.lines(), summary.notices())


def adapt(
    ctx: typer.Context,
    predictions: FieldCsv,
    out: Annotated[Path, typer.Option(help="The adapted field CSV to write (same columns, corrected probabilities).")],
    bundle: Annotated[Optional[Path], typer.Option(
        help="The bundle that wrote the predictions (its training class frequencies are the starting priors); "
             "default: $TRAPCLS_BUNDLE, else the shipped model.")] = None,
    deployment_depth: DeploymentDepth = AD.deployment_depth,
    min_frames: Annotated[int, typer.Option(
        help="Deployments with fewer readable frames are left as they are.")] = AD.min_frames,
    prior_strength: Annotated[float, typer.Option(
        help="Pseudo-frames pulling each estimate towards the training priors (0: plain EM).")] = AD.prior_strength,
    blank_threshold: BlankThreshold = AD.blank_threshold,
    report: Annotated[Optional[Path], typer.Option(
        help="JSON of the estimated priors per deployment; default: OUT with .priors.json.")] = AD.report,
) -> None:
    """Re-estimate each deployment's class priors from its own frames (EM, Saerens et al. 2002) and correct them.

    Every camera sees its own species mix; the model's probabilities carry its training mix. The
    estimate is damped by --prior-strength and skipped below --min-frames (docs/blanks.md).
    """
    from trapcls.results import run_adapt

    summary = run_adapt(config(ctx, AdaptConfig, bundle=run_bundle(bundle)))
    show(summary.lines(), summary.notices())
