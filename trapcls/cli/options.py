"""Options more than one command takes, declared once, and the way every command turns its options into a config.

Each alias is a type with its flag and help; the default stays in the command's signature and is read
from the config class (`batch_size: BatchSize = RunOptions.batch_size`), so no default is written here.
Choice types are built from the libraries' own tables, so the CLI offers exactly what they know.
Only the config modules are imported up front: `trapcls --help` loads neither numpy nor a model runtime.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from trapcls.core.model.blank import DEFAULT_BLANK_THRESHOLD
from trapcls.core.system.names import display
from trapcls.predict.config import BACKEND_NAMES


def choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A typer choice type from a library's table."""
    return enum.Enum(name, {value: value for value in values}, type=str)


BackendName = choices("BackendName", ("auto", *BACKEND_NAMES))

# --- the model -----------------------------------------------------------------------------------------
RunBundle = Annotated[Optional[Path], typer.Option(
    "--bundle", help="Model bundle folder (from `trapcls export onnx` or `trapcls train`); default: $TRAPCLS_BUNDLE, "
                     "else the small demonstration model shipped with trapcls.")]
WriterBundle = Annotated[Optional[Path], typer.Option(
    "--bundle", help="The bundle that wrote the predictions, for its certified blank policy; default: "
                     "$TRAPCLS_BUNDLE or the shipped model when it is the model named in the CSV.")]
BlankThreshold = Annotated[Optional[float], typer.Option(
    "--blank-threshold", help=f"is_blank is true when P(blank) >= this (an event's: its most animal-looking "
                              f"frame's). Default: the model's certified blank policy if it has one (see evaluate "
                              f"--blank-miss), else {DEFAULT_BLANK_THRESHOLD}.")]

# --- detector boxes (predict, train) ---------------------------------------------------------------------
DetectionThreshold = Annotated[Optional[float], typer.Option(
    "--detection-threshold", help="With --detections: the detector confidence a box needs to be used (at or "
                                  "above it) [default: the file's typical_detection_threshold, else 0.2].")]

# --- running the model (predict, watch) ------------------------------------------------------------------
Backend = Annotated[BackendName, typer.Option(
    "--backend", help="Inference engine; auto picks the fastest available and says which. openvino (CPU) runs bf16 "
                      "only where `trapcls export openvino` verified it on this CPU, else f32, and says why; auto "
                      "picks it on a CPU box only where such a check passed.")]
BatchSize = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Images per inference batch; default 8 on a CPU, 32 on a GPU.")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU inference threads, each running its own batch; default: all cores.")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Image decoding threads; default: all cores.")]
VideoFps = Annotated[float, typer.Option(
    "--video-fps", help="Video clips: frames sampled per second of video (the first frame always).")]
VideoMaxFrames = Annotated[Optional[int], typer.Option(
    "--video-max-frames", help="Video clips: at most this many frames per clip, spread evenly over it.")]
VideoTimeout = Annotated[float, typer.Option(
    "--video-timeout", help="Video clips: seconds one clip's decoding may take, plus 2 per second of clip, before "
                            "it becomes an error row.")]

# --- reading a field CSV (events, convert, adapt) ---------------------------------------------------------
FieldCsv = Annotated[Path, typer.Argument(
    help="A field-format CSV that `trapcls predict` or `trapcls watch` wrote (paths, capture times, probabilities).",
    metavar="PRED.csv")]
Gap = Annotated[float, typer.Option(
    "--gap", help="Seconds between two frames of a deployment that start a new event (equal times are one event): "
                  "the events of `trapcls events`, Camtrap DP observations, watch --events.")]
DeploymentDepth = Annotated[int, typer.Option(
    "--deployment-depth", help="Folders of a frame's path that name its deployment (camera); 1: the top folder. "
                               "Frames directly under the root form the deployment '.'.")]

# --- output ----------------------------------------------------------------------------------------------
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def options(ctx: typer.Context, cls: type, *, typed_only: bool = False) -> dict[str, Any]:
    """This command's options named after fields of `cls`, choices as plain strings; with `typed_only` only those
    the user typed (or set in the environment), which take precedence over a config file."""
    names = {f.name for f in dataclasses.fields(cls)}
    # By name: typer may bring its own copy of click, whose ParameterSource is another enum than click's.
    typed = {"COMMANDLINE", "ENVIRONMENT"}
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in ctx.params.items()
            if k in names and (not typed_only or getattr(ctx.get_parameter_source(k), "name", None) in typed)}


def config(ctx: typer.Context, cls: type, **values: Any):
    """`cls` built from this command's options of the same names, then `values`."""
    return cls(**{**options(ctx, cls), **values})


def run_bundle(given: Path | None) -> Path:
    """--bundle, else $TRAPCLS_BUNDLE, else the shipped default model; says which on stderr."""
    from trapcls.core.model.bundle import resolve_bundle

    path, source = resolve_bundle(given)
    if source != "--bundle":
        typer.echo(f"model: {path} ({source})", err=True)
    return path


def frames(folder: Path | None, limit: int | None) -> list[Path] | None:
    """The first `limit` (None: all) images under a folder option, or None when the option was not given."""
    if folder is None:
        return None
    from trapcls.core.frames.discover import discover_images

    return [f.path for f in discover_images([folder])][:limit]


def command_line() -> str:
    """This invocation as one shell-quoted line, for reports."""
    import shlex

    return "trapcls " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def show(lines: list[str], notices: list[str] = ()) -> None:
    """A result's lines on stdout, then what the user should know besides on stderr (a file name whose bytes
    are not UTF-8 shown with \\x escapes: a strict stdout could not write it)."""
    for line in lines:
        typer.echo(display(line))
    for line in notices:
        typer.echo(display(line), err=True)
