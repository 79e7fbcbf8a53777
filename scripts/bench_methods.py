"""Every CAM method on the demo task: pointing game, ONNX Runtime calls and time per image.

Explains 200 fresh demo images (a seed the training script does not use), each for its true
class, with every method in the registry and its default options, on the CPU. A hit is when the
map's maximum lies inside the object's box. Time is the wall time of ``Explainer.explain`` over
the images, ``--batch`` at a time (the export is not counted), per image; ORT calls are the
session runs per batch, the first explain-model run included. Prints a Markdown table, the one
the README quotes.

    python scripts/bench_methods.py [--images 200] [--batch 200] [--methods gradcam,scorecam] [--layer NAME]
                                    [--model models/shapes_vit.onnx]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import shapes_data  # noqa: E402

from onnxcam import Explainer  # noqa: E402
from onnxcam.methods import METHODS  # noqa: E402
from onnxcam.runtime import Session  # noqa: E402

MODEL = ROOT / "models" / "shapes.onnx"


class CallCounter:
    """Counts ``Session.run`` calls (every ORT call an Explainer makes goes through it)."""

    def __init__(self):
        self.calls = 0
        self._run = Session.run

    def __enter__(self):
        counter = self

        def counted(session, *args, **kwargs):
            counter.calls += 1
            return counter._run(session, *args, **kwargs)

        Session.run = counted
        return self

    def __exit__(self, *_):
        Session.run = self._run


def bench(method: str, layer: str, images: list, labels: np.ndarray, boxes: np.ndarray, batch: int,
          model: Path = MODEL) -> dict:
    explainer = Explainer(model, layer=layer, method=method, provider="cpu")
    explainer.explain(images[:1], target=labels[:1])  # warm-up: sessions built, first run done
    cams = []
    with CallCounter() as counter:
        start = time.perf_counter()
        for first in range(0, len(images), batch):
            cams.append(explainer.explain(images[first:first + batch], target=labels[first:first + batch]).cam)
        seconds = time.perf_counter() - start
    batches = -(-len(images) // batch)
    return {"method": method, "pointing": shapes_data.pointing_game(np.concatenate(cams), boxes),
            "calls": counter.calls / batches, "ms": 1000 * seconds / len(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    parser.add_argument("--layer", default="auto", help="the layer explained (default: the automatic choice)")
    parser.add_argument("--model", type=Path, default=MODEL,
                        help="the demo model (default: the CNN; models/shapes_vit.onnx is the transformer)")
    args = parser.parse_args()
    bgr, labels, boxes = shapes_data.evaluation_batch(args.images)
    images = list(bgr)
    print(f"# {args.model.name}: {args.images} demo images, batch {args.batch}, layer {args.layer}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("| method | pointing game | ORT calls / batch | ms / image |")
    print("|---|---|---|---|")
    for method in args.methods.split(","):
        if method == "cam" and args.model != MODEL:
            continue  # CAM needs the CNN's global-average-pool → linear head
        row = bench(method, args.layer, images, labels, boxes, args.batch, args.model)
        print(f"| `{row['method']}` | {row['pointing']:.3f} | {row['calls']:.0f} | {row['ms']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
