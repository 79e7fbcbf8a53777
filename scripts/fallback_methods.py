"""The gradient-free methods that ``--method auto`` could fall back to, where no gradient reaches a layer:
time per image, and whether the map follows the target.

For each method the images are explained once for the default target (timed: the wall time of
``Explainer.explain`` per image, the export not counted) and once per target of a few: time steps
0, T/2 and T-1 of a sequence model, classes 0, C/2 and C-1 of a classifier. ``target r`` is the
mean Pearson correlation between the maps of two different targets of the same image: 1.00 means
the map ignores the target. Prints a Markdown table.

    python scripts/fallback_methods.py MODEL IMAGES... [--preset unit] [--blank 10]
                                       [--methods ablationcam,scorecam,eigencam]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from onnxcam import Explainer
from onnxcam.methods import get_method


def target_indices(explainer: Explainer) -> list[int]:
    """Three targets spread over the task's index: time steps of a sequence, classes of a classifier."""
    dims = explainer.score_shape
    count = dims[1] if explainer.task == "sequence" else dims[-1]
    if count is None:
        raise SystemExit(f"the model's {explainer.task} index has a dynamic size; give a model with a fixed one")
    return sorted({0, count // 2, count - 1})


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / scale) if scale > 0 else 1.0


def measure(model: str, images: list[str], method: str, preset: str, blank: int) -> dict:
    explainer = Explainer(model, method=method, preprocess=preset, provider="cpu", blank=blank)
    explainer.explain(images[:1])  # warm-up: sessions and head models are built on first use
    started = time.perf_counter()
    explainer.explain(images)
    ms = (time.perf_counter() - started) * 1000 / len(images)
    maps = [explainer.explain(images, target=t).cam for t in target_indices(explainer)]
    pairs = [correlation(x[i], y[i]) for x, y in itertools.combinations(maps, 2) for i in range(len(images))]
    return {"method": method, "passes": get_method(method).passes, "ms": ms, "r": float(np.mean(pairs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--preset", default="unit")
    parser.add_argument("--blank", type=int, default=0)
    parser.add_argument("--methods", default="ablationcam,scorecam,eigencam")
    args = parser.parse_args()
    print("| method | passes | ms / image | target r |")
    print("|---|---|---|---|")
    for method in args.methods.split(","):
        row = measure(args.model, args.images, method, args.preset, args.blank)
        print(f"| `{row['method']}` | {row['passes']} | {row['ms']:.0f} | {row['r']:.2f} |")


if __name__ == "__main__":
    main()
