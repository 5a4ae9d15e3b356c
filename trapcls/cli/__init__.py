"""The `trapcls` command line: each command turns its options into a config and calls one library function.

One module per command group (train, export, predict, watch, evaluate, results, doctor); the options several
commands share are declared once in `options`, and how a command stops (exit 0, 1, 2 or 130, and the one
line it prints) is decided once in `errors`, for all of them. No default is written here: each option's
default is read from its config class (trapcls.*.config). Only the config modules are imported up front,
so `trapcls --help` loads neither numpy nor any model runtime.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Optional

import typer

from trapcls import __version__
from trapcls.cli import doctor, ensemble, errors, evaluate, export, predict, results, train, watch
from trapcls.core.system.exceptions import TrapclsError

app = typer.Typer(
    name="trapcls",
    help="Offline camera-trap image classifier: train, export, and classify folders of frames into CSVs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
export_app = typer.Typer(help="Turn a trained checkpoint into a deployable model bundle; build and check it on the "
                              "device that runs it (tensorrt, openvino).", no_args_is_help=True)
ensemble_app = typer.Typer(help="Combine models: fit weights on their out-of-fold predictions, apply them to test "
                                "predictions as a submission.", no_args_is_help=True)

# (group, name, function): every command, in the order --help lists them.
COMMANDS = (
    (app, "train", train.train),
    (app, "oof", train.oof),
    (export_app, "onnx", export.onnx),
    (export_app, "tensorrt", export.tensorrt),
    (export_app, "openvino", export.openvino),
    (app, "predict", predict.predict),
    (app, "merge", predict.merge),
    (app, "watch", watch.watch),
    (app, "status", watch.status),
    (app, "evaluate", evaluate.evaluate),
    (ensemble_app, "fit", ensemble.fit),
    (ensemble_app, "apply", ensemble.apply),
    (app, "events", results.events),
    (app, "convert", results.convert),
    (app, "adapt", results.adapt),
    (app, "doctor", doctor.doctor),
)
for group, name, function in COMMANDS:
    group.command(name)(errors.guarded(name, function))
app.add_typer(export_app, name="export")
app.add_typer(ensemble_app, name="ensemble")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trapcls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail, and the traceback behind "
                                                                  "an error.")] = False,
) -> None:
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)


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
    """The console script and `python -m trapcls`: the app under the one error contract (trapcls.cli.errors)."""
    with errors.logging_to_stderr():
        try:
            app()
        except TrapclsError as exc:
            sys.exit(errors.exit_status(exc, _flag))
