"""The small builder that gradient rules write ONNX nodes through.

It names new tensors uniquely, stores constants as initializers, and hides the opset
differences of the ops rules emit (``ReduceSum`` and ``Unsqueeze`` axes, ``Slice`` and ``Pad``
attributes; ops that older opsets lack or take narrower, through ``onnxcam.autodiff.legacy``), so
that a rule reads like the math it implements at every opset from 7 on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxcam.autodiff.legacy import legacy_form
from onnxcam.errors import ModelError
from onnxcam.graph import GraphView

__all__ = ["Emitter"]

# Opset from which these ops take their axes as an input instead of an attribute.
_AXES_AS_INPUT = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18, "ReduceProd": 18,
                  "ReduceL2": 18, "Unsqueeze": 13, "Squeeze": 13}


_BOOL_OUTPUTS = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
                 "IsInf"}
_INT64_OUTPUTS = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero"}


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
        self._known: dict[str, list[int | None]] = {}  # 1-D int64 tensors whose values are (partly) known
        self._broadcast: dict[str, tuple[str, frozenset[int]]] = {}  # Expand output -> (its input, axes it spreads)

    def write_into(self, model: onnx.ModelProto) -> None:
        """Append the emitted nodes and initializers to ``model`` (the model the view reads).

        IR 3 wants every initializer listed among the graph inputs as well; IR 4 lifted that, and
        reads IR-3 models the same way, so such a model is raised to IR 4 instead.
        """
        model.graph.node.extend(self.nodes)
        model.graph.initializer.extend(self.initializers)
        model.ir_version = max(model.ir_version, 4)

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
        if array.ndim == 1 and array.dtype == np.int64:
            self._known[name] = [int(v) for v in array]
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
        self._broadcast.update(other._broadcast)
        self._taken.update(o for node in other.nodes for o in (*node.output, node.name))
        self._taken.update(t.name for t in other.initializers)

    def dtype(self, name: str) -> np.dtype:
        return self._dtypes.get(name) or self.view.np_dtype(name)

    def known_value(self, name: str) -> np.ndarray | None:
        """The value of an int64 vector when it is known while exporting (constants, static dims)."""
        values = self._known.get(name)
        if values is None:
            constant = self.view.const_value(name)
            return None if constant is None else np.asarray(constant)
        return None if None in values else np.asarray(values, dtype=np.int64)

    # --- generic node ----------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str | None, outputs: int = 1, dtype_of: str | None = None, **attrs):
        """Emit ``op_type`` in the form of the model's opset; returns its output name (or a list of
        names when ``outputs`` > 1).

        ``dtype_of`` names the tensor whose dtype the (first) output has, when not the first input's.
        """
        form = legacy_form(self, op_type, [i for i in inputs if i])
        if form is not None:
            return form.write(self, *inputs, **attrs)
        return self.node(op_type, *inputs, outputs=outputs, dtype_of=dtype_of, **attrs)

    def node(self, op_type: str, *inputs: str | None, outputs: int = 1, dtype_of: str | None = None, **attrs):
        """Emit one node exactly as given (``op`` writes older opsets' forms where needed)."""
        names = [self.fresh(op_type) for _ in range(outputs)]
        node = helper.make_node(op_type, ["" if i is None else i for i in inputs], names,
                                name=self.fresh(f"{op_type}_node"), **attrs)
        self.nodes.append(node)
        dtype = self._output_dtype(op_type, inputs, dtype_of, attrs)
        if dtype is not None:
            for name in names:
                self._dtypes[name] = dtype
        return names[0] if outputs == 1 else names

    def _output_dtype(self, op_type, inputs, dtype_of, attrs) -> np.dtype | None:
        """The (first) output's dtype: fixed for comparisons, logic, Cast and index ops, else a source's."""
        if op_type in _BOOL_OUTPUTS:
            return np.dtype(bool)
        if op_type in _INT64_OUTPUTS:
            return np.dtype(np.int64)
        if op_type == "Cast":
            return np.dtype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
        source = dtype_of or next((i for i in inputs if i), None)
        return None if source is None else self.dtype(source)

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
        static = self.view.shape(x)  # None for tensors emitted here
        if static is not None:
            self._known[name] = list(static)
        return name

    def reshape(self, x, shape):
        return self.op("Reshape", x, shape, dtype_of=x)

    def reshape_like(self, x, like):
        return self.reshape(x, self.shape(like))

    def expand_like(self, x, like, spread_axes: Sequence[int] = ()):
        """``x`` broadcast to the shape of ``like``; ``spread_axes``: axes along which ``x`` has size 1."""
        out = self.op("Expand", x, self.shape(like), dtype_of=x)
        if spread_axes:
            self._broadcast[out] = (x, frozenset(spread_axes))
        return out

    def transpose(self, x, perm: Sequence[int]):
        if list(perm) == list(range(len(perm))):
            return x
        return self.op("Transpose", x, perm=list(perm))

    def zeros_like(self, x):
        return self.expand_like(self.scalar(0.0, x), x)

    def cast_like(self, x, like):
        return self.cast(x, self.dtype(like))

    def cast(self, x, dtype):
        return self.op("Cast", x, to=int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype))))

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
        source, spread = self._broadcast.get(x, (None, frozenset()))
        if keepdims and axes and set(axes) <= spread:  # the mean of a value copied along those axes is the value
            return source
        return self.reduce("ReduceMean", x, axes, keepdims)

    def unsqueeze(self, x, axes: Sequence[int]):
        return self._axes_call("Unsqueeze", x, axes) if axes else x

    def squeeze(self, x, axes: Sequence[int]):
        return self._axes_call("Squeeze", x, axes) if axes else x

    def slice(self, x, starts, ends, axes, steps=None):
        name = self._slice(x, starts, ends, axes, steps)
        if x in self._known and list(axes) == [0]:
            self._known[name] = self._known[x][slice(int(starts[0]), int(ends[0]), int((steps or [1])[0]))]
        return name

    def _slice(self, x, starts, ends, axes, steps=None):
        if self.opset < 10 and steps is not None and any(int(s) != 1 for s in steps):
            return self._strided_slice_by_gather(x, starts, ends, axes, steps)
        if self.opset < 10:  # Slice-1: attributes, no steps
            return self.op("Slice", x, starts=[int(v) for v in starts], ends=[int(v) for v in ends],
                           axes=[int(v) for v in axes], dtype_of=x)
        inputs = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            inputs.append(self.ints(steps))
        return self.op("Slice", *inputs, dtype_of=x)

    def _strided_slice_by_gather(self, x, starts, ends, axes, steps):
        """Slice-1 has no steps: pick the rows with a Gather of constant indices per axis instead.

        The indices are plain ``range(start, end, step)``, so the bounds must already lie inside the
        axis (as the rules' own slices do); other strided slices need opset 10.
        """
        for start, end, axis, step in zip(*(map(int, v) for v in (starts, ends, axes, steps))):
            if min(start, end, axis) < 0 or step < 1 or end >= 2**31 - 1:
                raise ModelError(f"a strided slice with negative or open bounds needs opset 10 or later, and this "
                                 f"model has opset {self.opset}; convert it with onnx.version_converter, or choose "
                                 "another layer")
            x = self.op("Gather", x, self.ints(range(start, end, step)), axis=axis, dtype_of=x)
        return x

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
                f"reduced; {self.view.unknown_shape_fix()}"
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
