"""``onnxcam run``'s image pipeline: decoding, explaining and rendering overlapped, output order kept.

The model runs in the calling thread, one batch at a time; a small thread pool decodes and
pre-processes (resizes, normalises) the next batches' images and renders (colours, resizes,
PNG-encodes, writes) the previous batches' while it does — OpenCV and ONNX Runtime release the
GIL, so the stages really overlap. At most
``ahead`` batches are decoded in advance and ``ahead`` batches wait to be rendered, so memory
stays flat however many images there are (hand the records to ``emit`` to keep them flat too: see
:class:`onnxcam.io.results.ResultsFile`). Records come in the images' order, and the first
error (in whichever stage) stops the run as the serial loop would: nothing more is submitted, and
what is queued is cancelled.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from onnxcam.errors import InputError

__all__ = ["explain_images", "default_workers"]

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Threads for decoding and rendering: one per core beside the model's, 2 to 4."""
    return max(2, min(4, (os.cpu_count() or 2) - 1))


def _timed(work: Callable, *args, **kwargs):
    start = time.perf_counter()
    value = work(*args, **kwargs)
    return value, time.perf_counter() - start


class _Decoded:
    """One image decoded and pre-processed into its row of the model's input (or the reason it could not
    be, when failures are recorded)."""

    def __init__(self, explainer, path: Path, skip_bad: bool):
        self.path, self.image, self.row, self.error = path, None, None, None
        try:
            (self.image, self.row), self.seconds = _timed(self._read, explainer, path)
        except InputError as exc:
            if not skip_bad:
                raise
            self.error, self.seconds = str(exc), 0.0

    @staticmethod
    def _read(explainer, path: Path):
        image = explainer.decode(path)
        return image, explainer.prepare([image])[0]


def explain_images(explainer, writer, images: Sequence[Path], names: dict, staging: Path, request: dict,
                   batch_size: int, skip_bad: bool, progress: Callable[[int], None] = lambda n: None,
                   workers: int | None = None, ahead: int = 2,
                   emit: Callable[[dict], None] | None = None) -> list[dict]:
    """One record per image, in order: decode → explain (in this thread) → render, overlapped. The
    records are returned, or, with ``emit``, given to it as they are done (and none returned)."""
    batches = [list(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    pool = ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="onnxcam-io")
    decoding: deque[list[Future]] = deque()
    rendering: deque[tuple[int, list[Future]]] = deque()
    records: list[dict] = []
    emit = emit or records.append

    def collect(finished):
        count, futures = finished
        for future in futures:  # each gives its image's records (a detector's: one per box)
            for record in future.result():
                emit(record)
        progress(count)

    try:
        for batch in batches[:ahead]:
            decoding.append([pool.submit(_Decoded, explainer, p, skip_bad) for p in batch])
        for index in range(len(batches)):
            decoded = [f.result() for f in decoding.popleft()]
            if index + ahead < len(batches):
                decoding.append([pool.submit(_Decoded, explainer, p, skip_bad) for p in batches[index + ahead]])
            rendering.append((len(decoded), _explain_batch(explainer, writer, decoded, names, staging, request,
                                                           skip_bad, pool)))
            while len(rendering) > ahead:
                collect(rendering.popleft())
        while rendering:
            collect(rendering.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return records


def _explain_batch(explainer, writer, decoded: list[_Decoded], names, staging, request, skip_bad,
                   pool: ThreadPoolExecutor) -> list[Future]:
    """Explain one batch and queue its images' rendering; one future per image, each giving its record."""
    good = [d for d in decoded if d.image is not None]
    boxes = explainer.task == "detection"
    explain = explainer.explain_boxes if boxes else explainer.explain
    rows = np.concatenate([d.row for d in good]) if good else None
    for d in good:
        d.row = None  # the batch holds it now; the image waits for its rendering
    result, seconds = _timed(explain, rows, **request) if good else (None, 0.0)
    explain_ms = 1000.0 * seconds / len(decoded)
    futures = []
    for d in decoded:
        if d.error is not None:
            futures.append(_done([{"image": str(d.path), "status": "failed", "error": d.error}]))
            continue
        i = good.index(d)
        if boxes:
            futures.append(pool.submit(_render_boxes, writer, staging, names[d.path], d, result, i, explain_ms))
            continue
        if not result.finite[i]:
            problem = f"the model's score for this image is {float(result.scores[i])} (not finite)"
            if not skip_bad:
                raise InputError(f"{d.path}: {problem}; check the pre-processing, or pass --skip-bad to go on")
            futures.append(_done([{"image": str(d.path), "status": "failed", "error": problem}]))
            continue
        futures.append(pool.submit(_render, writer, staging, names[d.path], d, result, i, explain_ms))
    return futures


def _render(writer, staging, stem: str, d: _Decoded, result, i: int, explain_ms: float) -> list[dict]:
    record, seconds = _timed(writer.write, staging, stem, str(d.path), d.image, result, i)
    record = {"status": "ok", **record}
    if result.all_zero[i]:
        record["all_zero"] = True
        log.warning("%s: the map is all zero (nothing at the layer raises the score)", d.path)
    return [_timed_record(record, d, explain_ms, seconds)]


def _render_boxes(writer, staging, stem: str, d: _Decoded, result, i: int, explain_ms: float) -> list[dict]:
    """A detector's image: its records, one per box."""
    records, seconds = _timed(writer.write_boxes, staging, stem, str(d.path), d.image, result.images[i],
                              result.input_size, result)
    return [_timed_record({"status": "ok", **record}, d, explain_ms, seconds) for record in records]


def _timed_record(record: dict, d: _Decoded, explain_ms: float, render_seconds: float) -> dict:
    record["timings_ms"] = {"preprocess": round(1000 * d.seconds, 2), "explain": round(explain_ms, 2),
                            "render": round(1000 * render_seconds, 2)}
    return record


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
