"""The ``onnxcam eval`` command (registered in :mod:`onnxcam.cli`): metrics per method, as a table,
JSON, or a report folder."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from onnxcam.commands import check_model_file, preprocessing, run_interruptibly, write_outputs
from onnxcam.contract import is_explain_model
from onnxcam.errors import OnnxCamError
from onnxcam.evaluation.perturb import ROAD_FRACTIONS, VariantPlan
from onnxcam.evaluation.runner import DELETION_SUBSTRATES, EvalInputs, evaluate_method, random_reference
from onnxcam.evaluation.sanity import THRESHOLD
from onnxcam.evaluation.summary import report_metrics, text_table
from onnxcam.io.annotations import MaskFolder, read_boxes
from onnxcam.io.files import OutputSet, write_atomically
from onnxcam.io.images import collect_images
from onnxcam.methodset import build_explainers, parse_methods, read_truth_option, shared_options
from onnxcam.report.command import EVAL_NAME
from onnxcam.report.page import REPORT_NAME, write_report

__all__ = ["eval_command"]

log = logging.getLogger("onnxcam")


@click.command("eval")
@shared_options("gradcam")
@click.option("--boxes", "boxes_file", type=click.Path(dir_okay=False), default=None, metavar="BOXES.csv",
              help="Object boxes, image,x0,y0,x1,y1 lines in the image's pixels: adds the pointing games.")
@click.option("--masks", "masks_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Object masks DIR/NAME.png for the images NAME.* (non-zero = object): adds the pointing games.")
@click.option("--sanity", is_flag=True,
              help="Also run the model-randomisation check (maps from random weights; Spearman's ρ, FAIL above "
                   f"{THRESHOLD}).")
@click.option("--curve-steps", type=click.IntRange(2), default=20, show_default=True,
              help="Points of the deletion and insertion curves after the first (1/K of the pixels each).")
@click.option("--deletion-to", type=click.Choice(DELETION_SUBSTRATES), default="blur", show_default=True,
              help="What deleted pixels become: the blurred image, a black image or zeros (after pre-processing).")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as one JSON document on stdout.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also write OUTDIR/eval.json and OUTDIR/index.html (the report's evaluation section).")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist.")
def eval_command(model, inputs, methods, labels_file, batch_size, provider, passes_batch, boxes_file, masks_dir,
                 sanity, curve_steps, deletion_to, as_json, out_dir, overwrite, labels, preset, size, color, scale,
                 mean, std, layer, task, score, layout, input_shape, output_name, threshold, blank, background):
    """Score how faithful each method's maps are on the images INPUTS (a classifier MODEL).

    Deletion and insertion AUCs, Average Drop and Increase in Confidence, ROAD (most and least
    relevant first), pointing games with --boxes or --masks, the randomisation check with --sanity. Targets:
    the true labels of --labels-file, else the top-1 class.
    """
    from onnxcam.graph import load_model

    check_model_file(model)
    chosen = parse_methods(methods)
    out = Path(out_dir) if out_dir else None
    images = collect_images(inputs, exclude=out)
    truth = read_truth_option(labels_file)
    boxes = read_boxes(boxes_file) if boxes_file else None
    masks = MaskFolder(masks_dir) if masks_dir else None
    plain = load_model(model)
    if is_explain_model(plain):
        raise OnnxCamError(f"'{model}' is an explain model; eval exports each method itself: give the plain model")
    pre = preprocessing(model, labels, preset, size, color, scale, mean, std)
    export = (layer, task, score, layout, input_shape, output_name, threshold, blank, background)
    explainers = build_explainers(model, chosen, pre, provider, passes_batch, *export)
    outputs = OutputSet(out, [EVAL_NAME, REPORT_NAME], overwrite) if out else None
    plan = VariantPlan(steps=curve_steps)

    def explainer_for(proto, method):
        return build_explainers(proto, [method], pre, provider, passes_batch, *export)[method]

    def work():
        first = next(iter(explainers.values()))
        inputs_ = EvalInputs(first, images, batch_size, truth, boxes, deletion_to, masks)
        quiet = log.getEffectiveLevel() > logging.INFO
        results = []
        with click.progressbar(length=(len(chosen) + 1) * len(images) * plan.count, label="evaluating",
                               file=sys.stderr, hidden=quiet) as bar:
            for method in chosen:
                results.append(evaluate_method(explainers[method], inputs_, plan, bar.update,
                                               explainer_for if sanity else None, plain).as_dict())
            results.append(random_reference(first, inputs_, plan, bar.update).as_dict())
        return _document(model, images, plan, results, truth is not None, deletion_to)

    def cancel():
        for explainer in explainers.values():
            explainer.cancel()

    if outputs is None:
        document = run_interruptibly(work, cancel)
    else:
        document = write_outputs(outputs, work, cancel, lambda doc: _stage(outputs, doc, model))
    if as_json:
        click.echo(json.dumps(document, allow_nan=False))
    else:
        click.echo(text_table(document["methods"]))
        for note in document["notes"]:
            click.echo(note)


def _document(model, images, plan: VariantPlan, methods: list[dict], true_targets: bool, deletion_to: str) -> dict:
    substrate = {"blur": "a blurred copy", "black": "a black image", "zero": "zeros"}[deletion_to]
    return {"model": str(model), "images": len(images), "targets": "true labels" if true_targets else "top-1 class",
            "curve_steps": plan.steps, "deletion_to": deletion_to, "road_fractions": list(ROAD_FRACTIONS),
            "methods": methods,
            "notes": [f"targets: the {'true labels' if true_targets else 'top-1 class'}; probabilities of the target "
                      f"class; deletion to {substrate}, insertion from a blurred copy, {plan.steps} steps; ROAD at "
                      f"{', '.join(f'{f:g}' for f in ROAD_FRACTIONS)} of the pixels; ms/image = the maps' cost; "
                      "random map = i.i.d. uniform maps, the reference a method must beat"]}


def _stage(outputs: OutputSet, document: dict, model) -> None:
    write_atomically(outputs.path(EVAL_NAME), json.dumps(document, allow_nan=False, indent=1).encode())
    write_report(outputs.path(REPORT_NAME), [], outputs.out, metrics=report_metrics(document),
                 title=f"onnxcam eval: {Path(model).name}")
