"""Several CAM methods over the same images, for ``onnxcam compare`` and ``onnxcam eval``: the
``--methods`` option, the options both share, and one explainer per method built alike."""

from __future__ import annotations

import click

from onnxcam.commands import PassesBatch, _export_options, _model_options, preprocess_options, run_interruptibly
from onnxcam.errors import OnnxCamError
from onnxcam.io.annotations import read_truth
from onnxcam.methods import AUTO, get_method, method_names
from onnxcam.runtime import PROVIDER_CHOICES

__all__ = ["parse_methods", "shared_options", "build_explainers", "read_truth_option"]


def parse_methods(text: str) -> list[str]:
    """Method names from "a,b,c" ("all": every method), each known (or "auto", run's default, resolved per
    model), none twice."""
    names = method_names() if text.strip() == "all" else [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise OnnxCamError("--methods is empty; give method names separated by commas (or 'all')")
    for name in names:
        if name != AUTO:
            get_method(name)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise OnnxCamError(f"--methods names {', '.join(repeated)} twice; give each method once")
    return names


def shared_options(default_methods: str):
    """The options of the multi-method commands: model, images, methods, batching, pre-processing, truth."""
    def decorate(func):
        options = [
            click.argument("model", type=click.Path(dir_okay=False)),
            click.argument("inputs", nargs=-1, required=True, type=click.Path()),
            click.option("--methods", default=default_methods, show_default=True, metavar="A,B,...|all",
                         help=f"CAM methods, separated by commas: {', '.join(method_names())}, or auto "
                              "(run's default)."),
            click.option("--labels-file", type=click.Path(dir_okay=False), default=None, metavar="TRUTH.csv",
                         help="True labels, one image,label line per image (label: a class name or index)."),
            click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True),
            click.option("--provider", type=click.Choice(PROVIDER_CHOICES), default="auto", show_default=True,
                         help="auto = CUDA when usable, else CPU."),
            click.option("--passes-batch", type=PassesBatch(), default="auto", show_default=True,
                         help="Perturbed, masked or ablated images per ONNX Runtime call; auto = as many as fit a "
                              "quarter of the free memory (at most 4 GiB; 2 GiB on CUDA)."),
        ]
        func = _model_options(preprocess_options(func))
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def read_truth_option(path):
    return read_truth(path) if path else None


def build_explainers(model, methods: list[str], pre, provider, passes_batch, layer, task, score, layout,
                     input_shape, output_name, threshold, blank, background) -> dict:
    """One :class:`~onnxcam.Explainer` per method, with the same model options and pre-processing."""
    from onnxcam.explainer import Explainer

    options = _export_options(task, score, layout, input_shape, output_name, threshold, blank, background)
    return {method: run_interruptibly(lambda m=method: Explainer(
        model, layer=list(layer), method=m, provider=provider, preprocess=pre, passes_batch=passes_batch, **options),
        cancel=lambda: None, grace_s=0.2) for method in methods}
