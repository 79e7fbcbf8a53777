"""A finite-difference check of gradient rules, driven by tables of small one-op cases.

For a case, the harness builds a graph of the single op, asks the engine for the gradient of
⟨u, Y⟩ (u a random cotangent per output) with respect to every differentiable input, and
compares ⟨∂/∂X, v⟩ with the central difference (⟨u, f(X + h v)⟩ − ⟨u, f(X − h v)⟩) / 2h along
random directions v — one input at a time, so that an error in one input cannot hide behind
another. Both sides run in ONNX Runtime with its graph optimisations on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from onnxcam.autodiff import backward


@dataclass(frozen=True)
class X:
    """A differentiable graph input: uniform in [low, high], kept at least ``away`` from ``kinks``."""

    shape: tuple[int, ...]
    low: float = -1.0
    high: float = 1.0
    away: float = 0.0
    kinks: tuple[float, ...] = (0.0,)
    values: np.ndarray | None = None

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        if self.values is not None:
            return np.array(self.values, dtype=np.float32)
        x = rng.uniform(self.low, self.high, size=self.shape)
        for kink in self.kinks if self.away else ():
            near = np.abs(x - kink) < self.away
            x[near] = kink + np.where(x[near] >= kink, self.away, -self.away) * 1.5
        return np.asarray(x, dtype=np.float32)


@dataclass(frozen=True)
class C:
    """A constant input (an initializer), or ``C(None)`` for an omitted optional input."""

    value: object

    def array(self) -> np.ndarray | None:
        return None if self.value is None else np.asarray(self.value)


@dataclass
class Case:
    op: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    opsets: tuple[int, ...] = (13,)
    outputs: int = 1
    h: float = 1e-2
    tol: float = 1e-2
    id: str = ""
    seed: int = 0
    # A case of several nodes: builds the forward (inputs x0.., outputs y0..) at an opset, instead of
    # the single op; ``reference`` builds the function the finite differences run on (default: the
    # forward), for ops whose gradient is a convention (straight-through rounding); ``covers`` names
    # the further ops the graph checks.
    graph: Callable[[int], onnx.ModelProto] | None = None
    reference: Callable[[int], onnx.ModelProto] | None = None
    covers: tuple[str, ...] = ()
    # An equivalent rewrite of a graph into forms ONNX Runtime runs, applied to both graphs before
    # they run (ORT has no kernel for some valid forms, e.g. batch-major recurrent layers).
    runnable: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None

    def label(self) -> str:
        return f"{self.op}-{self.id}" if self.id else self.op


def build_forward(case: Case, opset: int) -> onnx.ModelProto:
    if case.graph is not None:
        return case.graph(opset)
    inputs, initializers, names = [], [], []
    for i, spec in enumerate(case.inputs):
        if isinstance(spec, X):
            name = f"x{i}"
            inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(spec.shape)))
        elif spec.array() is None:
            name = ""
        else:
            name = f"c{i}"
            initializers.append(numpy_helper.from_array(spec.array(), name))
        names.append(name)
    outputs = [f"y{k}" for k in range(case.outputs)]
    node = helper.make_node(case.op, names, outputs, name=f"{case.op}_under_test", **case.attrs)
    graph = helper.make_graph(
        [node], "case", inputs,
        [helper.make_tensor_value_info(o, _output_type(case, k), None) for k, o in enumerate(outputs)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    if model.ir_version <= 3:  # IR 3 lists every initializer among the inputs, as old exporters wrote it
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers)
    return model


def _output_type(case: Case, k: int) -> int:
    """The element type of output ``k``: float, but for Cast's target type, MaxPool's Indices, Dropout's
    mask and what a Scan's body gives."""
    if case.op == "Scan":
        return case.attrs["body"].output[k].type.tensor_type.elem_type
    if case.op == "Cast":
        return case.attrs.get("to", onnx.TensorProto.FLOAT)
    if case.op == "MaxPool" and k == 1:
        return onnx.TensorProto.INT64
    if case.op == "Dropout" and k == 1:
        return onnx.TensorProto.BOOL
    return onnx.TensorProto.FLOAT


def build_gradient(
    forward: onnx.ModelProto, outputs: list[np.ndarray], wrt: dict[str, tuple[int, ...]]
) -> tuple[onnx.ModelProto, list[str]]:
    """The forward model plus cotangent inputs ``u{k}`` and gradient outputs, one per ``wrt``."""
    model = onnx.ModelProto()
    model.CopyFrom(forward)
    del model.graph.output[:]
    seeds = {}
    for k, y in enumerate(outputs):
        elem_type = helper.np_dtype_to_tensor_dtype(y.dtype)
        model.graph.output.append(helper.make_tensor_value_info(f"y{k}", elem_type, list(y.shape)))
        if y.dtype.kind == "f":  # integer outputs (indices) get no cotangent
            model.graph.input.append(helper.make_tensor_value_info(f"u{k}", elem_type, list(y.shape)))
            seeds[f"y{k}"] = f"u{k}"
    result = backward(model, seeds, list(wrt))
    grad_model = result.model
    grad_names = [result.names[w] for w in wrt]
    for name, shape in zip(grad_names, wrt.values()):
        grad_model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape)))
    return grad_model, grad_names


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def check_case(case: Case, opset: int) -> None:
    rng = np.random.default_rng(case.seed)
    forward = build_forward(case, opset)
    feeds = {f"x{i}": spec.sample(rng) for i, spec in enumerate(case.inputs) if isinstance(spec, X)}
    wrt = list(feeds)
    assert wrt, "a case needs at least one differentiable input"

    runnable = case.runnable or (lambda model: model)
    fwd = session(runnable(forward))
    reference = session(runnable(case.reference(opset))) if case.reference else fwd
    outputs = fwd.run([f"y{k}" for k in range(case.outputs)], feeds)
    cotangents = [np.asarray(rng.standard_normal(y.shape), dtype=y.dtype) if y.dtype.kind == "f" else None
                  for y in outputs]

    grad_model, grad_names = build_gradient(forward, outputs, {w: feeds[w].shape for w in wrt})
    onnx.checker.check_model(grad_model, full_check=True)
    grad_feeds = dict(feeds, **{f"u{k}": u for k, u in enumerate(cotangents) if u is not None})
    grads = session(runnable(grad_model)).run(grad_names, grad_feeds)

    def score(x_feeds) -> float:
        ys = reference.run([f"y{k}" for k in range(case.outputs)], x_feeds)
        return sum(float(np.dot(u.ravel().astype(np.float64), y.ravel().astype(np.float64)))
                   for u, y in zip(cotangents, ys) if u is not None)

    for name, grad in zip(wrt, grads):
        assert grad.shape == feeds[name].shape, f"gradient of {name} has shape {grad.shape}, input has {feeds[name].shape}"
        for _ in range(2):
            v = np.asarray(rng.standard_normal(feeds[name].shape), dtype=np.float32)
            plus = dict(feeds, **{name: np.asarray(feeds[name] + case.h * v, dtype=np.float32)})
            minus = dict(feeds, **{name: np.asarray(feeds[name] - case.h * v, dtype=np.float32)})
            numeric = (score(plus) - score(minus)) / (2 * case.h)
            analytic = float(np.dot(grad.ravel().astype(np.float64), v.ravel().astype(np.float64)))
            scale = max(float(np.linalg.norm(grad)), abs(numeric))
            assert scale > 1e-6, f"{case.label()}: degenerate case, the gradient of {name} is zero"
            error = abs(numeric - analytic) / scale
            assert error <= case.tol, (
                f"{case.label()} opset {opset}, input {name}: analytic {analytic:.6g} vs "
                f"finite difference {numeric:.6g} (relative error {error:.2e} > {case.tol})"
            )
