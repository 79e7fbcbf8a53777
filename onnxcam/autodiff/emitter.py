"""The small builder that gradient rules write ONNX nodes through.

It names new tensors uniquely, stores constants as initializers, and hides the opset
differences of the ops rules emit most (``ReduceSum`` axes, ``Unsqueeze`` axes, ``Split`` sizes),
so that a rule reads like the math it implements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxcam.errors import ModelError
from onnxcam.graph import GraphView

__all__ = ["Emitter"]

# Opset from which these ops take their axes as an input instead of an attribute.
_AXES_AS_INPUT = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18, "ReduceProd": 18,
                  "ReduceL2": 18, "Unsqueeze": 13, "Squeeze": 13}


class Emitter:
    """Appends nodes and initializers for one rewrite; reads shapes from a ``GraphView``."""

    def __init__(self, view: GraphView, prefix: str = "onnxcam"):
        self.view = view
        self.opset = view.opset
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken = view.all_names()
        self._counter = 0
        self._dtypes: dict[str, np.dtype] = {}

    # --- naming and constants ------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        while True:
            self._counter += 1
            name = f"{self.prefix}/{hint}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def const(self, value, dtype=None, hint: str = "const") -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        self._dtypes[name] = array.dtype
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint="ints")

    def scalar(self, value: float, like: str) -> str:
        """A 0-d constant with the float dtype of tensor ``like``."""
        return self.const(np.asarray(value, dtype=self.dtype(like)), hint="scalar")

    def adopt(self, other: Emitter) -> None:
        """Take over the nodes and initializers that ``other`` built (a rule's own sub-graph)."""
        self.nodes.extend(other.nodes)
        self.initializers.extend(other.initializers)
        self._dtypes.update(other._dtypes)
        self._taken.update(o for node in other.nodes for o in (*node.output, node.name))
        self._taken.update(t.name for t in other.initializers)

    def dtype(self, name: str) -> np.dtype:
        return self._dtypes.get(name) or self.view.np_dtype(name)

    # --- generic node ----------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str | None, outputs: int = 1, dtype_of: str | None = None, **attrs):
        """Emit one node; returns its output name (or a list of names when ``outputs`` > 1).

        ``dtype_of`` names the tensor whose dtype the (first) output has, when not the first input's.
        """
        names = [self.fresh(op_type) for _ in range(outputs)]
        node = helper.make_node(op_type, ["" if i is None else i for i in inputs], names,
                                name=self.fresh(f"{op_type}_node"), **attrs)
        self.nodes.append(node)
        source = dtype_of or next((i for i in inputs if i), None)
        if source is not None:
            for name in names:
                self._dtypes[name] = self.dtype(source)
        return names[0] if outputs == 1 else names

    # --- arithmetic ------------------------------------------------------------------------------
    def add(self, a, b):
        return self.op("Add", a, b)

    def sub(self, a, b):
        return self.op("Sub", a, b)

    def mul(self, a, b):
        return self.op("Mul", a, b)

    def div(self, a, b):
        return self.op("Div", a, b)

    def neg(self, a):
        return self.op("Neg", a)

    def mul_scalar(self, a, value: float):
        return a if value == 1 else self.mul(a, self.scalar(value, a))

    def where(self, cond, a, b):
        return self.op("Where", cond, a, b, dtype_of=a)

    def zero_where(self, cond, a):
        """``a`` where ``cond`` holds, else 0."""
        return self.where(cond, a, self.scalar(0.0, a))

    def sum(self, terms: Sequence[str]) -> str:
        if len(terms) == 1:
            return terms[0]
        return self.op("Sum", *terms)

    # --- shapes ----------------------------------------------------------------------------------
    def shape(self, x):
        name = self.op("Shape", x)
        self._dtypes[name] = np.dtype(np.int64)
        return name

    def reshape(self, x, shape):
        return self.op("Reshape", x, shape, dtype_of=x)

    def reshape_like(self, x, like):
        return self.reshape(x, self.shape(like))

    def expand_like(self, x, like):
        return self.op("Expand", x, self.shape(like), dtype_of=x)

    def transpose(self, x, perm: Sequence[int]):
        if list(perm) == list(range(len(perm))):
            return x
        return self.op("Transpose", x, perm=list(perm))

    def zeros_like(self, x):
        return self.expand_like(self.scalar(0.0, x), x)

    def cast_like(self, x, like):
        return self.op("Cast", x, to=int(helper.np_dtype_to_tensor_dtype(self.dtype(like))), dtype_of=like)

    def _axes_call(self, op_type, x, axes, **attrs):
        axes = [int(a) for a in axes]
        if self.opset >= _AXES_AS_INPUT[op_type]:
            return self.op(op_type, x, self.ints(axes), dtype_of=x, **attrs)
        return self.op(op_type, x, axes=axes, dtype_of=x, **attrs)

    def reduce(self, op_type: str, x, axes: Sequence[int], keepdims: bool = True):
        if not axes:
            return x
        return self._axes_call(op_type, x, axes, keepdims=int(keepdims))

    def reduce_sum(self, x, axes, keepdims=True):
        return self.reduce("ReduceSum", x, axes, keepdims)

    def reduce_mean(self, x, axes, keepdims=True):
        return self.reduce("ReduceMean", x, axes, keepdims)

    def unsqueeze(self, x, axes: Sequence[int]):
        return self._axes_call("Unsqueeze", x, axes) if axes else x

    def squeeze(self, x, axes: Sequence[int]):
        return self._axes_call("Squeeze", x, axes) if axes else x

    def slice(self, x, starts, ends, axes, steps=None):
        if self.opset < 10:  # Slice-1: attributes, no steps
            if steps is not None and any(int(s) != 1 for s in steps):
                raise ModelError(f"a strided slice needs opset 10 or later, and this model has opset {self.opset}; "
                                 "convert it with onnx.version_converter, or choose another layer")
            return self.op("Slice", x, starts=[int(v) for v in starts], ends=[int(v) for v in ends],
                           axes=[int(v) for v in axes], dtype_of=x)
        inputs = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            inputs.append(self.ints(steps))
        return self.op("Slice", *inputs, dtype_of=x)

    def split(self, x, sizes: Sequence[int], axis: int) -> list[str]:
        """``x`` cut along ``axis`` into pieces of the given static sizes (at least two)."""
        sizes = [int(s) for s in sizes]
        if self.opset >= 13:  # Split-13 takes the sizes as an input
            return self.op("Split", x, self.ints(sizes), outputs=len(sizes), axis=axis)
        return self.op("Split", x, outputs=len(sizes), axis=axis, split=sizes)

    def clip(self, x, low: float, high: float):
        if self.opset < 11:  # Clip-6: attributes
            return self.op("Clip", x, min=float(low), max=float(high))
        return self.op("Clip", x, self.scalar(low, x), self.scalar(high, x))

    def pad(self, x, pads: Sequence[int], value: float = 0.0):
        """Constant padding, ``pads`` as ONNX orders them (all begins, then all ends)."""
        if not any(pads):
            return x
        if self.opset < 11:  # Pad-2: attributes
            return self.op("Pad", x, pads=[int(p) for p in pads], value=float(value), mode="constant", dtype_of=x)
        return self.op("Pad", x, self.ints(pads), self.scalar(value, x), mode="constant")

    def reduced_count(self, dims, source: str, reduced: str, like: str) -> str:
        """How many elements of ``source`` each element of ``reduced`` summarises, dtype of ``like``.

        ``dims`` are the reduced dims as shape inference knows them: a constant when all are
        known, else |source| / |reduced| read at run time.
        """
        if all(d is not None for d in dims):
            return self.scalar(float(np.prod(dims, dtype=np.int64)), like)
        sizes = [self.cast_like(self.op("Size", t), like) for t in (source, reduced)]
        return self.div(*sizes)

    def unbroadcast(self, grad: str, operand: str, result: str) -> str:
        """Sum ``grad`` (shaped like ``result``) back to the shape of broadcast ``operand``."""
        operand_shape = self.view.shape(operand)
        result_shape = self.view.shape(result)
        if operand_shape is None or result_shape is None:
            raise ModelError(
                f"rank of '{operand}' or '{result}' is unknown, so a broadcast gradient cannot be "
                "reduced; give the model static ranks (re-export it, or pass --input-shape)"
            )
        lead = len(result_shape) - len(operand_shape)
        axes = list(range(lead))
        for i, dim in enumerate(operand_shape):
            if dim == 1 and result_shape[lead + i] != 1:
                axes.append(lead + i)
        if not axes:
            return grad
        reduced = self.reduce_sum(grad, axes, keepdims=True)
        return self.reshape_like(reduced, operand)
