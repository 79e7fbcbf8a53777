"""The gradient forms the backward pass could emit, timed op by op in ONNX Runtime (CPU).

Each row builds one small ONNX graph per form of the same gradient, checks that they compute the
same numbers, and times them interleaved (median ms of ``--repeat`` rounds):

* a stride-1 Conv's input gradient: ConvTranspose + Slice crop, against a Conv on the flipped kernel;
* a stride-2 depthwise Conv's input gradient: ConvTranspose + Slice, ConvTranspose cropping with its
  own pads, zero insertion + Conv, and a polyphase Conv + DepthToSpace;
* a ReLU mask: ``Where(X > 0, dY, 0)`` against ``dY · Cast(X > 0)``.

    python scripts/bench_conv_forms.py [--repeat 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxcam.autodiff.rules.conv import flipped_kernel  # noqa: E402


def session(nodes, initializers: dict, inputs: dict, threads: int) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "form", [helper.make_tensor_value_info(n, TensorProto.FLOAT if a.dtype != bool
                                                                            else TensorProto.BOOL, a.shape)
                                              for n, a in inputs.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ints(*values) -> np.ndarray:
    return np.array(values, np.int64)


def node(op, inputs, output="y", **attrs):
    return helper.make_node(op, inputs, [output], **attrs)


def time_forms(forms: dict, feeds: dict, repeat: int) -> dict[str, float]:
    outputs = {name: s.run(None, feeds)[0] for name, s in forms.items()}
    first = next(iter(outputs.values()))
    for name, out in outputs.items():
        assert out.shape == first.shape and np.allclose(out, first, atol=1e-4), f"{name} computes something else"
    times = {name: [] for name in forms}
    for _ in range(repeat):
        for name, s in forms.items():
            start = time.perf_counter()
            s.run(None, feeds)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def stride1(batch, channels, size, kernel, group, threads):
    """dX of Conv(X, W, pads=k//2) at stride 1, W (C, C/group, k, k)."""
    w = np.random.default_rng(0).standard_normal((channels, channels // group, kernel, kernel)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((batch, channels, size, size)).astype(np.float32)
    p = kernel // 2
    crop = {"w": w, "starts": ints(p, p), "ends": ints(p + size, p + size), "axes": ints(2, 3)}
    return {
        "ConvTranspose + Slice": session([node("ConvTranspose", ["dy", "w"], "full", group=group),
                                          node("Slice", ["full", "starts", "ends", "axes"])], crop, {"dy": dy}, threads),
        "Conv on the flipped kernel": session([node("Conv", ["dy", "wf"], group=group, pads=[kernel - 1 - p] * 4)],
                                              {"wf": flipped_kernel(w, group)}, {"dy": dy}, threads),
    }, {"dy": dy}


def polyphase_kernel(w: np.ndarray, stride: int) -> tuple[np.ndarray, int]:
    """Depthwise w (C, 1, K, K) as one Conv of C·s² outputs whose DepthToSpace is the ConvTranspose."""
    c, _, k, _ = w.shape
    m = -(-k // stride)
    out = np.zeros((c, stride, stride, m, m), np.float32)
    for ry in range(stride):
        for rx in range(stride):
            for my in range(m):
                for mx in range(m):
                    ky, kx = ry + stride * (m - 1 - my), rx + stride * (m - 1 - mx)
                    if ky < k and kx < k:
                        out[:, ry, rx, my, mx] = w[:, 0, ky, kx]
    return out.reshape(c * stride * stride, 1, m, m), m


def stride2_depthwise(batch, channels, size, kernel, threads):
    """dX of a depthwise Conv(X, W, stride 2, pads=k//2) on X of side 2·size, as the full ConvTranspose's crop."""
    w = np.random.default_rng(0).standard_normal((channels, 1, kernel, kernel)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((batch, channels, size, size)).astype(np.float32)
    p, side, full = kernel // 2, 2 * size, 2 * (size - 1) + kernel
    end = full - p - side
    crop = {"starts": ints(p, p), "ends": ints(p + side, p + side), "axes": ints(2, 3)}
    phases, m = polyphase_kernel(w, 2)
    zero_pads = ints(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1)
    dense = ints(0, channels, 2 * size, 2 * size)
    return {
        "ConvTranspose + Slice": session([node("ConvTranspose", ["dy", "w"], "full", group=channels, strides=[2, 2]),
                                          node("Slice", ["full", "starts", "ends", "axes"])], {"w": w, **crop},
                                         {"dy": dy}, threads),
        "ConvTranspose cropping with its pads": session(
            [node("ConvTranspose", ["dy", "w"], group=channels, strides=[2, 2], pads=[p, p, end, end])], {"w": w},
            {"dy": dy}, threads),
        "zero insertion + Conv": session(
            [node("Unsqueeze", ["dy", "axes35"], "u"), node("Pad", ["u", "zero_pads"], "spread"),
             node("Reshape", ["spread", "dense"], "z"),
             node("Conv", ["z", "wf"], "conv", group=channels, pads=[kernel - 1] * 2 + [kernel - 2] * 2),
             node("Slice", ["conv", "starts", "ends", "axes"])],
            {"wf": flipped_kernel(w, channels), "axes35": ints(3, 5), "zero_pads": zero_pads, "dense": dense, **crop},
            {"dy": dy}, threads),
        "polyphase Conv + DepthToSpace": session(
            [node("Conv", ["dy", "wp"], "phases", group=channels, pads=[m - 1] * 4),
             node("DepthToSpace", ["phases"], "d2s", blocksize=2, mode="CRD"),
             node("Slice", ["d2s", "starts", "ends", "axes"])], {"wp": phases, **crop}, {"dy": dy}, threads),
    }, {"dy": dy}


def relu_mask(batch, channels, size, threads):
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal((batch, channels, size, size)).astype(np.float32) for _ in range(2))
    zero = {"zero": np.zeros((), np.float32)}
    return {
        "Greater + Where": session([node("Greater", ["x", "zero"], "m"), node("Where", ["m", "dy", "zero"])], zero,
                                   {"x": x, "dy": dy}, threads),
        "Greater + Cast + Mul": session([node("Greater", ["x", "zero"], "m"),
                                         node("Cast", ["m"], "f", to=TensorProto.FLOAT), node("Mul", ["dy", "f"])],
                                        zero, {"x": x, "dy": dy}, threads),
    }, {"x": x, "dy": dy}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cases = []
    for batch in (1, 8):
        cases += [
            (f"stride-1 depthwise 3×3, 192 ch, 28×28, b{batch}", stride1(batch, 192, 28, 3, 192, args.threads)),
            (f"stride-1 dense 3×3, 256→256, 14×14, b{batch}", stride1(batch, 256, 14, 3, 1, args.threads)),
            (f"stride-2 depthwise 3×3, 144 ch, 56×56, b{batch}", stride2_depthwise(batch, 144, 28, 3, args.threads)),
            (f"stride-2 depthwise 5×5, 672 ch, 14×14, b{batch}", stride2_depthwise(batch, 672, 7, 5, args.threads)),
            (f"ReLU mask, 512 ch, 28×28, b{batch}", relu_mask(batch, 512, 28, args.threads)),
        ]
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, median ms of {args.repeat} interleaved rounds")
    print("| gradient | form | ms |\n|---|---|---|")
    for label, (forms, feeds) in cases:
        for form, ms in time_forms(forms, feeds, args.repeat).items():
            print(f"| {label} | {form} | {ms:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
