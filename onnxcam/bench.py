"""``onnxcam bench``: what an explanation costs on this machine, per backend, method and batch size.

For each backend (ONNX Runtime on the CPU, on CUDA when it works, OpenVINO when installed) it
times plain inference of the model against :meth:`onnxcam.Explainer.explain` on the same random
batch, the two calls interleaved in one loop so that a busy machine slows both alike, with a
short pause before each call; the ratio is the median of the per-round ratios. It also times the per-image stages of ``onnxcam run``
around the model call (JPEG decoding, pre-processing, rendering the overlay and the 16-bit map
to PNG) and reports the process's peak memory.
"""

from __future__ import annotations

import json
import logging
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import click
import numpy as np

from onnxcam.errors import InputError, OnnxCamError

__all__ = ["Timing", "available_backends", "checked_backends", "interleaved", "bench_model", "stage_costs", "fastest", "bench"]

log = logging.getLogger(__name__)

BACKENDS = ("cpu", "cuda", "openvino")
PAUSE_S = 0.05  # before each timed call (interleaved)


@dataclass(frozen=True)
class Timing:
    """One (backend, method, batch): median milliseconds per call and the median explain/plain ratio."""

    backend: str
    method: str
    batch: int
    plain_ms: float
    explain_ms: float
    ratio: float


def available_backends() -> list[str]:
    """The backends that can run here: the CPU always, CUDA and OpenVINO when they work."""
    from onnxcam.backends.openvino import openvino_problem
    from onnxcam.runtime import cuda_problem

    return ["cpu", *(["cuda"] if cuda_problem() is None else []), *(["openvino"] if openvino_problem() is None else [])]


def checked_backends(asked: Sequence[str]) -> list[str]:
    """The backends asked for (every one that works when none is), refusing one that cannot run here
    (a CUDA session would fall back to the CPU and time it under CUDA's name)."""
    if not asked:
        return available_backends()
    from onnxcam.backends.openvino import openvino_problem
    from onnxcam.runtime import cuda_problem

    for backend, problem in (("cuda", cuda_problem), ("openvino", openvino_problem)):
        reason = problem() if backend in asked else None
        if reason:
            raise OnnxCamError(f"cannot time {backend}: {reason}; leave --provider {backend} out")
    return list(dict.fromkeys(asked))


def interleaved(calls: dict[str, Callable[[], object]], repeat: int, pause: float = PAUSE_S) -> dict[str, list[float]]:
    """Seconds per call of each function, over ``repeat`` rounds that call each once in turn (after a
    warm-up), ``pause`` seconds before each: ONNX Runtime's threads spin a while after a run, and
    would take cores from the next session's call (on 2 cores that doubled some calls' times)."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            time.sleep(pause)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def _median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def _random_batch(explainer, batch: int) -> np.ndarray:
    shape = explainer.input_shape
    if any(d is None for d in shape[1:]):
        raise InputError(f"the input '{explainer.input_name}' has dynamic dims {shape}; fix them with --input-shape")
    if shape[0] is not None and shape[0] != batch:
        raise InputError(f"the model's batch size is fixed at {shape[0]}; pass --batch {shape[0]}")
    return np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)


def bench_model(model, methods: Sequence[str], batches: Sequence[int], backends: Sequence[str], layer="auto",
                repeat: int = 10, threads: int | None = None, **export_options) -> tuple[list[Timing], dict[str, float]]:
    """Time plain inference against the explanation for every backend × method × batch size; also
    the per-image costs of ``onnxcam run``'s other stages (:func:`stage_costs`)."""
    from onnxcam.explainer import Explainer, load_model
    from onnxcam.runtime import make_session

    plain_bytes = load_model(model).SerializeToString()
    rows, stages = [], {}
    for backend in backends:
        plain = make_session(plain_bytes, backend, threads=threads)
        for method in methods:
            explainer = Explainer(model, layer=layer, method=method, provider=backend, threads=threads, **export_options)
            stages = stages or stage_costs(explainer, repeat)
            for batch in batches:
                x = _random_batch(explainer, batch)
                times = interleaved({"plain": lambda: plain.run(None, {explainer.input_name: x}),
                                     "explain": lambda: explainer.explain(x)}, repeat)
                rows.append(Timing(backend, method, batch, 1000 * statistics.median(times["plain"]),
                                   1000 * statistics.median(times["explain"]),
                                   _median_ratio(times["explain"], times["plain"])))
                log.debug("%s %s batch %d: %.1f ms plain, %.1f ms explained", backend, method, batch,
                         rows[-1].plain_ms, rows[-1].explain_ms)
    return rows, stages


def stage_costs(explainer, repeat: int = 10) -> dict[str, float]:
    """Milliseconds per image of ``onnxcam run``'s stages around the model call: decoding and
    pre-processing a JPEG of the model's input size, and rendering the overlay and 16-bit map to PNG."""
    import cv2

    from onnxcam.io.render import encode_png, heatmap16, overlay

    height, width = explainer.input_size or (224, 224)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    jpeg = cv2.imencode(".jpg", ramp.astype(np.uint8))[1].tobytes()
    image = explainer.decode(jpeg)
    cam = np.random.default_rng(0).random((height, width), dtype=np.float32)
    times = interleaved({
        "decode+preprocess": lambda: explainer.prepare([jpeg]),
        "render": lambda: (encode_png(overlay(image, cam)), encode_png(heatmap16(cam, height, width))),
    }, repeat, pause=0.0)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def fastest(rows: Sequence[Timing]) -> list[dict]:
    """Per (method, batch): the backend whose explanation is fastest, and its lead over the others."""
    winners = []
    for key in dict.fromkeys((r.method, r.batch) for r in rows):
        group = sorted((r for r in rows if (r.method, r.batch) == key), key=lambda r: r.explain_ms)
        best = group[0]
        winners.append({"method": best.method, "batch": best.batch, "backend": best.backend,
                        "explain_ms": round(best.explain_ms, 2),
                        "vs": {r.backend: round(r.explain_ms / best.explain_ms, 2) for r in group[1:]}})
    return winners


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _table(rows: Sequence[Timing]) -> str:
    lines = ["| backend | method | batch | plain (ms) | explain (ms) | explain/plain |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.backend} | {r.method} | {r.batch} | {r.plain_ms:.1f} | {r.explain_ms:.1f} | {r.ratio:.2f}× |"
              for r in rows]
    return "\n".join(lines)


def _verdicts(winners: list[dict]) -> list[str]:
    lines = []
    for w in winners:
        others = ", ".join(f"{b} {f:.2f}× slower" for b, f in w["vs"].items()) or "the only backend measured"
        lines.append(f"{w['method']} at batch {w['batch']}: {w['backend']} wins ({w['explain_ms']:.1f} ms; {others})")
    return lines


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--method", "methods", multiple=True, default=["gradcam"], show_default=True,
              help="CAM method to time; repeat it for several.")
@click.option("--batch", "batches", type=click.IntRange(1), multiple=True, default=[1, 8], show_default=True,
              help="Batch size; repeat it for several.")
@click.option("--provider", "backends", type=click.Choice(BACKENDS), multiple=True, default=None,
              help="Backend to time; repeat it for several (default: every one that works here).")
@click.option("--layer", default="auto", show_default=True, help="Target layer (see 'onnxcam layers').")
@click.option("--input-shape", default=None, metavar="1x3xHxW", help="Fix dynamic dims of the image input.")
@click.option("--repeat", type=click.IntRange(1), default=10, show_default=True, help="Timed rounds per row.")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True,
              help="Intra-op threads per session (0 = the runtime's default).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object on stdout.")
def bench(model, methods, batches, backends, layer, input_shape, repeat, threads, as_json):
    """Time MODEL's plain inference against its explanation on this machine's backends."""
    from pathlib import Path

    from onnxcam.methods import method_names

    if not Path(model).is_file():
        raise OnnxCamError(f"model file '{model}' not found; pass the path of an .onnx file")
    unknown = sorted(set(methods) - set(method_names()))
    if unknown:
        raise OnnxCamError(f"unknown method '{unknown[0]}'; choose from: {', '.join(method_names())}")
    backends = checked_backends(backends)
    rows, stages = bench_model(model, methods, list(dict.fromkeys(batches)), backends, layer=layer, repeat=repeat,
                               threads=threads or None, **({"input_shape": input_shape} if input_shape else {}))
    winners = fastest(rows)
    if as_json:
        click.echo(json.dumps({"model": str(model), "repeat": repeat, "timings": [asdict(r) for r in rows],
                               "fastest": winners, "run_stages_ms_per_image": stages,
                               "peak_rss_mib": round(peak_rss_mib(), 1)}))
        return
    click.echo(f"medians of {repeat} rounds, plain and explained calls interleaved, {PAUSE_S * 1000:.0f} ms apart")
    click.echo(_table(rows))
    click.echo("\n".join(_verdicts(winners)))
    click.echo("onnxcam run, per image around the model call: " +
               ", ".join(f"{name} {ms:.1f} ms" for name, ms in stages.items()))
    click.echo(f"peak memory of this process: {peak_rss_mib():.0f} MiB")
