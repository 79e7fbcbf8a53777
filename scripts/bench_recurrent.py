"""Which backward form should the LSTM rule emit: two Scans, or the steps unrolled?

    python scripts/bench_recurrent.py                       # T=40, input and hidden 256, batch 1 and 8
    python scripts/bench_recurrent.py --steps 32 --features 512 --hidden 512

Both forms compute ∂⟨dY, Y⟩/∂X of one forward LSTM (a bidirectional layer is two of them) and are
checked against each other first. *scan* is what onnxcam emits: the LSTM rule writes the op as a
Scan over the steps, and the Scan rule's backward is a second Scan, in reverse, over the engine's
backward of one step. *unrolled* writes the same step once per time step and differentiates that.
Printed: the median ms of ORT runs (CPU, default threads; the forms interleaved, so that load
from other jobs falls on each alike), the session build time and the node count (dead nodes
removed, as the exporter does); the plain LSTM forward is the reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxcam.autodiff import backward, emit_backward
from onnxcam.autodiff.emitter import Emitter
from onnxcam.autodiff.recurrence import CELLS, Recurrence, StepWeights
from onnxcam.exporter import prune_dead_nodes
from onnxcam.graph import GraphView

OPSET = 17
ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")


def lstm_model(steps: int, features: int, hidden: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(hidden)
    weights = [numpy_helper.from_array(rng.uniform(-scale, scale, shape).astype(np.float32), name) for name, shape in
               (("W", (1, 4 * hidden, features)), ("R", (1, 4 * hidden, hidden)), ("B", (1, 8 * hidden)))]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hidden, name="lstm")
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, "batch", features]),
                         helper.make_tensor_value_info("dy", TensorProto.FLOAT, [steps, 1, "batch", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 1, "batch", hidden])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def scan_gradient(model: onnx.ModelProto) -> onnx.ModelProto:
    """What onnxcam emits: the LSTM rule's Scan form, differentiated by the engine (the Scan rule)."""
    result = backward(model, {"y": "dy"}, ["x"])
    return _with_output(result.model, result.names["x"])


def unrolled_gradient(model: onnx.ModelProto, steps: int, hidden: int) -> onnx.ModelProto:
    """The alternative: the same step written out once per time step (no Scan), differentiated by the engine."""
    gradient = onnx.ModelProto()
    gradient.CopyFrom(model)
    e = Emitter(GraphView(gradient), prefix="unrolled")
    spec = Recurrence("LSTM", hidden, ("forward",), (ACTIVATIONS,))
    first = e.const(0, dtype=np.int64)
    bias = e.reduce_sum(e.reshape(e.op("Gather", "B", first, axis=0), e.ints([2, 4 * hidden])), [0], keepdims=False)
    projected = e.add(e.op("MatMul", "x", e.transpose(e.op("Gather", "W", first, axis=0), [1, 0])), bias)
    weights = StepWeights([e.transpose(e.op("Gather", "R", first, axis=0), [1, 0])], ACTIVATIONS)
    state_shape = e.op("Concat", e.ints([1]), e.slice(e.shape("x"), [1], [2], [0]), e.ints([hidden]), axis=0)
    h = c = e.op("Expand", e.scalar(0.0, "x"), state_shape)  # (1, N, H)
    ys = []
    for t in range(steps):
        h, c = CELLS["LSTM"](e, spec, weights, e.op("Gather", projected, e.const(t, dtype=np.int64), axis=0), h, c)
        ys.append(h)
    y = e.unsqueeze(e.op("Concat", *ys, axis=0), [1])  # (T, 1, N, H)
    gradient.graph.node.extend(e.nodes)
    gradient.graph.initializer.extend(e.initializers)
    grad_emit = Emitter(GraphView(gradient, complete=False), prefix="unrolled_grad")
    dx = emit_backward(grad_emit, {y: "dy"}, ["x"])["x"]
    gradient.graph.node.extend(grad_emit.nodes)
    gradient.graph.initializer.extend(grad_emit.initializers)
    return _with_output(gradient, dx)


def _with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """``model`` returning only ``name`` (the gradient), its dead nodes removed as the exporter does."""
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    prune_dead_nodes(model)
    return model


def _session(model: onnx.ModelProto) -> tuple[ort.InferenceSession, float]:
    started = time.perf_counter()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, time.perf_counter() - started


def _time_ms(call) -> float:
    started = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    model = lstm_model(args.steps, args.features, args.hidden)
    forms = {"LSTM forward (reference)": model, "scan (what onnxcam emits)": scan_gradient(model),
             "unrolled": unrolled_gradient(model, args.steps, args.hidden)}
    sessions = {name: _session(m) for name, m in forms.items()}
    print(f"T={args.steps}, input {args.features}, hidden {args.hidden}, one direction; ORT {ort.__version__}, CPU")
    print("| form | nodes | session build (s) | " + " | ".join(f"batch {b} (ms)" for b in args.batch) + " |")
    print("|---|---|---|" + "---|" * len(args.batch))
    rng = np.random.default_rng(1)
    feeds = {b: {"x": rng.standard_normal((args.steps, b, args.features), dtype=np.float32),
                 "dy": rng.standard_normal((args.steps, 1, b, args.hidden), dtype=np.float32)} for b in args.batch}
    for b in args.batch:  # the two backward forms agree before they are timed
        scan, unrolled = (sessions[name][0].run(None, feeds[b])[0] for name in list(sessions)[1:])
        assert np.abs(unrolled - scan).max() <= 1e-4 * np.abs(unrolled).max(), "the two backward forms disagree"
    ms = {(name, b): [] for name in sessions for b in args.batch}
    for _ in range(args.repeats):  # interleaved, so that load from other jobs falls on every form alike
        for (name, b), times in ms.items():
            times.append(_time_ms(lambda: sessions[name][0].run(None, feeds[b])))
    for name, (_, build) in sessions.items():
        medians = [statistics.median(ms[name, b]) for b in args.batch]
        print(f"| {name} | {len(forms[name].graph.node)} | {build:.2f} | " + " | ".join(f"{m:.1f}" for m in medians) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
