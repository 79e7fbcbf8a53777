"""Latency of one explain-model call against plain inference of the same model, on the CPU.

For the demo model and a ResNet-50 (tests/nets.py, random weights, 224×224), at batch 1 and 16:
the export time, then the median wall time of ``session.run`` for the original model and for
the explain model (Grad-CAM, top-1 target), after warm-up, both with ONNX Runtime's default
graph optimisations and the same thread count.

    python scripts/bench_explain.py [--repeat 10] [--threads 0] [--skip-resnet50]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.nets builds the ResNet-50

from onnxcam import export  # noqa: E402


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def median_ms(run, repeat: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench(name: str, model: onnx.ModelProto, shape: tuple[int, ...], batches, repeat: int, threads: int):
    result = export(model)
    plain, explain = session(model, threads), session(result.model, threads)
    input_name = result.plan.image
    rows = []
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
        t_plain = median_ms(lambda: plain.run(None, {input_name: x}), repeat)
        t_explain = median_ms(lambda: explain.run(["cam"], {input_name: x}), repeat)
        rows.append((name, batch, t_plain, t_explain, t_explain / t_plain, result.seconds))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT's default)")
    parser.add_argument("--skip-resnet50", action="store_true")
    args = parser.parse_args()

    rows = bench("demo (shapes.onnx, 64×64)", onnx.load(str(ROOT / "models" / "shapes.onnx")), (3, 64, 64),
                 (1, 16), args.repeat, args.threads)
    if not args.skip_resnet50:
        import torch

        from tests import nets

        module, _ = nets.resnet50()
        model = nets.export_onnx(module, torch.randn(1, 3, 224, 224))
        rows += bench("ResNet-50 (224×224)", model, (3, 224, 224), (1, 16), max(3, args.repeat // 3), args.threads)

    print(f"CPU: {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, threads {args.threads or 'default'}")
    print("| model | batch | plain inference (ms) | explain model (ms) | ratio | export (s) |")
    print("|---|---|---|---|---|---|")
    for name, batch, t_plain, t_explain, ratio, seconds in rows:
        print(f"| {name} | {batch} | {t_plain:.1f} | {t_explain:.1f} | {ratio:.2f}× | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
