"""Explain model against plain inference on the CPU: last and middle layers, batch 1 and 8, before and after.

Models: the demo (64×64) and full-size ResNet-50, MobileNetV2 and EfficientNet-B0 built by
tests/nets.py (random weights, 224×224; torchvision's widths and depths). Each gets Grad-CAM
explain models at its automatic (last) layer and at a middle stage. Every session of a model —
plain and explain — runs in one interleaved loop of ``--repeat`` rounds. The times are each
call's best (its least disturbed run: on a shared machine the best estimate of its own cost) and
``explain/plain`` their ratio; ``median ratio`` is the median of the per-round ratios.

``--baseline REV`` also exports each explain model with onnxcam as of git revision REV (in a
subprocess) and times it in the same loop: the "before" column. ``MAC estimate`` is 1 + the
multiply-adds of the convolutions and matrix products downstream of the layer over the model's:
the ratio if the backward ran at the forward's speed per multiply-add (it can run faster: a
Conv's input gradient skips the forward's bias, activation and layout work). ``--profile``
prints, per explain model at the largest batch, the ORT profiler's busiest op types among the
added (backward and CAM) nodes. ``--save DIR`` only writes the plain models (for onnxcam bench).

    python scripts/bench_explain.py [--repeat 10] [--threads 0] [--batches 1,8] [--baseline 27ec07e]
                                    [--models demo,resnet50,mobilenet_v2,efficientnet_b0] [--profile] [--save DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.nets builds the networks
sys.path.insert(0, str(ROOT / "scripts"))

from baseline import package_at, python  # noqa: E402

from onnxcam import export  # noqa: E402
from onnxcam.bench import interleaved  # noqa: E402

# model key -> (builder in tests.nets or a path, input shape, node-name prefix of the middle stage)
MODELS = {
    "demo": (ROOT / "models" / "shapes.onnx", (3, 64, 64), "/features/features.5/"),
    "resnet50": ("resnet50", (3, 224, 224), "/layer2/"),
    "mobilenet_v2": ("mobilenet_v2_224", (3, 224, 224), "/blocks/blocks.5/"),  # torchvision's features.6, 28×28
    "efficientnet_b0": ("efficientnet_b0_224", (3, 224, 224), "/blocks/blocks.4/"),  # features.3, 28×28
    "resnet18": ("resnet18", (3, 224, 224), "/layer2/"),
}


def build(key: str) -> onnx.ModelProto:
    source, shape, _ = MODELS[key]
    if isinstance(source, Path):
        return onnx.load(str(source))
    import torch

    from tests import nets

    module, _ = getattr(nets, source)()
    return nets.export_onnx(module, torch.randn(1, *shape))


def last_output_under(model: onnx.ModelProto, prefix: str) -> str:
    return [n.output[0] for n in model.graph.node if n.name.startswith(prefix)][-1]


def session(model_bytes: bytes, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "onnxcam_profile")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def baseline_export(revision: str, model: onnx.ModelProto, layer: str, workdir: Path) -> bytes:
    """The explain model as onnxcam at ``revision`` builds it (its package, in a subprocess)."""
    source, target = workdir / "plain.onnx", workdir / "before.cam.onnx"
    onnx.save(model, str(source))
    code = ("import sys, onnx; from onnxcam import export; "
            "export(onnx.load(sys.argv[1]), layer=sys.argv[2] or 'auto').save(sys.argv[3])")
    python(["-c", code, str(source), layer, str(target)], package_at(revision, workdir))
    return target.read_bytes()


def multiply_adds(model: onnx.ModelProto, downstream_of: str | None = None) -> int:
    """Multiply-adds of one sample through Conv, Gemm and MatMul nodes (those fed, directly or not,
    by ``downstream_of`` when given); dynamic dims count as 1."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    reached = {downstream_of} if downstream_of else None
    total = 0
    for node in model.graph.node:
        if reached is not None:
            if not reached & set(node.input):
                continue
            reached.update(node.output)
        out = shapes.get(node.output[0])
        if out is None:
            continue
        if node.op_type == "Conv" and node.input[1] in weights:
            total += int(np.prod(out)) * int(np.prod(weights[node.input[1]][1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            k = next((shapes.get(i) or weights.get(i) for i in node.input[:1]), None)
            total += int(np.prod(out)) * (k[-1] if k else 1)
    return total


def busiest_added_ops(explain: ort.InferenceSession, feeds, runs: int = 3, top: int = 6) -> str:
    for _ in range(runs):
        explain.run(["cam"], feeds)
    events = json.loads(Path(explain.end_profiling()).read_text())
    spent = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.startswith("onnxcam/") and name.endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"]
    return ", ".join(f"{op} {us / 1000 / runs:.1f} ms" for op, us in spent.most_common(top))


def bench_model(key: str, batches, repeat: int, threads: int, baseline: str | None, profile: bool, workdir: Path):
    model = build(key)
    _, shape, prefix = MODELS[key]
    layers = {"last": "", "middle": last_output_under(model, prefix)}
    total_macs = multiply_adds(model)
    plain = session(model.SerializeToString(), threads)
    explains, rows = {}, []
    for label, layer in layers.items():
        started = time.perf_counter()
        result = export(model, layer=layer or "auto")
        seconds = time.perf_counter() - started
        floor = 1 + multiply_adds(model, result.plan.layer.tensor) / total_macs
        explains[label] = (session(result.model.SerializeToString(), threads), floor, seconds, result.plan.layer.tensor)
        if baseline:
            explains[f"{label} before"] = (session(baseline_export(baseline, model, layer, workdir), threads), None, None, None)
    input_name = model.graph.input[0].name
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
        calls = {"plain": lambda: plain.run(None, {input_name: x})}
        calls.update({label: (lambda s=s: s.run(["cam"], {input_name: x})) for label, (s, *_) in explains.items()})
        times = interleaved(calls, repeat)
        best = {label: min(t) for label, t in times.items()}  # the least disturbed call of each
        median_ratio = {label: statistics.median(t / p for t, p in zip(times[label], times["plain"])) for label in explains}
        for label in layers:
            _, floor, seconds, tensor = explains[label]
            before = best.get(f"{label} before")
            rows.append(dict(model=key, layer=f"{label} (`{tensor}`)", batch=batch, plain=1000 * best["plain"],
                             explain=1000 * best[label], ratio=best[label] / best["plain"], median=median_ratio[label],
                             before=before / best["plain"] if before else None, floor=floor, export=seconds))
    if profile:
        x = np.random.default_rng(0).standard_normal((max(batches), *shape)).astype(np.float32)
        for label, layer in layers.items():
            result = export(model, layer=layer or "auto")
            print(f"profile {key} {label} b{max(batches)}: "
                  f"{busiest_added_ops(session(result.model.SerializeToString(), threads, True), {input_name: x})}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT's default)")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--models", default="demo,resnet50,mobilenet_v2,efficientnet_b0", help=f"of {','.join(MODELS)}")
    parser.add_argument("--baseline", default=None, metavar="REV", help="also time the explain models onnxcam REV builds")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--save", default=None, metavar="DIR", help="only write the plain models as DIR/KEY.onnx "
                        "(for onnxcam bench) and stop")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        for key in args.models.split(","):
            onnx.save(build(key), str(Path(args.save) / f"{key}.onnx"))
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for key in args.models.split(","):
            rows += bench_model(key, batches, args.repeat, args.threads, args.baseline, args.profile, Path(workdir))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores, load average {load:.1f} at the end), "
          f"onnxruntime {ort.__version__}, threads {args.threads or 'default'}, best of {args.repeat} interleaved rounds")
    before = f" | before ({args.baseline})" if args.baseline else ""
    print(f"| model | layer | batch | plain (ms) | explain (ms) | explain/plain{before} | median ratio | MAC estimate "
          "| export (s) |")
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.baseline else ""))
    for r in rows:
        old = f" | {r['before']:.2f}×" if args.baseline else ""
        print(f"| {r['model']} | {r['layer']} | {r['batch']} | {r['plain']:.1f} | {r['explain']:.1f} | {r['ratio']:.2f}×{old} "
              f"| {r['median']:.2f}× | {r['floor']:.2f}× | {r['export']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
