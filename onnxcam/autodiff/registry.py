"""The gradient rule table: one small function per ONNX op type, registered explicitly.

An op is in exactly one of three states:

* differentiable — ``@register("Relu")`` names the function that builds its vector-Jacobian
  product from the incoming gradients of its outputs;
* non-differentiable — ``register_zero("Shape", ...)``: no gradient flows through it (integer,
  boolean and shape-computing ops); the engine cuts paths there;
* unsupported — neither: the engine raises ``UnsupportedOpError`` naming the op and node.

A rule receives a :class:`RuleContext` and returns one entry per node input: the name of the
tensor holding that input's gradient, or ``None`` where it needs or gets none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxcam.autodiff.emitter import Emitter
from onnxcam.errors import ModelError
from onnxcam.graph import node_attribute

__all__ = ["RuleContext", "Rule", "register", "register_zero", "lookup", "is_zero", "carries_gradient", "RULES",
           "ZERO_OPS", "STRAIGHT_THROUGH_OPS"]


@dataclass
class RuleContext:
    """What a rule sees: the node, the emitter, the output gradients and which inputs need one."""

    node: onnx.NodeProto
    emit: Emitter
    grads: list[str | None]  # one per node output; None where no gradient reaches that output
    needs: list[bool]  # one per node input
    active: frozenset[str] = frozenset()  # every tensor the backward sweeps through (for names subgraphs read)
    wrt: frozenset[str] = frozenset()  # the tensors whose gradients are asked for

    @property
    def view(self):
        return self.emit.view

    @property
    def opset(self) -> int:
        return self.emit.opset

    @property
    def inputs(self) -> list[str]:
        return list(self.node.input)

    @property
    def outputs(self) -> list[str]:
        return list(self.node.output)

    @property
    def dy(self) -> str:
        """The gradient of the first output (the only one for most ops)."""
        return self.grads[0]

    def input(self, i: int) -> str | None:
        return self.node.input[i] if i < len(self.node.input) and self.node.input[i] else None

    def attr(self, name: str, default=None):
        return node_attribute(self.node, name, default)

    def shape(self, tensor: str) -> tuple[int | None, ...] | None:
        return self.view.shape(tensor)

    def rank(self, tensor: str) -> int:
        rank = self.view.rank(tensor)
        if rank is None:
            self.fail_shape(f"the rank of '{tensor}' is unknown")
        return rank

    def static_shape(self, tensor: str) -> tuple[int, ...]:
        shape = self.view.shape(tensor)
        if shape is None or any(d is None for d in shape):
            self.fail_shape(f"'{tensor}' needs a static shape here (it is {shape})")
        return tuple(shape)

    def const(self, i: int, what: str = "input") -> np.ndarray | None:
        name = self.input(i)
        return None if name is None else self.view.const_value(name)

    def require_const(self, i: int, what: str) -> np.ndarray:
        value = self.const(i)
        if value is None:
            self.fail(f"its {what} must be a constant (initializer or Constant node)")
        return value

    def fail_shape(self, why: str):
        """Fail on a shape that is not known, with the fix that fits what is fixed already."""
        self.fail(why, self.view.unknown_shape_fix())

    def fail(self, why: str, fix: str = "choose an earlier or later layer, or re-export the model without this form of the op"):
        raise ModelError(f"cannot differentiate {self.node.op_type} node '{self.node.name}' (opset {self.opset}): {why}; {fix}")


RuleFn = Callable[[RuleContext], Sequence[str | None]]


@dataclass(frozen=True)
class Rule:
    op_type: str
    fn: RuleFn
    since: int  # first opset from which this rule applies

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


RULES: dict[str, list[Rule]] = {}
ZERO_OPS: set[str] = set()
STRAIGHT_THROUGH_OPS: set[str] = set()  # ops whose integer outputs carry a gradient (of their value as a number)


def register(*op_types: str, since: int = 1, straight_through: bool = False) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the gradient rule of ``op_types`` from opset ``since`` on.

    ``straight_through``: the op's integer outputs still carry a gradient (QuantizeLinear: the
    straight-through estimator treats rounding as the identity).
    """

    def wrap(fn: RuleFn) -> RuleFn:
        for op_type in op_types:
            if straight_through:
                STRAIGHT_THROUGH_OPS.add(op_type)
            if op_type in ZERO_OPS:
                raise ValueError(f"{op_type} is already registered as non-differentiable")
            rules = RULES.setdefault(op_type, [])
            if any(r.since == since for r in rules):
                raise ValueError(f"two gradient rules for {op_type} from opset {since}")
            rules.append(Rule(op_type, fn, since))
            rules.sort(key=lambda r: r.since)
        return fn

    return wrap


def register_zero(*op_types: str) -> None:
    """Declare ops through which no gradient flows (their outputs are constants to the engine)."""
    for op_type in op_types:
        if op_type in RULES:
            raise ValueError(f"{op_type} already has a gradient rule")
        ZERO_OPS.add(op_type)


def lookup(op_type: str, opset: int) -> Rule | None:
    applicable = [r for r in RULES.get(op_type, []) if r.since <= opset]
    return applicable[-1] if applicable else None


def is_zero(op_type: str) -> bool:
    return op_type in ZERO_OPS


def carries_gradient(view, name: str) -> bool:
    """Float tensors carry gradients; so do the integer outputs of straight-through ops."""
    if view.is_float(name):
        return True
    producer = view.producers.get(name)
    return producer is not None and producer.op_type in STRAIGHT_THROUGH_OPS
