"""Explain the development zoo's models as a new user would, and measure each explanation.

    python scripts/fetch_zoo.py          # once: download the models (cached)
    python scripts/zoo_report.py         # the README's per-model table (markdown)
    python scripts/zoo_report.py centerface ppocrv5-det

For each model: the automatic task and layer, the default target, the map's range, the
explain/plain latency ratio (median of repeated ORT calls, batch 1), and a finite-difference
check of the exported gradient: the head model (the graph cut at the layer) gives the score
f(A) = Σ w ⊙ S(A) for the weighting w the explain model used, and the central difference
(f(A + εu) − f(A − εu)) / 2ε along a random direction u is compared with ⟨∂f/∂A, u⟩.
The test images are drawn here (text lines, a cartoon face), so nothing else is downloaded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_zoo  # noqa: E402

from onnxcam import Explainer  # noqa: E402
from onnxcam.contract import format_shape  # noqa: E402
from onnxcam.exporter import export  # noqa: E402
from onnxcam.graph import load_model  # noqa: E402
from onnxcam.headmodel import cut_model  # noqa: E402
from onnxcam.io.images import PRESETS  # noqa: E402
from onnxcam.plan import fix_input_shape, parse_input_shape  # noqa: E402
from onnxcam.runtime import make_session  # noqa: E402

PADDLE_DET = PRESETS["imagenet"].replace(color="BGR")
PADDLE_REC = PRESETS["unit"].replace(color="BGR", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
DDDDOCR = PRESETS["unit"].replace(mean=(0.5,), std=(0.5,))  # grey, (p / 255 − 0.5) / 0.5, as ddddocr feeds it


def text_image(height: int = 640, width: int = 640) -> np.ndarray:
    image = np.full((height, width, 3), 255, np.uint8)
    scale = height / 640
    cv2.putText(image, "onnxcam", (int(60 * scale), int(200 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 3 * scale,
                (0, 0, 0), max(1, int(8 * scale)))
    cv2.putText(image, "Grad CAM 2026", (int(40 * scale), int(420 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                2.2 * scale, (20, 20, 20), max(1, int(5 * scale)))
    return image


def text_line() -> np.ndarray:
    line = np.full((48, 320, 3), 255, np.uint8)
    cv2.putText(line, "HELLO 42", (8, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (0, 0, 0), 3)
    return line


def face_image(size: int = 320) -> np.ndarray:
    image = np.full((size, size, 3), 200, np.uint8)
    c = size // 2
    cv2.circle(image, (c, c), int(size * 0.28), (150, 180, 220), -1)
    for dx in (-0.11, 0.11):
        cv2.circle(image, (int(c + dx * size), int(c - 0.06 * size)), max(2, size // 27), (30, 30, 30), -1)
    cv2.ellipse(image, (c, int(c + 0.12 * size)), (size // 9, size // 21), 0, 0, 180, (40, 40, 120), 5)
    return image


@dataclass(frozen=True)
class ZooCase:
    key: str
    task: str  # the task onnxcam must detect
    image: Callable[[], np.ndarray]
    preprocess: object
    input_shape: str | None = None
    options: dict = field(default_factory=dict)


CASES = {case.key: case for case in (
    ZooCase("orientation", "classification", lambda: cv2.resize(face_image(), (224, 224)), PRESETS["imagenet"]),
    ZooCase("ppocrv5-det", "dense", text_image, PADDLE_DET, "1x3x640x640"),
    ZooCase("ppocrv6-tiny-det", "dense", text_image, PADDLE_DET, "1x3x640x640"),
    ZooCase("seal-det", "dense", text_image, PADDLE_DET, "1x3x640x640"),
    ZooCase("ppocrv5-rec", "sequence", text_line, PADDLE_REC, "1x3x48x320"),
    ZooCase("ppocrv6-tiny-rec", "sequence", text_line, PADDLE_REC, "1x3x48x320"),
    ZooCase("ppocrv6-small-rec", "sequence", text_line, PADDLE_REC, "1x3x48x320"),
    # CenterFace ships fixed at 10x3x32x32; --input-shape replaces the size (the graph does not depend on it)
    ZooCase("centerface", "dense", face_image, PRESETS["raw"].replace(color="BGR"), "1x3x320x320"),
    # CNN + bidirectional LSTM + CTC; declares its output [1, seqlen] but computes (T, 1, 8210)
    ZooCase("ddddocr-ocr", "sequence", lambda: cv2.resize(text_line(), (256, 64)), DDDDOCR, "1x1x64x256"),
    # the same design, int8 dynamic-quantised: explained through its float twin (onnxcam.quantized)
    ZooCase("ddddocr-ocr-int8", "sequence", lambda: cv2.resize(text_line(), (256, 64)), DDDDOCR, "1x1x64x256"),
)}


@dataclass
class Measurement:
    key: str
    task: str
    layer: str
    layer_shape: str
    default_target: str
    cam_range: tuple[float, float]
    cam_finite: bool
    ratio: float
    plain_ms: float
    fd_error: float
    score: float


def load(case: ZooCase) -> onnx.ModelProto | None:
    path = fetch_zoo.cached_path(case.key)
    if path is None:
        return None
    return onnx.load(str(path))


def measure(case: ZooCase, model: onnx.ModelProto, repeats: int = 15) -> Measurement:
    explain = export(model, input_shape=case.input_shape, expose=["activations", "gradients"], for_runtime=True,
                     **case.options)
    contract = explain.contract
    explainer = Explainer(explain.model, provider="cpu", preprocess=case.preprocess)
    batch, _ = explainer.prepare([case.image()])
    feeds = explainer._feeds(batch, np.full(1, -1, np.int64), explainer.target_weights(1))
    session = explainer._session
    names = ["cam", "cam_score", "cam_weights", "activations", "gradients"]
    cam, score, weights, activations, gradients = session.run(names, feeds)
    fd_error = finite_difference_error(explain.model, contract, batch, weights, activations, gradients)
    sized = fix_input_shape(load_model(model), parse_input_shape(case.input_shape)) if case.input_shape else model
    plain = make_session(sized.SerializeToString(), "cpu")
    explain_ms = _median_ms(lambda: session.run(["cam"], feeds), repeats)
    plain_ms = _median_ms(lambda: plain.run(None, {contract.input: batch}), repeats)
    return Measurement(case.key, contract.task, contract.layer, format_shape(explain.plan.layer.shape),
                       contract.target_description,
                       (float(cam.min()), float(cam.max())), bool(np.isfinite(cam).all()), explain_ms / plain_ms,
                       plain_ms, fd_error, float(score[0]))


def finite_difference_error(model, contract, batch, weights, activations, gradients,
                            steps=(1e-3, 3e-4, 1e-4), directions: int = 3, where=None) -> float:
    """max over random directions u of |FD − ⟨g, u⟩| / max(|FD|, |⟨g, u⟩|) on the head model.

    ``where``, a boolean mask of the activations' shape, limits u to those entries (a central
    difference at a kink averages the two one-sided slopes, which no gradient equals).

    The head runs in float32 (ONNX Runtime has no double Conv) through ReLU-like kinks, so a large
    step crosses kinks and a small one drowns in rounding; per direction the best of ``steps``
    (relative to the activations' RMS) counts. A wrong rule gives errors of order 1.
    """
    cut = cut_model(model, [contract.layer], contract.score_tensor)
    head = make_session(cut.model.SerializeToString(), "cpu")
    extra = {name: batch for name in cut.inputs[1:]}

    def score(a: np.ndarray) -> float:
        s = head.run([cut.output], {cut.inputs[0]: a.astype(np.float32), **extra})[0]
        s = np.moveaxis(s, contract.score_batch_axis, 0).astype(np.float64)
        return float((s * weights.astype(np.float64)).sum())

    rng = np.random.default_rng(0)
    scale = float(np.sqrt(np.mean(activations.astype(np.float64) ** 2))) or 1.0
    errors = []
    for _ in range(directions):
        u = rng.standard_normal(activations.shape) * scale * (1 if where is None else where)
        analytic = float((gradients.astype(np.float64) * u).sum())
        best = 1.0
        for eps in steps:
            numeric = (score(activations + eps * u) - score(activations - eps * u)) / (2 * eps)
            best = min(best, abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-12))
        errors.append(best)
    return max(errors)


def _median_ms(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", help="zoo keys (default: every case)")
    args = parser.parse_args(argv)
    keys = args.keys or list(CASES)
    print("| model | task | automatic layer | default target | explain / plain | plain ms | FD error | map range |")
    print("|---|---|---|---|---|---|---|---|")
    for key in keys:
        model = load(CASES[key])
        if model is None:
            print(f"| {key} | not fetched: run python scripts/fetch_zoo.py {key} | | | | | | |")
            continue
        m = measure(CASES[key], model)
        print(f"| {key} | {m.task} | `{m.layer}` {m.layer_shape} | {m.default_target} | {m.ratio:.2f}× | {m.plain_ms:.1f} | "
              f"{m.fd_error:.1e} | [{m.cam_range[0]:.2f}, {m.cam_range[1]:.2f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
