"""Throughput of ``onnxcam run --engine ray`` with 1 and 2 workers on one machine, and of the local engine.

Generates demo-style images (scripts/shapes_data.py, 64×64 PNG, or --side), starts a local Ray
instance with 2 CPUs, and for each worker count runs ``onnxcam run --engine ray`` (Grad-CAM,
demo model, CPU, batches of 8) into a fresh folder. Reports the wall time of the whole command
(interpreter start, Ray connection, actors exporting the model) and the steady rate: images per
second between the first and the last results part written, which leaves start-up out. Each actor
uses one core (one ONNX Runtime thread), so the steady rate divided by the workers is the rate per
core. More than one machine needs a real cluster: this measures only how it scales on one.

    python scripts/bench_ray.py [--images 2000] [--side 64] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import shapes_data  # noqa: E402

MODEL = ROOT / "models" / "shapes.onnx"


def make_images(folder: Path, count: int, side: int) -> None:
    images, _, _ = shapes_data.evaluation_batch(count)
    for i, image in enumerate(images):
        if side != image.shape[0]:
            image = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"img{i:05d}.png"), image)


def onnxcam_run(images: Path, out: Path, *extra: str) -> float:
    command = [sys.executable, "-m", "onnxcam", "-q", "run", str(MODEL), str(images), "-o", str(out), "--provider",
               "cpu", "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    json.loads(done.stdout.strip().splitlines()[-1])
    return time.perf_counter() - started


def steady_rate(out: Path) -> float:
    """Images per second from the first results part to the last (their write times)."""
    parts = sorted((p.stat().st_mtime, len(p.read_text().splitlines())) for p in (out / "results").glob("part-*"))
    images = sum(n for _, n in parts[1:])
    return images / (parts[-1][0] - parts[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.images, args.side)
        print(f"{args.images} images of {args.side}x{args.side}; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs visible")
        local = onnxcam_run(folder, Path(tmp) / "local")
        print(f"local engine (ORT's default threads): {local:.1f} s wall, {args.images / local:.0f} images/s")
        ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            address = ray.get_runtime_context().gcs_address
            for workers in args.workers:
                out = Path(tmp) / f"ray-{workers}"
                wall = onnxcam_run(folder, out, "--engine", "ray", "--address", address, "--workers", str(workers))
                rate = steady_rate(out)
                print(f"ray, {workers} worker(s): {wall:.1f} s wall ({args.images / wall:.0f} images/s with start-up), "
                      f"steady {rate:.0f} images/s = {rate / workers:.0f} images/s per core")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
