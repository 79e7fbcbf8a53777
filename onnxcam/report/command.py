"""The ``onnxcam report`` and ``onnxcam compare`` commands (registered in :mod:`onnxcam.cli`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from onnxcam.commands import (_explain_all, _output_names, check_model_file, preprocessing, stage_results,
                              write_outputs)
from onnxcam.errors import InputError, OutputError
from onnxcam.io.files import OutputSet
from onnxcam.io.images import collect_images
from onnxcam.io.records import TaskOutputs
from onnxcam.io.render import COLORMAPS
from onnxcam.methodset import build_explainers, parse_methods, read_truth_option, shared_options
from onnxcam.report.page import REPORT_NAME, read_records, write_report

__all__ = ["report", "compare", "EVAL_NAME"]

log = logging.getLogger("onnxcam")

EVAL_NAME = "eval.json"


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None, metavar="TRUTH.csv",
              help="True labels (image,label lines) for the disagreements view.")
@click.option("--title", default=None, help="The page's title (default: the folder's name).")
@click.option("--overwrite", is_flag=True, help="Replace OUTDIR/index.html if it exists.")
def report(out_dir, labels_file, title, overwrite):
    """Write OUT_DIR/index.html, the HTML report of a folder written by 'run', 'compare' or 'eval -o'."""
    out = Path(out_dir)
    target = out / REPORT_NAME
    if target.exists() and not overwrite:
        raise OutputError(f"'{target}' exists; pass --overwrite to replace it")
    metrics = read_metrics(out)
    records = read_records(out) if (out / "results.jsonl").is_file() or metrics is None else []
    write_report(target, records, out, truth=read_truth_option(labels_file), metrics=metrics,
                 title=title or f"onnxcam report: {out.resolve().name}")
    click.echo(f"wrote {target} ({len(records)} record(s){', with the evaluation' if metrics else ''})")
    if not names_overlays(records):
        click.echo("note: the records name no overlays (written with 'run --no-overlay'), so the page shows the images "
                   "and predictions without maps; run again without --no-overlay to see them", err=True)


def names_overlays(records: list[dict]) -> bool:
    """Whether the explained records name overlay pictures (True when none was explained)."""
    explained = [r for r in records if r.get("status", "ok") == "ok"]
    return not explained or any(r.get("overlay") or r.get("image_overlay") for r in explained)


def read_metrics(out: Path) -> dict | None:
    """The report's evaluation section from OUTDIR/eval.json, if 'onnxcam eval -o' wrote one."""
    from onnxcam.evaluation.summary import report_metrics

    path = out / EVAL_NAME
    if not path.is_file():
        return None
    try:
        return report_metrics(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"'{path}' is not an evaluation written by 'onnxcam eval -o' ({exc}); run it again") from None


@click.command()
@shared_options("gradcam,gradcampp,scorecam")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True, help="Top-k classes to report per image.")
@click.option("--colormap", type=click.Choice(list(COLORMAPS)), default="jet", show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Heatmap opacity in overlays.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist.")
@click.option("--skip-bad", is_flag=True, help="Record an image that cannot be explained and go on (exit code 1).")
def compare(model, inputs, methods, labels_file, batch_size, provider, passes_batch, out_dir, topk, colormap, alpha,
            overwrite, skip_bad, labels, preset, size, color, scale, mean, std, layer, task, score, layout,
            input_shape, output_name, threshold, blank, background):
    """Explain the images INPUTS with each of --methods; write their overlays and one report, methods side by side.

    Per image and method: NAME.METHOD.overlay.png and NAME.METHOD.cam.png; results.jsonl has one
    record per image and method; index.html shows one grid per image.
    """
    check_model_file(model)
    chosen = parse_methods(methods)
    out = Path(out_dir)
    images = collect_images(inputs, exclude=out)
    names = _output_names(images)
    truth = read_truth_option(labels_file)
    pre = preprocessing(model, labels, preset, size, color, scale, mean, std)
    explainers = build_explainers(model, chosen, pre, provider, passes_batch, layer, task, score, layout, input_shape,
                                  output_name, threshold, blank, background)
    writers = {method: TaskOutputs(e, colormap, alpha, topk, staged=True) for method, e in explainers.items()}
    stems = {method: {path: f"{stem}.{method}" for path, stem in names.items()} for method in chosen}
    planned = [f for method in chosen for stem in stems[method].values() for f in writers[method].files(stem)]
    outputs = OutputSet(out, [*planned, "results.jsonl", REPORT_NAME], overwrite)

    def work():
        return [record for method in chosen for record in _explain_all(
            explainers[method], writers[method], images, stems[method], outputs.staging, {"target": None},
            batch_size, skip_bad)]

    def cancel():
        for explainer in explainers.values():
            explainer.cancel()

    records = write_outputs(outputs, work, cancel, lambda records: stage_results(
        outputs, records, f"onnxcam compare: {Path(model).name} ({', '.join(chosen)})", truth))
    failed = sum(r["status"] != "ok" for r in records)
    click.echo(f"compared {len(chosen)} method(s) on {len(images)} image(s) -> {out / REPORT_NAME}")
    if failed:
        click.echo(f"failed: {failed} record(s) (see results.jsonl)", err=True)
        raise click.exceptions.Exit(1)
