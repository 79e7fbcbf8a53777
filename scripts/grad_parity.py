"""Whole-network gradient parity against torch autograd, as a markdown table, and backward's speed.

For every architecture of tests/nets.py (at the opsets the test suite uses) this runs the same
comparison as tests/autodiff/test_networks.py — ONNX gradient of Σ_n logits[n, t_n] at the early,
middle and last stage vs torch autograd, max|Δ| / max|g_torch| — and then times ``backward`` on
an exported ResNet-50 with respect to its last stage (best of 3).

    python scripts/grad_parity.py [--skip-resnet50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.nets, onnxcam

import torch  # noqa: E402

from onnxcam.autodiff import backward  # noqa: E402
from tests.autodiff.parity import (  # noqa: E402
    SEED_INPUT,
    TOLERANCE,
    locate,
    network_parity,
    torch_reference,
    with_seed_input,
)
from tests.nets import ARCHITECTURES, export_onnx, resnet50  # noqa: E402


def parity_table() -> tuple[list[str], bool]:
    lines = ["| architecture | opset | layer | max relative error |", "|---|---|---|---|"]
    ok = True
    for arch, spec in ARCHITECTURES.items():
        _, targets = spec.build()
        for opset in spec.opsets:
            try:
                parity = network_parity(arch, opset)
            except Exception as exc:  # a missing rule or a failed check: report it, go on
                ok = False
                message = f"{type(exc).__name__}: {exc}".splitlines()[0][:120].replace("|", "\\|")
                lines.append(f"| {arch} | {opset} | {', '.join(targets)} | FAILED — {message} |")
                continue
            for target, error in parity.errors.items():
                flag = "" if error <= TOLERANCE else " **(> 1e-4)**"
                ok &= error <= TOLERANCE
                lines.append(f"| {arch} | {opset} | `{target}` | {error:.1e}{flag} |")
    return lines, ok


def time_resnet50(repeat: int) -> list[str]:
    """Time backward on ResNet-50 w.r.t. its first and its last stage (the whole net vs the head)."""
    module, targets = resnet50()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    model = export_onnx(module, x)
    export_s = time.perf_counter() - start
    stages = [targets[0], targets[-1]]
    values, _, _ = torch_reference(module, x.numpy(), stages, [0])
    tensors = locate(model, {"input": x.numpy()}, values)
    seeded = with_seed_input(model, "logits")
    lines = [f"ResNet-50 (224×224, {len(model.graph.node)} forward nodes, exported in {export_s:.1f} s):"]
    for stage in stages:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            result = backward(seeded, {"logits": SEED_INPUT}, [tensors[stage]])
            times.append(time.perf_counter() - start)
        added = len(result.model.graph.node) - len(seeded.graph.node)
        lines.append(f"- backward w.r.t. `{stage}` takes {min(times) * 1000:.0f} ms (best of {repeat}), adding {added} nodes")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-resnet50", action="store_true", help="do not time backward on ResNet-50")
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions (the best is reported)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # the legacy exporter's deprecation notices

    lines, ok = parity_table()
    print("\n".join(lines))
    if not args.skip_resnet50:
        print()
        try:
            print("\n".join(time_resnet50(args.repeat)))
        except Exception as exc:
            ok = False
            print(f"ResNet-50 timing FAILED — {type(exc).__name__}: {exc}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
