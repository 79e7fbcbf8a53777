"""The commands of ``onnxcam``: run, export, layers, ops (loaded by :mod:`onnxcam.cli` on first use)."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np

from onnxcam.errors import OnnxCamError, OutputError
from onnxcam.io.files import OutputSet
from onnxcam.io.images import DEFAULT_MAX_PIXELS, PRESETS, collect_images
from onnxcam.io.images import preset as named_preset
from onnxcam.methods import AUTO, method_names
from onnxcam.methods.fusion import FUSE_CHOICES
from onnxcam.methods.multipass import BASELINES, RunOptions
from onnxcam.plan import LAYOUT_CHOICES, SCORE_CHOICES
from onnxcam.contract import TARGET_INPUT_MODES, format_shape
from onnxcam.targets import TASK_CHOICES, TaskOptions
from onnxcam.io.annotations import read_truth
from onnxcam.io.records import TaskOutputs
from onnxcam.io.results import ResultsFile, RunSummary
from onnxcam.report.page import REPORT_NAME
from onnxcam.io.render import COLORMAPS, PNG_CHOICES
from onnxcam.runtime import PROVIDER_CHOICES, spin_waits

__all__ = ["run", "export", "layers", "ops"]

log = logging.getLogger("onnxcam")


def _model_options(func):
    """Options shared by every command that plans an explanation (they fix what the explain model computes)."""
    options = [
        click.option("--layer", multiple=True, default=["auto"], show_default=True,
                     help="Target layer: 'auto', an ONNX tensor name or a node name (see 'onnxcam layers'); "
                          "repeat it to explain several layers at once (maps fused by --fuse)."),
        click.option("--task", type=click.Choice(TASK_CHOICES), default="auto", show_default=True,
                     help="What the output is; auto = detected from its shape and final activation."),
        click.option("--score", type=click.Choice(SCORE_CHOICES), default="logit", show_default=True,
                     help="Differentiate the logit before a final Softmax/Sigmoid, or the output as it is."),
        click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True,
                     help="Image input layout; auto-detected by default."),
        click.option("--input-shape", default=None, metavar="1x3xHxW",
                     help="Fix dynamic dims of the image input (the batch stays dynamic)."),
        click.option("--output", "output_name", default=None, metavar="NAME",
                     help="The model output to explain (default: the first that fits a task, those ending in "
                          "Softmax/Sigmoid first)."),
        click.option("--threshold", type=float, default=TaskOptions.threshold, show_default=True,
                     help="dense: the default target is the pixels whose activation exceeds this."),
        click.option("--blank", type=int, default=TaskOptions.blank, show_default=True,
                     help="sequence: the CTC blank index (blank steps are left out of the default target)."),
        click.option("--background", type=int, default=TaskOptions.background, show_default=True,
                     help="segmentation: the class never explained by default (-1: none)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def preprocess_options(func):
    """The pre-processing options (see :func:`preprocessing`), shared by the commands that read images."""
    options = [
        click.option("--labels", type=click.Path(dir_okay=False), default=None,
                     help="Labels file, one class name per line (sequence: the CTC dictionary, with or without the "
                          "blank). Default: the names or dictionary in the model's metadata, where it has them."),
        click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
                     help="Pre-processing preset (default: the sidecar MODEL.json, else imagenet)."),
        click.option("--size", default=None, metavar="HxW", help="Resize images to this size (default: the model's)."),
        click.option("--color", type=click.Choice(["RGB", "BGR"]), default=None,
                     help="Channel order the model expects."),
        click.option("--scale", type=float, default=None, help="Multiply pixel values (0..255) by this."),
        click.option("--mean", default=None, metavar="A,B,C", help="Per-channel mean subtracted after scaling."),
        click.option("--std", default=None, metavar="A,B,C", help="Per-channel std divided by after the mean."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def preprocessing(model, labels, preset, size, color, scale, mean, std):
    """The Preprocess the options say: flags over --preset over the sidecar over imagenet."""
    from onnxcam.io.images import resolve_preprocess

    pre = resolve_preprocess(model, named_preset(preset) if preset else None)
    return pre.replace(size=_parse_size(size), color=color, scale=scale, mean=_floats(mean, "--mean"),
                       std=_floats(std, "--std"), labels=labels)


def _export_options(task, score, layout, input_shape, output_name, threshold, blank, background) -> dict:
    return {"task": task, "score": score, "layout": layout, "input_shape": input_shape, "output": output_name,
            "threshold": threshold, "blank": blank, "background": background}


# --- layers ----------------------------------------------------------------------------------
@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@_model_options
def layers(model, layer, task, score, layout, input_shape, output_name, threshold, blank, background):
    """List the tensors of MODEL considered as target layers (maps, token grids); '*' marks the chosen one.

    Shows the task onnxcam detected and why, the outputs, and why a tensor is not eligible (or
    only for gradient-free methods).
    """
    from onnxcam.exporter import load_explainable
    from onnxcam.plan import check_input_size, make_plans, plan_view

    loaded = load_explainable(model, input_shape, layout)
    view = plan_view(loaded.model)
    if loaded.resized:
        check_input_size(view, *loaded.resized)
    plans = make_plans(view, list(layer), score=score, layout=layout, output=output_name, task=task)
    plan = plans[0]
    chosen = {p.layer for p in plans}
    outputs = ", ".join(f"{name} {_dims(view.shape(name))}" for name in view.graph_outputs)
    click.echo(f"input:   {plan.image} ({plan.layout}) {_dims(view.shape(plan.image))}")
    click.echo(f"outputs: {outputs}")
    click.echo(f"task:    {plan.task.name} ({plan.target.reason}); default target: {plan.task.default}")
    click.echo(f"score:   {plan.score_description}, batch-first shape {_dims(plan.score_tensor.shape)}")
    if plan.task.name == "detection":
        from onnxcam.targets.detection import head_for

        click.echo(f"head:    {head_for(view, plan.score_tensor).describe()}; one layer per pyramid level")
    rows = [("", "node", "op", "tensor", "shape", "eligible")]
    for candidate in plan.considered:
        cand = candidate.layer
        mark = "*" if cand in chosen else ""
        grid = f" ({cand.prefix}+{cand.grid[0]}x{cand.grid[1]} tokens)" if cand.layout == "tokens" else ""
        rows.append((mark, cand.node, cand.op_type, cand.tensor, _dims(cand.shape) + grid, _eligibility(candidate)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _eligibility(candidate) -> str:
    if not candidate.eligible:
        return f"no: {candidate.why_not}"
    if candidate.gradient_blocked_by:
        return f"yes, gradient-free methods only ({candidate.gradient_blocked_by} on the way has no gradient rule)"
    return "yes"


def _dims(shape) -> str:
    return "rank ?" if shape is None else format_shape(shape)


# --- export ----------------------------------------------------------------------------------
@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the explain model (*.cam.onnx).")
@click.option("--method", type=click.Choice([AUTO, *method_names()]), default=AUTO, show_default=True,
              help="CAM method; auto = gradcam, or hirescam for detectors; where no gradient reaches the layer, "
                   "eigencam (run: ablationcam).")
@click.option("--expose", default="", metavar="activations,gradients",
              help="Also output the layer's activations and/or their gradients.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--fuse", type=click.Choice(FUSE_CHOICES), default="mean", show_default=True,
              help="How the maps of several --layer are fused.")
@click.option("--target-inputs", type=click.Choice(TARGET_INPUT_MODES), default="optional", show_default=True,
              help="optional: target and target_weights have defaults (ORT); required: plain inputs to feed "
                   "always (OpenVINO and runtimes that fold inputs with defaults into constants).")
@_model_options
def export(model, out, method, expose, overwrite, fuse, target_inputs, layer, task, score, layout, input_shape,
           output_name, threshold, blank, background):
    """Write an explain model: MODEL's outputs plus cam, cam_target and cam_score."""
    from onnxcam.exporter import export as export_model

    out_path = Path(out)
    if out_path.exists() and out_path.resolve() == Path(model).resolve():
        raise OutputError("the output would overwrite the input model; choose another -o path")
    if out_path.exists() and not overwrite:
        raise OutputError(f"'{out_path}' exists; pass --overwrite to replace it")
    exposed = [name.strip() for name in expose.split(",") if name.strip()]
    result = export_model(model, layer=list(layer), method=method, expose=exposed, fuse=fuse, target_inputs=target_inputs,
                          **_export_options(task, score, layout, input_shape, output_name, threshold, blank, background))
    result.save(out_path)
    plan = result.plan
    optional = "optional" if target_inputs == "optional" else "required"
    click.echo(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB) in {result.seconds:.2f} s")
    for each in result.plans or (plan,):
        click.echo(f"  layer:  {each.layer.describe()}")
    if len(result.plans) > 1:
        click.echo(f"  fuse:   {fuse}")
    click.echo(f"  task:   {plan.task.name}; default target: {plan.task.default}")
    click.echo(f"  score:  {plan.score_description}; method {result.method}")
    click.echo(f"  inputs: {plan.image} ({plan.layout}); target (int64 [N], {optional}, -1 = default); "
               f"target_weights ({_dims(plan.score_tensor.shape)}, {optional}, NaN = default)")
    extra = ", ".join(["cam [N,H,W]", "cam_target [N]", "cam_score [N]", *exposed])
    click.echo(f"  outputs: the model's own, plus {extra}")


class PassesBatch(click.ParamType):
    """A number of images (1 or more) or "auto"."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"{value!r} is neither 'auto' nor a whole number of images of at least 1", param, ctx)
        return number


# --- run -------------------------------------------------------------------------------------
def _without_spin_waits(command):
    """ONNX Runtime's threads do not spin while ``command`` runs: run's decoding and rendering threads
    need those cycles (see onnxcam.runtime.spin_waits)."""
    @functools.wraps(command)
    def wrapped(*args, **kwargs):
        with spin_waits(False):
            return command(*args, **kwargs)
    return wrapped


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--method", type=click.Choice([AUTO, *method_names()]), default=AUTO, show_default=True,
              help="CAM method; auto = gradcam, or hirescam for detectors; where no gradient reaches the layer, "
                   "ablationcam (eigencam for detectors, several layers and embeddings).")
@click.option("--target", type=int, default=None,
              help="The task's index for every image: a class (classification, segmentation), an output unit "
                   "(regression), a time step (sequence). Default: the task's default target.")
@click.option("--timestep", type=click.IntRange(0), default=None, help="sequence: explain the character at this step.")
@click.option("--region", default=None, metavar="X0,Y0,X1,Y1",
              help="dense, segmentation: explain the score over this box (model input pixels).")
@click.option("--mask", "mask_path", type=click.Path(dir_okay=False), default=None,
              help="dense, segmentation: explain the score over this mask (an image of the model input's size; "
                   "non-zero pixels count).")
@click.option("--reference", default=None, metavar="IMAGE|VECTOR.npy",
              help="embedding: explain the similarity to this image's embedding, or to this vector.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="detection: drop boxes less confident than this (class probability × objectness).")
@click.option("--iou", type=click.FloatRange(0, 1), default=0.45, show_default=True,
              help="detection: class-wise NMS overlap threshold.")
@click.option("--max-boxes", type=click.IntRange(1), default=10, show_default=True,
              help="detection: explain the most confident boxes, at most this many per image.")
@click.option("--box", "box_index", type=click.IntRange(0), default=None,
              help="detection: explain only the box of this index (0 = the most confident).")
@click.option("--class", "class_ids", type=click.IntRange(0), multiple=True,
              help="detection: explain only boxes of this class (repeat for several).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--provider", type=click.Choice(PROVIDER_CHOICES), default="auto", show_default=True,
              help="auto = CUDA when usable, else CPU; openvino = the OpenVINO runtime (onnxcam[openvino]).")
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True, help="Top-k classes to report per image.")
@preprocess_options
@click.option("--colormap", type=click.Choice(list(COLORMAPS)), default="jet", show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Heatmap opacity in overlays.")
@click.option("--no-overlay", is_flag=True,
              help="Write no NAME.overlay.png (detection: nor NAME.boxK.overlay.png); records then name none.")
@click.option("--no-heatmap", is_flag=True,
              help="Write no 16-bit NAME.cam.png (detection: NAME.boxK.cam.png); with --no-overlay only "
                   "results.jsonl (and a dense model's NAME.output.png) is written.")
@click.option("--png", type=click.Choice(PNG_CHOICES), default="compact", show_default=True,
              help="fast: store the PNGs uncompressed, 1.5-3x faster to encode (7-11x without isal), 2.4-4.7x larger.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist.")
@click.option("--skip-bad", is_flag=True,
              help="Record an image that cannot be explained (undecodable, non-finite score) in results.jsonl and go "
                   "on; the exit code is still 1 unless every image succeeded.")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images with more pixels than this (read from the header, before decoding).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary (counts, paths, timings, failures) on stdout.")
@click.option("--fuse", type=click.Choice(FUSE_CHOICES), default="mean", show_default=True,
              help="How the maps of several --layer are fused.")
@click.option("--passes-batch", type=PassesBatch(), default="auto", show_default=True,
              help="Runtime methods: ablated copies / masked, noisy or path images per ONNX Runtime call; "
                   "auto = as many as fit a quarter of the free memory (at most 4 GiB; 2 GiB on CUDA).")
@click.option("--scorecam-topk", type=click.IntRange(1), default=None,
              help="scorecam: score only the K channels whose maps vary most (Faster Score-CAM; default: all).")
@click.option("--samples", type=click.IntRange(1), default=RunOptions.samples, show_default=True,
              help="smoothgradcampp: noisy copies per image.")
@click.option("--noise", type=click.FloatRange(0), default=RunOptions.noise, show_default=True,
              help="smoothgradcampp: noise σ as a fraction of the image's value range.")
@click.option("--seed", type=int, default=RunOptions.seed, show_default=True, help="smoothgradcampp: noise seed.")
@click.option("--steps", type=click.IntRange(1), default=RunOptions.steps, show_default=True,
              help="integrated-gradcam: points on the path from the baseline to the image.")
@click.option("--baseline", type=click.Choice(BASELINES), default=RunOptions.baseline, show_default=True,
              help="integrated-gradcam: the path's start: a black image (pre-processed) or all zeros.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: explain on a Ray cluster, an actor per core, resumable (needs 'onnxcam[ray]').")
@click.option("--address", default=None, metavar="ADDR",
              help="ray: the cluster to join (e.g. auto, HOST:6379); default: RAY_ADDRESS, else a local instance.")
@click.option("--workers", type=click.IntRange(1), default=None, help="ray: actors (default: the cluster's CPUs).")
@click.option("--report", is_flag=True, help="Also write OUTDIR/index.html, the HTML report (see 'onnxcam report').")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None, metavar="TRUTH.csv",
              help="True labels (image,label lines) for the report's disagreements view.")
@_model_options
@_without_spin_waits
def run(model, inputs, out_dir, method, target, timestep, region, mask_path, reference, min_score, iou, max_boxes,
        box_index, class_ids, batch_size, provider, topk,
        labels, preset, size, color, scale, mean, std, colormap, alpha, no_overlay, no_heatmap, png, overwrite,
        skip_bad, max_pixels, as_json, fuse, passes_batch, scorecam_topk, samples, noise, seed, steps, baseline, engine,
        address, workers, report, labels_file, layer, task, score, layout, input_shape, output_name, threshold, blank, background):
    """Explain the images INPUTS (files or folders) with MODEL; write overlays, heatmaps, results.jsonl.

    MODEL is a plain ONNX model (exported in memory) or an explain model from 'onnxcam export'.
    """
    from onnxcam.explainer import Explainer

    check_model_file(model)
    if engine != "ray" and (address or workers):
        raise OnnxCamError("--address and --workers are options of the Ray engine; add --engine ray")
    if engine == "ray" and report:
        raise OnnxCamError("--report is written by the local engine; after a Ray run, write it with: onnxcam report OUTDIR")
    out = Path(out_dir)
    images = collect_images(inputs, exclude=out)
    names = _output_names(images)
    truth = read_truth(labels_file) if labels_file else None
    pre = preprocessing(model, labels, preset, size, color, scale, mean, std)
    options = dict(layer=list(layer), method=method, provider=provider, preprocess=pre, fuse=fuse,
                   passes_batch=passes_batch, max_pixels=max_pixels, scorecam_topk=scorecam_topk, samples=samples,
                   noise=noise, seed=seed, steps=steps, baseline=baseline,
                   **_export_options(task, score, layout, input_shape, output_name, threshold, blank, background))
    explainer = run_interruptibly(lambda: Explainer(model, **options),
                                  cancel=lambda: None, grace_s=0.2)  # nothing is staged yet: stop at once
    if explainer.task == "detection":  # checked before any work
        request = _box_request({"--target": target, "--timestep": timestep, "--region": region, "--mask": mask_path,
                                "--reference": reference}, min_score, iou, max_boxes, box_index, class_ids)
    else:
        request = _target_request(explainer, target, timestep, region, mask_path, reference)
    writer = TaskOutputs(explainer, colormap, alpha, topk, max_boxes, overlays=not no_overlay, heatmaps=not no_heatmap,
                         staged=engine == "local", png=png)  # Ray's workers write into OUTDIR, each file atomically
    planned = [name for stem in names.values() for name in writer.files(stem)]
    if engine == "ray":
        from onnxcam.integrations.ray import RayJob, run_on_ray

        started = time.perf_counter()
        job = RayJob(model, str(out), options, request, colormap, alpha, topk, skip_bad, not no_overlay, not no_heatmap,
                     png)
        records = run_on_ray(images, names, job, planned, address, workers, batch_size, overwrite)
        return _finish(RunSummary.of(records), started, explainer, out, as_json)
    outputs = OutputSet(out, [*planned, "results.jsonl", *([REPORT_NAME] if report else [])], overwrite)
    log.info("pre-processing %s", pre.describe(explainer.input_channels))
    if report and no_overlay:
        log.warning("--no-overlay: the report shows the images and the predictions, without the maps")

    started = time.perf_counter()

    def work() -> RunSummary:
        with ResultsFile(outputs.path("results.jsonl")) as results:  # streamed: memory stays flat
            _explain_all(explainer, writer, images, names, outputs.staging, request, batch_size, skip_bad,
                         emit=results.add)
        return results.summary

    def stage(summary) -> None:
        if report:
            from onnxcam.report import read_records, write_report

            write_report(outputs.path(REPORT_NAME), read_records(outputs.staging), outputs.out, truth=truth,
                         title=f"onnxcam run: {Path(model).name}")

    _finish(write_outputs(outputs, work, explainer.cancel, stage), started, explainer, out, as_json)


def _finish(summary: RunSummary, started, explainer, out, as_json) -> None:
    """Report the run; exit 1 when an image failed."""
    _report(summary, time.perf_counter() - started, explainer, out, as_json)
    if summary.failures:
        raise click.exceptions.Exit(1)


def _report(summary: RunSummary, seconds, explainer, out, as_json) -> None:
    images, done, failed = summary.images, summary.explained, summary.failures
    if as_json:
        click.echo(json.dumps({
            "images": images, "explained": done, "failed": len(failed), "out": str(out),
            "results": str(out / "results.jsonl"), "seconds": round(seconds, 3),
            "ms_per_image": round(1000 * seconds / images, 2), "provider": explainer.provider,
            "task": explainer.task, "layer": explainer.layer, "method": explainer.method,
            "all_zero": summary.all_zero, "failures": failed, **({"twin": summary.twin} if summary.twin else {})}))
        return
    boxes = f" | {summary.boxes} box(es)" if explainer.task == "detection" else ""
    click.echo(f"explained {done} of {images} image(s){boxes} in {seconds:.2f} s "
               f"({1000 * seconds / images:.0f} ms/image) on {explainer.provider.upper()} | {explainer.task} | "
               f"layer {explainer.layer} | {explainer.method} -> {out}/")
    for record in failed[:5]:
        click.echo(f"failed: {record['image']}: {record['error']}", err=True)
    if len(failed) > 5:
        click.echo(f"failed: {len(failed) - 5} more (see results.jsonl)", err=True)


def write_outputs(outputs: OutputSet, work, cancel, stage):
    """Run ``work()`` interruptibly (it stages its files), then ``stage(result)`` (the last files, such as
    results.jsonl), and commit them all at once; ``work``'s result."""
    try:
        result = run_interruptibly(work, cancel)
        stage(result)
        with signals_recorded() as deferred:  # a commit is finished once begun
            outputs.commit()
    except BaseException:
        outputs.discard()
        raise
    if deferred:
        click.echo(f"Error: interrupted by {signal.Signals(deferred[0]).name} after the outputs were written", err=True)
        raise click.exceptions.Exit(128 + deferred[0])
    return result


def stage_results(outputs: OutputSet, records: list[dict], report_title: str | None = None, truth=None) -> None:
    """Stage results.jsonl, and the HTML report of its records when ``report_title`` is given."""
    from onnxcam.report import write_report

    with ResultsFile(outputs.path("results.jsonl")) as results:
        for record in records:
            results.add(record)
    if report_title is not None:
        write_report(outputs.path(REPORT_NAME), records, outputs.out, truth=truth, title=report_title)


def check_model_file(model) -> None:
    if not Path(model).is_file():
        raise OnnxCamError(f"model file '{model}' not found; pass the path of an .onnx file")


def _explain_all(explainer, writer, images, names, staging, request, batch_size, skip_bad, emit=None) -> list[dict]:
    """The images' records, with a progress bar (given to ``emit`` as they come, when it is given)."""
    from onnxcam.pipeline import explain_images

    quiet = log.getEffectiveLevel() > logging.INFO
    with click.progressbar(length=len(images), label="explaining", file=sys.stderr,
                           hidden=quiet or len(images) <= 4) as bar:
        return explain_images(explainer, writer, images, names, staging, request, batch_size, skip_bad, bar.update,
                              emit=emit)


def _target_request(explainer, target, timestep, region, mask_path, reference) -> dict:
    """The explain() keyword arguments for the target options, checked before any image is read."""
    if timestep is not None:
        if explainer.task != "sequence":
            raise OnnxCamError(f"--timestep is for sequence models, and this one's task is {explainer.task}; "
                               "use --target")
        if target is not None:
            raise OnnxCamError("give --timestep or --target, not both")
        target = timestep
    request = {"target": target}
    if target is not None:
        explainer.check_target(target)
    if region is not None:
        request["region"] = _floats(region, "--region")
    if mask_path is not None:
        request["mask"] = _read_mask(mask_path)
    if reference is not None:
        request["reference"] = _read_reference(reference)
    probe = {k: v for k, v in request.items() if k != "target"}
    explainer.target_weights(1, **probe)  # a bad region, mask or reference fails here, before any output
    return request


def _box_request(others: dict, min_score, iou, max_boxes, box_index, class_ids) -> dict:
    """explain_boxes() keyword arguments; the other target options do not apply to boxes."""
    given = [option for option, value in others.items() if value is not None]
    if given:
        raise OnnxCamError(f"{given[0]} does not apply to detection: every detected box is explained; narrow them "
                           "with --box, --class, --min-score or --max-boxes")
    if box_index is not None and box_index >= max_boxes:
        raise OnnxCamError(f"--box {box_index} is beyond --max-boxes {max_boxes}; boxes are numbered from 0")
    return {"min_score": min_score, "iou": iou, "max_boxes": max_boxes, "box": box_index,
            "classes": list(class_ids) or None}


def _read_mask(path: str) -> np.ndarray:
    import cv2

    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OnnxCamError(f"cannot read mask '{path}'; give a PNG (or another image OpenCV reads)")
    return mask


def _read_reference(text: str):
    path = Path(text)
    if not path.is_file():
        raise OnnxCamError(f"reference '{text}' not found; give an image or a .npy vector")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OnnxCamError(f"cannot read reference vector '{text}': {exc}") from None
    return path


def _explain_chunk(explainer, writer, chunk, names, staging, request, skip_bad):
    """Records for one batch of images (the Ray engine's unit of work), through run's own pipeline."""
    from onnxcam.pipeline import explain_images

    return explain_images(explainer, writer, chunk, names, staging, request, len(chunk), skip_bad, workers=1)


def run_interruptibly(work, cancel, grace_s: float = 2.0):
    """Run ``work()`` in a worker thread so that SIGINT/SIGTERM reach this (main) thread while ONNX
    Runtime computes; a signal calls ``cancel()`` and raises :class:`Interrupted` once the worker stops
    (or ``grace_s`` later)."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="onnxcam-run", daemon=True)
    with signals_recorded(then=cancel) as received:
        worker.start()
        deadline = None
        while worker.is_alive():
            worker.join(0.05)
            if received and deadline is None:
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline:
                break
    if received and worker.is_alive():  # stuck in native code that cannot be cancelled: exiting normally would
        Interrupted.say(received[0])  # wait for it (or abort in its destructors), so leave at once
        sys.stderr.flush()
        os._exit(128 + received[0])
    if received:
        raise Interrupted(received[0])
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@contextmanager
def signals_recorded(then=None):
    """SIGINT/SIGTERM received inside are recorded in the yielded list (and ``then()`` is called),
    not acted on; outside the main thread, where no handler can be set, the list stays empty."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum, frame):
        received.append(signum)
        if then is not None:
            then()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Interrupted(click.exceptions.Exit):
    """A run stopped by a signal: exit 128 + the signal's number, after the staged outputs are discarded."""

    def __init__(self, signum: int):
        self.say(signum)
        super().__init__(128 + signum)

    @staticmethod
    def say(signum: int) -> None:
        click.echo(f"Error: interrupted by {signal.Signals(signum).name}; nothing was written", err=True)


def _output_names(images: list[Path]) -> dict[Path, str]:
    """A unique file stem per image (the image's stem, suffixed when two share one)."""
    names, used = {}, set()
    for path in images:
        stem, n = path.stem, 1
        while stem in used:
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        names[path] = stem
    return names


def _parse_size(text: str | None):
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise OnnxCamError(f"--size '{text}' is not like 224x224 (height x width)")
    return int(parts[0]), int(parts[1])


def _floats(text: str | None, option: str):
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise OnnxCamError(f"{option} '{text}' is not a comma-separated list of numbers") from None


# --- ops -------------------------------------------------------------------------------------
@click.command()
def ops():
    """List the ops the gradient engine differentiates (markdown)."""
    from onnxcam.autodiff import supported_ops_markdown

    click.echo(supported_ops_markdown())
