"""Explaining images on a Ray cluster: an actor pool of Explainers over a Ray Dataset of image paths.

Each actor builds one :class:`~onnxcam.explainer.Explainer` (one ONNX Runtime session, one core)
and explains one batch of images per call with the code ``onnxcam run`` uses, writing the same
per-image files straight into OUTDIR, then the batch's records as ``results/part-*.jsonl``, last
and atomically: a part file is the proof that its images are done. A rerun skips the images the
part files hold, so a job killed at any instant resumes without redoing finished images (a batch
cut short is redone whole). When every image is done, ``results.jsonl`` is written, in input order,
record for record what ``onnxcam run`` writes. The image paths must be readable by the workers
(a shared filesystem on a real cluster), and onnxcam installed there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxcam import errors
from onnxcam.commands import _explain_chunk
from onnxcam.errors import CancelledError, OnnxCamError
from onnxcam.explainer import Explainer
from onnxcam.io.files import _check_conflicts, write_atomically
from onnxcam.io.records import TaskOutputs

try:
    import ray
    import ray.data
except ImportError:
    raise OnnxCamError("the Ray engine needs Ray: pip install 'onnxcam[ray]'") from None

__all__ = ["RayJob", "explain_dataset", "run_on_ray", "finished_records", "RESULTS_FOLDER"]

log = logging.getLogger(__name__)

RESULTS_FOLDER = "results"


@dataclass(frozen=True)
class RayJob:
    """What every actor needs to explain and write like ``onnxcam run``: the ``Explainer`` arguments,
    the ``explain`` target arguments, the rendering options and the output folder."""

    model: str
    out: str
    explainer_options: dict = field(default_factory=dict)  # Explainer keyword arguments (layer, method, ...)
    request: dict = field(default_factory=dict)  # explain() keyword arguments (target, region, mask, reference)
    colormap: str = "jet"
    alpha: float = 0.5
    topk: int = 5
    skip_bad: bool = False
    overlays: bool = True  # False: --no-overlay
    heatmaps: bool = True  # False: --no-heatmap
    png: str = "compact"  # --png


class _ExplainBatches:
    """One actor: one explainer, built once; each call explains a batch and writes its part file.

    onnxcam's errors are handed to the driver as data (``"InputError: message"`` rows): Ray wraps
    exceptions in its own, with the actor's traceback, and retries actors whose constructor fails.
    """

    def __init__(self, job: RayJob):
        self.job, self.failure = job, ""
        try:
            self.explainer = Explainer(job.model, **{**job.explainer_options, "threads": 1})  # one core per actor
            self.writer = TaskOutputs(self.explainer, job.colormap, job.alpha, job.topk,
                                      job.request.get("max_boxes", 10), overlays=job.overlays, heatmaps=job.heatmaps,
                                      png=job.png)
        except OnnxCamError as exc:  # e.g. the model is not where this worker looks
            self.failure = _describe(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        paths = [Path(p) for p in batch["image"]]
        if self.failure:
            return {"image": [str(p) for p in paths], "error": [self.failure] * len(paths)}
        names = dict(zip(paths, (str(n) for n in batch["name"])))
        out = Path(self.job.out)
        try:
            records = _explain_chunk(self.explainer, self.writer, paths, names, out, self.job.request,
                                     self.job.skip_bad)
        except OnnxCamError as exc:
            return {"image": [str(p) for p in paths], "error": [_describe(exc)] * len(paths)}
        lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
        write_atomically(out / RESULTS_FOLDER / f"part-{_batch_key(paths)}.jsonl", lines.encode())
        return {"image": [r["image"] for r in records], "error": [""] * len(records)}


def _describe(exc: OnnxCamError) -> str:
    return f"{type(exc).__name__}: {exc}"


def _batch_key(paths: list[Path]) -> str:
    """A part file's name: the same batch of images always gets the same one."""
    return hashlib.sha1("\n".join(map(str, paths)).encode()).hexdigest()[:16]


def explain_dataset(dataset: ray.data.Dataset, job: RayJob, batch_size: int = 8, workers: int = 1) -> ray.data.Dataset:
    """``dataset``'s ``{"image": path, "name": stem}`` rows explained by ``workers`` actors: a lazy dataset
    of ``{"image", "error"}`` rows (error: "" or "InputError: message"); iterating it writes the outputs."""
    return dataset.map_batches(_ExplainBatches, fn_constructor_args=(job,), batch_size=batch_size, num_cpus=1,
                               compute=ray.data.ActorPoolStrategy(size=workers), batch_format="numpy")


def finished_records(out: Path) -> dict[str, dict]:
    """The records the part files in ``out`` hold, by image path."""
    records = {}
    for part in sorted((Path(out) / RESULTS_FOLDER).glob("part-*.jsonl")):
        for line in part.read_text().splitlines():
            record = json.loads(line)
            records[record["image"]] = record
    return records


def run_on_ray(images: list[Path], names: dict[Path, str], job: RayJob, planned: list[str], address: str | None,
               workers: int | None, batch_size: int, overwrite: bool) -> list[dict]:
    """``onnxcam run --engine ray``: explain the images not done yet, then write ``results.jsonl``;
    the records of all ``images``, in their order."""
    out = Path(job.out)
    done = {} if overwrite else finished_records(out)
    if not done and not overwrite:  # a fresh job: refuse to replace files, as onnxcam run does
        _check_conflicts(out, [*planned, "results.jsonl"], overwrite=False)
    if overwrite:
        for part in (out / RESULTS_FOLDER).glob("part-*.jsonl"):
            part.unlink()
    for stale in [*out.glob(".*.tmp"), *(out / RESULTS_FOLDER).glob(".*.tmp")]:  # writes of actors that died
        stale.unlink(missing_ok=True)
    todo = [path for path in images if str(path) not in done]
    log.info("%d of %d image(s) already done; explaining %d on Ray", len(images) - len(todo), len(images), len(todo))
    if todo:
        _explain_on_cluster(todo, names, job, address, workers, batch_size)
    finished = finished_records(out)
    records = [finished[str(path)] for path in images]
    write_atomically(out / "results.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in records).encode())
    return records


def _explain_on_cluster(todo, names, job, address, workers, batch_size) -> None:
    started_here = not ray.is_initialized()
    if started_here:
        _join(address)
    ray.data.DataContext.get_current().print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        rows = ray.data.from_items([{"image": str(path), "name": names[path]} for path in todo],
                                   override_num_blocks=-(-len(todo) // batch_size))  # a block per batch
        for batch in explain_dataset(rows, job, batch_size, workers).iter_batches(batch_size=None):
            failures = [error for error in batch["error"] if error]
            if failures:  # stop at the first error, as onnxcam run does; finished batches stay done
                raise _onnxcam_error(failures[0])
    except KeyboardInterrupt:
        raise CancelledError("interrupted; the batches already finished are kept: rerun the same command to "
                             "resume") from None
    finally:
        if started_here:
            ray.shutdown()


def _join(address: str | None) -> None:
    """Connect to the cluster at ``address`` (None: RAY_ADDRESS, else a new local instance)."""
    local = {"include_dashboard": False} if address is None else {}  # options for starting an instance only
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **local)
    except (ConnectionError, ValueError) as exc:  # no cluster there, an address Ray cannot parse
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxCamError(f"cannot join a Ray cluster at '{address}': {reason} (give --address HOST:PORT of a "
                           "running cluster, or leave it out to start a local one)") from None


def _onnxcam_error(text: str) -> OnnxCamError:
    """The error an actor reported (see :func:`_describe`), as that onnxcam error type."""
    name, _, message = text.partition(": ")
    return getattr(errors, name, OnnxCamError)(message)
