"""The emitter's helpers at every opset where their ONNX form changes (and the opset before it):
each builds a one-helper model that must pass the full checker, run in ONNX Runtime and give
NumPy's answer. A seeded fuzz chains random helpers at random opsets 7–23 the same way;
``ONNXCAM_FUZZ_OPSETS=N`` runs N chains instead of the default 60."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxcam.autodiff.emitter import _AXES_AS_INPUT, Emitter
from onnxcam.autodiff.legacy import LEGACY_FORMS
from onnxcam.autodiff.rules.resize import interpolation_matrix
from onnxcam.errors import ModelError
from onnxcam.graph import GraphView
from onnxcam.methods.head import resize_to
from tests.autodiff.harness import session

OLDEST, NEWEST = 7, 23  # ONNX Runtime 1.31 runs opsets up to 23 (and beyond)
RNG = np.random.default_rng(0)
A = RNG.uniform(-2, 2, (2, 3, 4, 5)).astype(np.float32)
A[0, 0, 0, :3] = [0.0, np.inf, np.nan]  # Where/IsNaN/Sign/Equal meet the special values too
B = RNG.uniform(-2, 2, (3, 1, 5)).astype(np.float32)
B[0, 0, 1] = A[1, 0, 2, 1]  # one equal pair
IDX = np.array([[2, 0, -1], [1, 3, 0]], np.int64)


@dataclass(frozen=True)
class Helper:
    """One emitter call on graph inputs ``x`` (and ``y``), with its NumPy reference."""

    id: str
    build: object  # (emitter, "x", "y") -> output name
    numpy: object  # (x, y) -> expected array
    x: np.ndarray = field(default_factory=lambda: A)
    y: np.ndarray | None = None
    boundaries: tuple[int, ...] = ()  # opsets from which its form changes
    legacy: tuple[str, ...] = ()  # ops it writes in an older form below LEGACY_FORMS[op].since


def _axis_since(op_type):
    return (_AXES_AS_INPUT[op_type],)


FINITE = np.nan_to_num(A, nan=0.5, posinf=1.5)
HELPERS = [
    Helper("reduce-sum", lambda e, x, y: e.reduce_sum(x, [1, 3], keepdims=False),
           lambda x, y: x.sum(axis=(1, 3)), FINITE, boundaries=_axis_since("ReduceSum")),
    Helper("reduce-mean", lambda e, x, y: e.reduce_mean(x, [2]), lambda x, y: x.mean(axis=2, keepdims=True),
           FINITE, boundaries=_axis_since("ReduceMean")),
    Helper("reduce-max", lambda e, x, y: e.reduce("ReduceMax", x, [0, 2], keepdims=False),
           lambda x, y: x.max(axis=(0, 2)), FINITE, boundaries=_axis_since("ReduceMax")),
    Helper("reduce-min", lambda e, x, y: e.reduce("ReduceMin", x, [3]), lambda x, y: x.min(axis=3, keepdims=True),
           FINITE, boundaries=_axis_since("ReduceMin")),
    Helper("reduce-prod", lambda e, x, y: e.reduce("ReduceProd", x, [1]), lambda x, y: x.prod(axis=1, keepdims=True),
           FINITE, boundaries=_axis_since("ReduceProd")),
    Helper("unsqueeze", lambda e, x, y: e.unsqueeze(x, [0, 5]), lambda x, y: x[None, ..., None],
           boundaries=_axis_since("Unsqueeze")),
    Helper("squeeze", lambda e, x, y: e.squeeze(e.slice(x, [1], [2], [1]), [1]), lambda x, y: x[:, 1],
           boundaries=_axis_since("Squeeze")),
    Helper("slice", lambda e, x, y: e.slice(x, [1, -3], [3, 100], [1, 3]), lambda x, y: x[:, 1:3, :, -3:],
           boundaries=(10,)),
    Helper("slice-strided", lambda e, x, y: e.slice(x, [0, 1], [3, 5], [2, 3], [2, 3]),
           lambda x, y: x[:, :, 0:3:2, 1:5:3], boundaries=(10,)),
    Helper("pad", lambda e, x, y: e.pad(x, [0, 1, 0, 2, 0, 0, 1, -1], value=0.5),
           lambda x, y: np.pad(x, [(0, 0), (1, 0), (0, 1), (2, 0)], constant_values=0.5)[..., :-1],
           boundaries=(11,)),
    Helper("expand", lambda e, x, y: e.expand_like(y, x), lambda x, y: np.broadcast_to(y, x.shape), y=B,
           legacy=("Expand",)),
    Helper("zeros-like", lambda e, x, y: e.zeros_like(x), lambda x, y: np.zeros_like(x),
           legacy=("Expand",)),
    Helper("where", lambda e, x, y: e.where(e.op("Greater", x, e.scalar(0.0, x)), x, y),
           lambda x, y: np.where(x > 0, x, y), y=B, legacy=("Where",)),
    Helper("where-nan-unpicked", lambda e, x, y: e.where(e.op("IsNaN", x), y, x), lambda x, y: np.where(np.isnan(x), y, x),
           y=B, legacy=("Where", "IsNaN")),
    Helper("zero-where", lambda e, x, y: e.zero_where(e.op("Less", x, y), y), lambda x, y: np.where(x < y, y, 0),
           FINITE, y=B, legacy=("Where",)),
    Helper("is-nan", lambda e, x, y: e.op("IsNaN", x), lambda x, y: np.isnan(x), legacy=("IsNaN",)),
    Helper("sign", lambda e, x, y: e.op("Sign", x), lambda x, y: np.sign(x), np.nan_to_num(A, nan=0.0),
           legacy=("Sign",)),
    Helper("equal-float", lambda e, x, y: e.op("Equal", x, y), lambda x, y: x == y, y=B,
           legacy=("Equal",)),
    Helper("less-int", lambda e, x, y: e.op("Less", x, e.const(np.int64(0))), lambda x, y: x < 0, IDX,
           legacy=("Less",)),
    Helper("greater-int", lambda e, x, y: e.op("Greater", x, e.const(np.int64(0))), lambda x, y: x > 0, IDX,
           legacy=("Greater",)),
    Helper("max-broadcast", lambda e, x, y: e.op("Max", x, e.scalar(0.25, x)), lambda x, y: np.maximum(x, 0.25),
           FINITE, legacy=("Max",)),
    Helper("min-broadcast", lambda e, x, y: e.op("Min", x, y), lambda x, y: np.minimum(x, y), FINITE, y=B,
           legacy=("Min",)),
    Helper("sum-broadcast", lambda e, x, y: e.sum([x, y, e.scalar(1.0, x)]), lambda x, y: x + y + 1, FINITE, y=B,
           legacy=("Sum",)),
    Helper("mean-broadcast", lambda e, x, y: e.op("Mean", x, y), lambda x, y: (x + y) / 2, FINITE, y=B,
           legacy=("Mean",)),
    Helper("one-hot", lambda e, x, y: e.op("OneHot", x, e.slice(e.shape(y), [1], [2], [0]),
                                           e.const(np.array([0.0, 1.0], np.float32)), axis=-1),
           lambda x, y: np.eye(4, dtype=np.float32)[x % 4], IDX, y=np.zeros((2, 4), np.float32),
           legacy=("OneHot",)),
    Helper("cast-like", lambda e, x, y: e.cast_like(e.op("Greater", x, e.scalar(0.0, x)), x),
           lambda x, y: (x > 0).astype(np.float32), FINITE),
    Helper("unbroadcast", lambda e, x, y: e.unbroadcast(x, y, x), lambda x, y: x.sum(axis=(0, 2), keepdims=True)[0],
           FINITE, y=B, boundaries=_axis_since("ReduceSum")),
    Helper("reduced-count", lambda e, x, y: e.reduced_count([None], x, y, x),
           lambda x, y: np.float32(x.size / y.size), y=B),
    Helper("resize-to-image", lambda e, x, y: resize_to(e, x, y, "NCHW", (4, 5)),
           lambda x, y: _bilinear(x, y.shape[2:]), FINITE[:, :1], y=np.zeros((2, 3, 7, 9), np.float32),
           boundaries=(11, 13)),
]


def _bilinear(x, size):
    rows = interpolation_matrix(x.shape[2], size[0], size[0] / x.shape[2], "linear", "half_pixel", "floor")
    cols = interpolation_matrix(x.shape[3], size[1], size[1] / x.shape[3], "linear", "half_pixel", "floor")
    return (rows @ x.astype(np.float64) @ cols.T).astype(np.float32)


def _opsets(h: Helper) -> list[int]:
    changes = [*h.boundaries, *(LEGACY_FORMS[op].since for op in h.legacy)]
    around = {o for b in changes for o in (b - 1, b)}
    return sorted(o for o in around | {OLDEST, NEWEST} if OLDEST <= o <= NEWEST)


def _inputs(feeds: dict[str, np.ndarray], opset: int):
    model = helper.make_model(
        helper.make_graph([], "helpers", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype),
                                                                        list(v.shape)) for n, v in feeds.items()], []),
        opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return model


def run_emitted(feeds: dict[str, np.ndarray], opset: int, build) -> tuple[np.ndarray, np.ndarray]:
    """Emit ``build(emitter) -> (output name, NumPy's value)`` into a model of ``feeds`` at ``opset``;
    the output is declared with NumPy's shape and type, the model checked and run in ORT."""
    model = _inputs(feeds, opset)
    emit = Emitter(GraphView(model))
    out, expected = build(emit)
    expected = np.asarray(expected)
    emit.write_into(model)
    model.graph.output.append(helper.make_tensor_value_info(out, helper.np_dtype_to_tensor_dtype(expected.dtype),
                                                            list(expected.shape)))
    onnx.checker.check_model(model, full_check=True)
    return session(model).run([out], feeds)[0], expected


@pytest.mark.parametrize("h, opset", [pytest.param(h, o, id=f"{h.id}-opset{o}") for h in HELPERS for o in _opsets(h)])
def test_helper_matches_numpy_at_opset(h, opset):
    feeds = {"x": h.x} if h.y is None else {"x": h.x, "y": h.y}
    got, expected = run_emitted(feeds, opset, lambda e: (h.build(e, "x", "y" if h.y is not None else None),
                                                         h.numpy(h.x, h.y)))
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.dtype)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_every_legacy_form_has_a_helper_case():
    covered = {op for h in HELPERS for op in h.legacy}
    assert set(LEGACY_FORMS) - {"EyeLike"} <= covered, sorted(set(LEGACY_FORMS) - {"EyeLike"} - covered)


def test_a_form_an_old_opset_cannot_write_is_refused_naming_the_opset():
    with pytest.raises(ModelError, match="EyeLike, which opset 9 introduced, and this model has opset 8"):
        run_emitted({"x": np.zeros((3, 3), np.float32)}, 8, lambda e: e.op("EyeLike", "x"))
    with pytest.raises(ModelError, match="OneHot with a depth that is only known at run time"):
        run_emitted({"x": IDX}, 8, lambda e: e.op("OneHot", "x", e.op("ReduceMax", "x", keepdims=1),
                                                  e.const(np.array([0.0, 1.0], np.float32))))


# --- fuzz: random chains of helpers at random opsets --------------------------------------------------------------
def _fuzz_step(rng, e, name, value):
    """Apply one random shape-keeping-or-changing helper; returns (name, NumPy value)."""
    rank = value.ndim
    choice = rng.integers(8)
    if choice == 0 and rank > 1:
        axes = sorted(rng.choice(rank, size=rng.integers(1, rank), replace=False).tolist())
        keep = bool(rng.integers(2))
        return e.reduce_sum(name, axes, keep), value.sum(axis=tuple(axes), keepdims=keep)
    if choice == 1 and rank < 5:
        axis = int(rng.integers(rank + 1))
        return e.unsqueeze(name, [axis]), np.expand_dims(value, axis)
    if choice == 2:
        axis = int(rng.integers(rank))
        n = value.shape[axis]
        start, step = int(rng.integers(n)), int(rng.integers(1, 3))
        end = int(rng.integers(start + 1, n + 1))
        index = [slice(None)] * rank
        index[axis] = slice(start, end, step)
        return e.slice(name, [start], [end], [axis], [step]), value[tuple(index)]
    if choice == 3:
        pads = rng.integers(0, 2, 2 * rank).tolist()
        widths = [(pads[i], pads[rank + i]) for i in range(rank)]
        return e.pad(name, pads, 0.5), np.pad(value, widths, constant_values=0.5)
    if choice == 4:
        threshold = float(rng.uniform(-1, 1))
        cond = e.op("Greater", name, e.scalar(threshold, name))
        return e.where(cond, name, e.scalar(-1.0, name)), np.where(value > threshold, value, np.float32(-1))
    if choice == 5:
        return e.op("Max", name, e.scalar(0.1, name)), np.maximum(value, np.float32(0.1))
    if choice == 6 and 1 in value.shape and rank > 1:
        axis = value.shape.index(1)
        return e.squeeze(name, [axis]), np.squeeze(value, axis)
    if choice == 7 and rank > 1:
        return e.reduce_mean(name, [rank - 1]), value.mean(axis=rank - 1, keepdims=True)
    return e.mul(name, e.op("Sign", name)), np.abs(value)


def _fuzz_chain(seed: int):
    rng = np.random.default_rng(seed)
    opset = int(rng.integers(OLDEST, NEWEST + 1))
    x = rng.uniform(-1, 1, tuple(rng.integers(1, 5, rng.integers(1, 5)))).astype(np.float32)

    def build(e):
        name, value = "x", x
        for _ in range(rng.integers(1, 7)):
            name, value = _fuzz_step(rng, e, name, value)
        return name, value

    got, expected = run_emitted({"x": x}, opset, build)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"seed {seed}, opset {opset}")


FUZZ_CHAINS = int(os.environ.get("ONNXCAM_FUZZ_OPSETS", "60"))


@pytest.mark.parametrize("seed", range(FUZZ_CHAINS))
def test_random_helper_chains_pass_the_checker_and_match_numpy(seed):
    _fuzz_chain(seed)
