"""The ``onnxcam`` command: the group, its error handling, and lazy loading of the commands.

The commands live in :mod:`onnxcam.commands` and are imported only when one runs (or help lists
them), so ``onnxcam --version`` loads neither ONNX, ONNX Runtime nor OpenCV. Domain errors
(``OnnxCamError``) become one-line messages and exit code 1 here, and only here.
"""

from __future__ import annotations

import logging
import sys
from importlib import import_module

import click

from onnxcam.errors import OnnxCamError
from onnxcam.version import __version__

__all__ = ["main", "cli", "COMMANDS"]

log = logging.getLogger("onnxcam")

COMMANDS = ("run", "export", "layers", "ops", "report", "compare", "eval", "bench")
# commands defined outside onnxcam.commands: name -> (module, attribute)
_ELSEWHERE = {"report": ("onnxcam.report.command", "report"), "compare": ("onnxcam.report.command", "compare"),
              "eval": ("onnxcam.evaluation.command", "eval_command"), "bench": ("onnxcam.bench", "bench")}


class _Commands(click.Group):
    """Loads the commands on first use, and turns onnxcam's errors into ``Error: ...`` and exit code 1."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute = _ELSEWHERE.get(name, ("onnxcam.commands", name))
        return getattr(import_module(module), attribute)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OnnxCamError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C outside a run's ONNX Runtime calls (loading, exporting)
            click.echo("Error: interrupted by SIGINT; nothing was written", err=True)
            raise click.exceptions.Exit(130) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxcam")
@click.option("-q", "--quiet", is_flag=True, help="Only print warnings and errors.")
@click.option("-v", "--verbose", is_flag=True, help="Print debug details.")
def cli(quiet: bool, verbose: bool):
    """Grad-CAM heatmaps for ONNX image models, computed inside the ONNX graph."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("onnxcam: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main() -> None:
    cli(prog_name="onnxcam")
