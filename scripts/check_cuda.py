"""Check onnxcam's CUDA path on a GPU machine (a few minutes): CUDA maps against the CPU's, and what explaining costs.

Models: the bundled demos (``demo`` = models/shapes.onnx, ``vit`` = models/shapes_vit.onnx, ``det`` =
models/shapes_det.onnx) and, when torch is importable, ResNet-50, MobileNetV2 and EfficientNet-B0
from tests/nets.py (random weights, 224×224; scripts/bench_explain.py builds them). For each model
and batch size, one random batch is explained with Grad-CAM at the automatic layer:

* on the CPU, with plain ``session.run`` calls: the reference maps (their classes are the ones
  explained below, so that a near-tie of two logits cannot flip the class);
* on CUDA through IO binding in FP32 (``cuda_options={"use_tf32": 0}``), the maps copied back and
  with ``device_outputs=True`` (read back here with ``.numpy()``): both must be within
  ``--tolerance`` (1e-4) of the CPU's;
* on CUDA with ONNX Runtime's default options (TF32 convolutions and matrix products on GPUs that
  have them): its difference is printed, not checked, and it is the one timed: plain inference
  against ``explain``, each with host outputs and with outputs left on the GPU, interleaved, best
  of ``--repeat`` rounds.

``--provider cpu`` runs the same comparisons where there is no GPU: the IO-binding path on the CPU
against plain runs (a self-test of this script and of the binding path).

    python scripts/check_cuda.py [--provider cuda|cpu] [--models demo,vit,det,resnet50,mobilenet_v2,efficientnet_b0]
                                 [--batches 1,8] [--repeat 20] [--tolerance 1e-4]

Exit status: 0 every checked map is within the tolerance; 1 one is not (or a model failed to run
with an onnxcam error, printed); 2 CUDA cannot be used
here (the message says why); 3 a model could not be built (torch missing for a torch model asked
for by name).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from onnxcam import Explainer, OnnxCamError  # noqa: E402
from onnxcam.bench import interleaved  # noqa: E402
from onnxcam.graph import load_model  # noqa: E402
from onnxcam.runtime import cuda_problem, model_session  # noqa: E402

DEMOS = {"demo": ROOT / "models" / "shapes.onnx", "vit": ROOT / "models" / "shapes_vit.onnx",
         "det": ROOT / "models" / "shapes_det.onnx"}
TORCH_NETS = ("resnet50", "mobilenet_v2", "efficientnet_b0")
FP32 = {"use_tf32": 0}
NOT_AVAILABLE, NOT_BUILT, DIFFERENT = 2, 3, 1


@dataclass
class Row:
    model: str
    batch: int
    checked: float  # max |map − CPU map| of the FP32 CUDA maps, host and device outputs (CPU mode: bound vs plain)
    default: float | None  # the same for ORT's default options (TF32): printed, not checked; None in CPU mode
    times: dict[str, float]  # best seconds per call


def build(key: str):
    if key in DEMOS:
        return load_model(DEMOS[key])
    from bench_explain import build as build_net  # torch, tests/nets.py

    return build_net(key)


def available_models(asked: str | None) -> list[str]:
    has_torch = importlib.util.find_spec("torch") is not None
    if asked:
        keys = asked.split(",")
        unknown = [k for k in keys if k not in (*DEMOS, *TORCH_NETS)]
        if unknown:
            raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join([*DEMOS, *TORCH_NETS])}")
        if not has_torch and set(keys) & set(TORCH_NETS):
            print(f"torch is not importable: cannot build {', '.join(set(keys) & set(TORCH_NETS))}", file=sys.stderr)
            raise SystemExit(NOT_BUILT)
        return keys
    if not has_torch:
        print("torch is not importable: checking the demo models only")
    return [*DEMOS, *(TORCH_NETS if has_torch else ())]


def explainers(model, provider: str) -> tuple[Explainer, Explainer, Explainer]:
    """The CPU reference (plain runs), the checked explainer and the timed one."""
    reference = Explainer(model, provider="cpu", io_binding=False)
    if provider == "cpu":
        bound = Explainer(model, provider="cpu", io_binding=True)
        return reference, bound, bound
    checked = Explainer(model, provider="cuda", cuda_options=FP32)
    timed = Explainer(model, provider="cuda")
    for explainer in (checked, timed):
        if explainer.provider != "cuda":
            print(f"CUDA is not usable here: {explainer.provider_reason}", file=sys.stderr)
            raise SystemExit(NOT_AVAILABLE)
    return reference, checked, timed


def largest_difference(explainer: Explainer, batch: np.ndarray, reference) -> float:
    """Over host and device outputs, for the CPU's targets (a near-tie of two logits must not flip the class)."""
    host = explainer.explain(batch, target=reference.target).cam
    kept = explainer.explain(batch, target=reference.target, device_outputs=True).cam.numpy()
    return max(float(np.abs(host - reference.cam).max()), float(np.abs(kept - reference.cam).max()))


def timings(model, explainer: Explainer, provider: str, batch: np.ndarray, repeat: int) -> dict[str, float]:
    plain = model_session(model, provider, io_binding=True)
    feeds = {explainer.input_name: batch}
    outputs = [o.name for o in plain.session.get_outputs()]
    calls = {
        "plain": lambda: plain.run(outputs, feeds),
        "explain": lambda: explainer.explain(batch),
        "plain, device outputs": lambda: plain.run(outputs, feeds, device_outputs=outputs),
        "explain, device outputs": lambda: explainer.explain(batch, device_outputs=True),
    }
    return {name: min(seconds) for name, seconds in interleaved(calls, repeat).items()}


def check_model(key: str, provider: str, batches: list[int], repeat: int) -> list[Row]:
    model = build(key)
    reference, checked, timed = explainers(model, provider)
    fixed = reference.input_shape[0]
    rows = []
    for n in batches if fixed is None else [fixed]:
        batch = np.random.default_rng(n).standard_normal((n, *reference.input_shape[1:])).astype(np.float32)
        expected = reference.explain(batch)
        difference = largest_difference(checked, batch, expected)
        default = None if timed is checked else largest_difference(timed, batch, expected)
        rows.append(Row(key, n, difference, default, timings(model, timed, provider, batch, repeat)))
    return rows


def report(rows: list[Row], provider: str, tolerance: float) -> None:
    label = "CUDA FP32 vs CPU" if provider == "cuda" else "bound vs plain"
    print(f"| model | batch | plain (ms) | explain (ms) | explain/plain | plain, device out (ms) | "
          f"explain, device out (ms) | explain/plain, device out | max diff {label} | max diff, ORT defaults |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = {name: 1000 * s for name, s in r.times.items()}
        verdict = "" if r.checked <= tolerance else " FAIL"
        print(f"| {r.model} | {r.batch} | {t['plain']:.2f} | {t['explain']:.2f} | {t['explain'] / t['plain']:.2f}× | "
              f"{t['plain, device outputs']:.2f} | {t['explain, device outputs']:.2f} | "
              f"{t['explain, device outputs'] / t['plain, device outputs']:.2f}× | {r.checked:.2e}{verdict} | "
              f"{'—' if r.default is None else f'{r.default:.2e}'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (the check), or cpu: the same comparisons through IO binding on the CPU")
    parser.add_argument("--models", default=None, help=f"of {','.join([*DEMOS, *TORCH_NETS])} (default: all that can be built)")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if args.provider == "cuda" and cuda_problem():
        print(f"CUDA is not usable here: {cuda_problem()}", file=sys.stderr)
        return NOT_AVAILABLE
    rows, broken = [], []
    for key in available_models(args.models):
        try:
            rows += check_model(key, args.provider, [int(b) for b in args.batches.split(",")], args.repeat)
        except OnnxCamError as exc:
            print(f"{key}: {exc}", file=sys.stderr)
            broken.append(key)
    report(rows, args.provider, args.tolerance)
    failed = [r for r in rows if not r.checked <= args.tolerance]
    if failed or broken:
        print(f"{len(failed)} of {len(rows)} checks differ by more than {args.tolerance:g}; "
              f"{len(broken)} model(s) failed to run", file=sys.stderr)
        return DIFFERENT
    print(f"all {len(rows)} checks within {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
