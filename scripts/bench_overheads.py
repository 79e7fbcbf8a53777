"""Peak memory, export time and start-up: the costs around the explanation itself.

Each figure comes from a fresh subprocess on the CPU (ResNet-50, MobileNetV2 and ConvNeXt-T built
by tests/nets.py, random weights, 224×224):

* peak RSS of a plain ONNX Runtime session on the model file, batch 8 × ``--runs`` runs, against
  an ``onnxcam.Explainer`` (Grad-CAM, automatic layer) doing the same;
* ``onnxcam.export`` time (median of 3, in-process) and the wall time of ``onnxcam export``;
* the wall time of ``onnxcam --version`` (median of 5).

With ``--baseline REV`` every figure is also measured with onnxcam as of git revision REV (its
package extracted to a temporary folder): before and after side by side.

    python scripts/bench_overheads.py [--runs 20] [--baseline 27ec07e] [--models resnet50,mobilenet_v2,convnext_tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from baseline import package_at, python  # noqa: E402

BUILDERS = {"resnet50": "resnet50", "mobilenet_v2": "mobilenet_v2_224", "convnext_tiny": "convnext_tiny_224"}

PEAK = """
import sys, numpy as np
kind, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
if kind == "plain":
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    run = lambda: session.run(None, {"input": x})
else:
    from onnxcam import Explainer
    explainer = Explainer(path, provider="cpu")
    run = lambda: explainer.explain(x)
for _ in range(runs):
    run()
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024)  # reset at exec, unlike ru_maxrss
"""

EXPORT = """
import statistics, sys, time, onnx
from onnxcam import export
model = onnx.load(sys.argv[1])
times = []
for _ in range(3):
    start = time.perf_counter()
    export(model)
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def wall(args: list[str], pythonpath: Path, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        python(args, pythonpath)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_model(key: str, path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import onnx
    import torch

    from tests import nets

    module, _ = getattr(nets, BUILDERS[key])()
    onnx.save(nets.export_onnx(module, torch.randn(1, 3, 224, 224)), str(path))


def measure(model: Path, pythonpath: Path, runs: int, workdir: Path) -> dict[str, float]:
    out = workdir / "out.cam.onnx"
    return {
        "plain session peak (MiB)": float(python(["-c", PEAK, "plain", str(model), str(runs)], pythonpath)),
        "Explainer peak (MiB)": float(python(["-c", PEAK, "explainer", str(model), str(runs)], pythonpath)),
        "export() (s)": float(python(["-c", EXPORT, str(model)], pythonpath)),
        "onnxcam export wall (s)": wall(["-m", "onnxcam", "-q", "export", str(model), "-o", str(out), "--overwrite"],
                                        pythonpath),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--baseline", default=None, metavar="REV")
    parser.add_argument("--models", default=",".join(BUILDERS))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        versions = {"now": ROOT, **({args.baseline: package_at(args.baseline, work)} if args.baseline else {})}
        rows = []
        for key in args.models.split(","):
            model = work / f"{key}.onnx"
            make_model(key, model)
            figures = {name: measure(model, path, args.runs, work) for name, path in versions.items()}
            for figure in figures["now"]:
                rows.append((key, figure, *[figures[v][figure] for v in versions]))
        rows.append(("—", "onnxcam --version wall (s)", *[wall(["-m", "onnxcam", "--version"], path, 5)
                                                         for path in versions.values()]))

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; Explainer/plain ratios from the rows")
    print("| model | figure | " + " | ".join(versions) + " |")
    print("|---|---|" + "---|" * len(versions))
    for key, figure, *values in rows:
        cells = [f"{v:.0f}" if "MiB" in figure else f"{v:.2f}" for v in values]
        print(f"| {key} | {figure} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
