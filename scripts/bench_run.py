"""``onnxcam run`` throughput against a plain decode + infer loop, on JPEGs in a temporary folder.

Builds a ResNet-18 (tests/nets.py, random weights, 224×224), writes ``--images`` JPEGs (smooth
random pictures, 320×240), then, ``--rounds`` times in turn:

* plain: decode each JPEG (onnxcam's decoder), pre-process it (the imagenet preset) and run the
  plain model, ``--batch`` images per ONNX Runtime call — no explanation, nothing written; once
  with ONNX Runtime's defaults (the reference), once with its threads' spin-waiting off, as
  ``onnxcam run`` has it;
* ``onnxcam run`` (Grad-CAM, default layer, overlays + 16-bit maps + results.jsonl), its own
  ``--json`` timing (the image loop and the commit, not the export);
* with ``--baseline REV``, ``onnxcam run`` as of git revision REV (its package extracted to a
  temporary folder), the same way.

* ``onnxcam run --png fast`` and ``onnxcam run --no-overlay --no-heatmap`` (results.jsonl only).

Each run is a subprocess on the same CPU (ORT default threads). Prints each loop's best round
(ms/image; on a shared machine the least disturbed one) and its throughput as a share of the plain
loop's best, with the median of the per-round shares beside it; then
what encoding one image's overlay and 16-bit map costs under several PNG settings.

``--memory N`` instead checks that memory stays flat: ``onnxcam run`` on the demo model
(models/shapes.onnx, 64×64) over N/10, then N tiny JPEGs (32×32), with and without the
pictures, and prints each run's peak RSS (the child's ru_maxrss).

    python scripts/bench_run.py [--images 500] [--batch 8] [--rounds 3] [--baseline 27ec07e]
``--stages`` instead prints where one image's time goes, as CPU time (all threads; steadier than
the clock on a busy machine): decoding, pre-processing, the plain and the explain model's ONNX
Runtime calls (per image of a batch), and rendering one image's files (compact and fast PNGs).
``--pngs`` prints only the PNG table.

    python scripts/bench_run.py --memory 100000 [--baseline REV]
    python scripts/bench_run.py --stages
    python scripts/bench_run.py --pngs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from baseline import package_at, python  # noqa: E402

PLAIN_LOOP = """
import sys, time, numpy as np, onnxruntime as ort
from pathlib import Path
from onnxcam.io.images import decode_image, preset
model, folder, batch, spin = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
options = ort.SessionOptions()
options.add_session_config_entry("session.intra_op.allow_spinning", spin)
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
pre, paths = preset("imagenet"), sorted(folder.glob("*.jpg"))
start = time.perf_counter()
for first in range(0, len(paths), batch):
    images = [decode_image(p) for p in paths[first:first + batch]]
    session.run(None, {"input": pre.batch(images, (224, 224), "NCHW")})
print(1000 * (time.perf_counter() - start) / len(paths))
"""


def make_images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        picture = cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])


def make_model(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import onnx
    import torch

    from tests import nets

    module, _ = nets.resnet18()
    onnx.save(nets.export_onnx(module, torch.randn(1, 3, 224, 224), output_name="logits"), str(path))


def onnxcam_run(model: Path, folder: Path, out: Path, batch: int, pythonpath: Path, flags=()) -> float:
    stdout = python(["-m", "onnxcam", "-q", "run", str(model), str(folder), "-o", str(out), "--provider", "cpu",
                     "--batch-size", str(batch), "--overwrite", "--json", *flags], pythonpath)
    return json.loads(stdout.strip().splitlines()[-1])["ms_per_image"]


NO_PICTURES = ("--no-overlay", "--no-heatmap")


def make_tiny_images(folder: Path, count: int, parts: int = 10) -> list[Path]:
    """``count`` 32×32 JPEGs in ``parts`` sub-folders (so that part 0 holds count/parts of them)."""
    rng = np.random.default_rng(0)
    folders = [folder / f"part{k}" for k in range(parts)]
    for sub in folders:
        sub.mkdir(parents=True)
    for i in range(count):
        picture = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (32, 32), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folders[i % parts] / f"{i:06d}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folders


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def rss_mb(args: list[str], pythonpath: Path) -> tuple[float, list[float]]:
    """Peak resident memory (MB) of ``python ARGS``, read from its own rusage when it exits, and its
    resident memory sampled every 0.1 s while it ran."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    child = subprocess.Popen([sys.executable, *args], env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL)
    samples = []
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        sample = _rss_mb(child.pid)
        if sample is not None:
            samples.append(sample)
        time.sleep(0.1)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed")
    return usage.ru_maxrss / 1024, samples  # kB on Linux


def memory_check(count: int, baseline: str | None) -> int:
    model = ROOT / "models" / "shapes.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folders = make_tiny_images(work / "images", count)
        variants = {"onnxcam run": ROOT}
        if baseline:
            variants[f"onnxcam run ({baseline})"] = package_at(baseline, work)
        print(f"peak RSS of onnxcam run, demo model, 32×32 JPEGs, batch 8, {os.cpu_count()} cores; the last "
              f"columns: the {count}-image run's RSS at ¼ and ¾ of its time")
        print(f"| run | outputs | {count // 10} images (MB) | {count} images (MB) | growth per 1000 images (MB) "
              "| at ¼ (MB) | at ¾ (MB) |")
        print("|---|---|---|---|---|---|---|")
        for name, pythonpath in variants.items():
            for outputs, flags in (("PNGs + results.jsonl", ()), ("results.jsonl only", NO_PICTURES)):
                if flags and name != "onnxcam run":
                    continue  # older revisions have no such flags
                peaks = []
                for inputs in ([folders[0]], folders):
                    start = time.perf_counter()
                    peak, samples = rss_mb(["-m", "onnxcam", "-q", "run", str(model), *map(str, inputs), "-o",
                                            str(work / "out"), "--provider", "cpu", "--overwrite", *flags], pythonpath)
                    peaks.append(peak)
                    shutil.rmtree(work / "out")
                    log_time = time.perf_counter() - start
                    print(f"  ({name}, {outputs}: {len(inputs)} part(s) in {log_time:.0f} s)", file=sys.stderr)
                growth = (peaks[1] - peaks[0]) / (0.9 * count / 1000)
                quarter, three_quarters = samples[len(samples) // 4], samples[3 * len(samples) // 4]
                print(f"| {name} | {outputs} | {peaks[0]:.0f} | {peaks[1]:.0f} | {growth:.2f} | {quarter:.0f} "
                      f"| {three_quarters:.0f} |")
    print(f"(load average {os.getloadavg()[0]:.1f} at the end)")
    return 0


_SUB = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
PNG_SETTINGS = {
    "OpenCV default": [],
    "level 0 (stored)": [cv2.IMWRITE_PNG_COMPRESSION, 0],
    "stored, no filter": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE, cv2.IMWRITE_PNG_COMPRESSION, 0],
    "level 1": [cv2.IMWRITE_PNG_COMPRESSION, 1],
    "Sub filter, level 1": [*_SUB, cv2.IMWRITE_PNG_COMPRESSION, 1],
    "Huffman only": [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
    "Sub filter, Huffman only": [*_SUB, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
    "RLE": [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE],
}


def png_costs(folder: Path, repeat: int = 20) -> list[tuple[str, str, float, int]]:
    """(picture, setting, median ms, bytes) for one image's overlay and 16-bit map under each PNG setting."""
    sys.path.insert(0, str(ROOT))
    from onnxcam.io import png
    from onnxcam.io.images import decode_image
    from onnxcam.io.render import heatmap16, overlay

    image = decode_image(next(folder.glob("*.jpg")))
    cam = cv2.resize(np.random.default_rng(0).random((7, 7), dtype=np.float32), (224, 224))  # a smooth map
    pictures = {"overlay": overlay(image, cam), "16-bit map": heatmap16(cam, *image.shape[:2])}
    encoders = {setting: (lambda pixels, params=params: cv2.imencode(".png", pixels, params)[1].tobytes())
                for setting, params in PNG_SETTINGS.items()}
    if png.AVAILABLE:
        encoders["Sub filter, ISA-L level 1 (onnxcam.io.png, compact)"] = png.encode
    rows = []
    for picture, pixels in pictures.items():
        for setting, encode in encoders.items():
            times = []
            for _ in range(repeat):  # CPU time (OpenCV may use threads): steadier than the clock on a busy machine
                start = time.process_time()
                data = encode(pixels)
                times.append(time.process_time() - start)
            rows.append((picture, setting, 1000 * statistics.median(times), len(data)))
    return rows


def print_png_costs(rows) -> None:
    print("| PNG of | setting | CPU ms | bytes |\n|---|---|---|---|")
    for picture, setting, ms, size in rows:
        print(f"| {picture} | {setting} | {ms:.2f} | {size} |")


def cpu_ms(work, repeat: int, per: int = 1) -> float:
    """The median CPU time (ms, every thread of the process) of ``work()``, divided by ``per``."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return 1000 * statistics.median(times) / per


def stage_costs(folder: Path, model: Path, batch: int, repeat: int = 20) -> list[tuple[str, float]]:
    """(stage, CPU ms per image) for the stages of ``onnxcam run`` and of the plain loop."""
    sys.path.insert(0, str(ROOT))
    import onnxruntime as ort

    from onnxcam.explainer import Explainer
    from onnxcam.io.images import decode_image
    from onnxcam.io.records import TaskOutputs
    from onnxcam.runtime import spin_waits

    paths = sorted(folder.glob("*.jpg"))[:batch]
    with spin_waits(False):  # both as onnxcam run has them (spinning threads' CPU time depends on the load)
        explainer = Explainer(str(model), provider="cpu")
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    plain = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    images = [decode_image(p) for p in paths]
    rows, _ = explainer.prepare(images)
    result = explainer.explain(rows)
    staging = Path(tempfile.mkdtemp(dir=folder.parent))
    writers = {png: TaskOutputs(explainer, staged=True, png=png) for png in ("compact", "fast")}

    def render(png):
        return lambda: [writers[png].write(staging, f"x{i}", str(p), images[i], result, i)
                        for i, p in enumerate(paths)]

    return [("decode (OpenCV)", cpu_ms(lambda: [decode_image(p) for p in paths], repeat, batch)),
            ("pre-process (resize, normalise)", cpu_ms(lambda: explainer.prepare(images), repeat, batch)),
            ("plain model, ONNX Runtime call", cpu_ms(lambda: plain.run(None, {"input": rows}), repeat, batch)),
            ("explain model: Explainer.explain (its ORT call, map checks)",
             cpu_ms(lambda: explainer.explain(rows), repeat, batch)),
            ("render + write, compact PNGs", cpu_ms(render("compact"), repeat, batch)),
            ("render + write, --png fast", cpu_ms(render("fast"), repeat, batch))]


def print_stages(batch: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder, model = work / "images", work / "resnet18.onnx"
        folder.mkdir()
        make_images(folder, batch)
        make_model(model)
        costs = stage_costs(folder, model, batch)
    print(f"CPU time per image (all threads), 320×240 JPEG → ResNet-18 224×224, batch {batch}, {os.cpu_count()} "
          f"cores, no spin-waiting (load average {os.getloadavg()[0]:.1f} at the end), median of 20")
    print("| stage | CPU ms per image |\n|---|---|")
    for stage, ms in costs:
        print(f"| {stage} | {ms:.2f} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=None, metavar="REV")
    parser.add_argument("--memory", type=int, default=None, metavar="N",
                        help="check peak memory on N/10 and N tiny images instead of timing")
    parser.add_argument("--stages", action="store_true", help="print each stage's CPU time per image instead")
    parser.add_argument("--pngs", action="store_true", help="print only the PNG settings' table")
    args = parser.parse_args()
    if args.memory:
        return memory_check(args.memory, args.baseline)
    if args.stages:
        return print_stages(args.batch)
    if args.pngs:
        with tempfile.TemporaryDirectory() as tmp:
            make_images(Path(tmp), 1)
            print_png_costs(png_costs(Path(tmp), repeat=100))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder, model = work / "images", work / "resnet18.onnx"
        folder.mkdir()
        make_images(folder, args.images)
        pngs = png_costs(folder)
        make_model(model)
        variants = {"onnxcam run": (ROOT, ()), "onnxcam run --png fast": (ROOT, ("--png", "fast")),
                    "onnxcam run --no-overlay --no-heatmap": (ROOT, NO_PICTURES)}
        if args.baseline:
            variants[f"onnxcam run ({args.baseline})"] = (package_at(args.baseline, work), ())
        plain_loops = {"plain decode + infer": "1", "plain decode + infer, no spin-waiting": "0"}
        times: dict[str, list[float]] = {name: [] for name in [*plain_loops, *variants]}
        loads = []
        for _ in range(args.rounds):
            for name, spin in plain_loops.items():
                times[name].append(float(python(["-c", PLAIN_LOOP, str(model), str(folder), str(args.batch), spin],
                                                 ROOT)))
            for name, (pythonpath, flags) in variants.items():
                times[name].append(onnxcam_run(model, folder, work / "out", args.batch, pythonpath, flags))
            loads.append(os.getloadavg()[0])

    print(f"{args.images} JPEGs (320×240) → ResNet-18 224×224, batch {args.batch}, {os.cpu_count()} cores "
          f"(load average {min(loads):.1f}–{max(loads):.1f} after the rounds), {args.rounds} rounds")
    print("| loop | ms/image (best round) | throughput vs plain (best rounds) | median of per-round shares "
          "| the same, vs plain without spin-waiting | ms/image per round |")
    print("|---|---|---|---|---|---|")
    plain, quiet = times["plain decode + infer"], times["plain decode + infer, no spin-waiting"]
    for name, values in times.items():
        share, quiet_share = (statistics.median(p / v for p, v in zip(base, values)) for base in (plain, quiet))
        rounds = " ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {min(values):.1f} | {100 * min(plain) / min(values):.0f} % | {100 * share:.0f} % "
              f"| {100 * quiet_share:.0f} % | {rounds} |")
    print()
    print_png_costs(pngs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
