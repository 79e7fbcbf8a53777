"""The older-opset forms of ops the emitter writes, one small function per op in an explicit table.

Helpers, rules and methods write ops in their modern form (``Expand``, ``Where``, ``Equal`` on floats,
``OneHot``, broadcasting ``Max``, ...). Where the model's opset predates that form, the emitter
writes the function registered here instead, built only from ops the older opset has. Each form
gives the same values as the modern op (NaN and ±inf included; ``Sign`` of NaN is 0 instead of NaN).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxcam.errors import ModelError

__all__ = ["LegacyForm", "LEGACY_FORMS", "legacy_form"]


@dataclass(frozen=True)
class LegacyForm:
    """``write(e, *inputs, **attrs)`` stands for ``op_type`` below opset ``since``, where ``applies``."""

    op_type: str
    since: int  # the first opset whose op_type the emitter can write as it is
    write: Callable
    applies: Callable = lambda e, inputs: True


LEGACY_FORMS: dict[str, LegacyForm] = {}


def _legacy(op_type: str, since: int, applies: Callable = LegacyForm.applies):
    def wrap(fn):
        LEGACY_FORMS[op_type] = LegacyForm(op_type, since, fn, applies)
        return fn

    return wrap


def legacy_form(e, op_type: str, inputs) -> LegacyForm | None:
    """The form to write instead of ``op_type`` at ``e.opset``, or None when the op itself fits."""
    form = LEGACY_FORMS.get(op_type)
    if form is None or e.opset >= form.since or not form.applies(e, inputs):
        return None
    return form


def _is_integer(e, name) -> bool:
    return np.issubdtype(e.dtype(name), np.integer)


def _is_float(e, name) -> bool:
    return np.issubdtype(e.dtype(name), np.floating)


# --- opset 8: Expand; Max, Min, Sum, Mean broadcast ------------------------------------------------------
@_legacy("Expand", 8)
def _expand(e, x, shape):
    """x + zeros(shape): Add broadcasts from opset 7, and Tile spreads a (1, …, 1) zero to ``shape``."""
    ones = e.op("Add", e.op("Mul", shape, e.const(np.int64(0))), e.const(np.int64(1)))
    zero = e.op("Reshape", e.const(np.zeros((), e.dtype(x)), hint="zero"), ones, dtype_of=x)
    return e.op("Add", x, e.op("Tile", zero, shape, dtype_of=x))


def _variadic_broadcast(op_type):
    def write(e, *inputs):
        """Expand every input to the common shape, which opset 6's variadic ops (floats only) require."""
        if len(inputs) == 1:
            return e.node(op_type, *inputs)
        zeros = [e.mul(x, e.scalar(0.0, x)) for x in inputs]  # only their broadcast shape matters
        shape = e.shape(functools.reduce(e.add, zeros))
        return e.node(op_type, *[e.op("Expand", x, shape, dtype_of=x) for x in inputs])

    return write


for _op in ("Max", "Min", "Sum", "Mean"):
    _legacy(_op, 8)(_variadic_broadcast(_op))


# --- opset 9: Where, IsNaN, Sign, OneHot, EyeLike, integer comparisons -----------------------------------
@_legacy("Where", 9)
def _where(e, cond, a, b):
    """Floats: a^m · b^(1−m), m = cond as 0/1 — exact for every value, NaN and ±inf included, since
    x¹ = x and x⁰ = 1 for all x; integers: a·m + b·(1 − m)."""
    pick_a, pick_b = e.cast(cond, e.dtype(a)), e.cast(e.op("Not", cond), e.dtype(a))
    if _is_float(e, a):
        return e.mul(e.op("Pow", a, pick_a), e.op("Pow", b, pick_b))
    return e.add(e.mul(a, pick_a), e.mul(b, pick_b))


def _is_number(e, x):
    """x < +inf or x > −inf: false only for NaN."""
    return e.op("Or", e.op("Less", x, e.scalar(np.inf, x)), e.op("Greater", x, e.scalar(-np.inf, x)))


@_legacy("IsNaN", 9)
def _is_nan(e, x):
    return e.op("Not", _is_number(e, x))


@_legacy("Sign", 9)
def _sign(e, x):
    """(x > 0) − (x < 0) in x's type."""
    positive, negative = (e.cast(e.op(op, x, e.scalar(0.0, x)), e.dtype(x)) for op in ("Greater", "Less"))
    return e.sub(positive, negative)


def _compare_as_double(op_type):
    def write(e, a, b):
        """Greater and Less take integers from opset 9: compare as doubles (exact below 2⁵³)."""
        return e.node(op_type, *[e.cast(x, np.float64) for x in (a, b)])

    return write


for _op in ("Greater", "Less"):
    _legacy(_op, 9, applies=lambda e, inputs: any(_is_integer(e, x) for x in inputs))(_compare_as_double(_op))


@_legacy("OneHot", 9)
def _one_hot(e, indices, depth, values, axis=-1):
    """values[indices == arange(depth)] along a new last axis; ``depth`` must be known when exporting."""
    count = e.known_value(depth)
    if axis != -1 or count is None or count.size != 1:
        _needs_opset(e, "OneHot with a depth that is only known at run time", 9)
    size = int(count.reshape(-1)[0])
    positions = e.op("Concat", e.shape(indices), e.ints([1]), axis=0)
    wrapped = e.where(e.op("Less", indices, e.const(np.zeros((), e.dtype(indices)))),
                      e.add(indices, e.const(np.asarray(size, e.dtype(indices)))), indices)
    column = e.op("Reshape", wrapped, positions, dtype_of=indices)
    hit = e.op("Equal", column, e.const(np.arange(size, dtype=e.dtype(indices)), hint="classes"))
    return e.op("Gather", values, e.cast(hit, np.int64), axis=0, dtype_of=values)


@_legacy("EyeLike", 9)
def _eye_like(e, x, **attrs):
    _needs_opset(e, "EyeLike", 9)


# --- opset 11: Equal on floats ------------------------------------------------------------------------------
@_legacy("Equal", 11, applies=lambda e, inputs: any(_is_float(e, x) for x in inputs))
def _equal(e, a, b):
    """Neither a < b nor a > b, and neither is NaN."""
    ordered = e.op("Or", e.op("Less", a, b), e.op("Greater", a, b))
    return e.op("And", e.op("Not", ordered), e.op("And", _is_number(e, a), _is_number(e, b)))


def _needs_opset(e, what: str, opset: int):
    raise ModelError(f"the explain model needs {what}, which opset {opset} introduced, and this model has opset "
                     f"{e.opset}; convert it first (onnx.version_converter.convert_version(model, {opset})), "
                     "or choose another method")
