"""A read-only view of an ONNX model: producers, consumers, inferred shapes and types, constants.

``GraphView`` never mutates the ``ModelProto`` it is given; rewrites copy the model first.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from onnxcam.errors import ModelError

__all__ = ["GraphView", "load_model", "load_model_and_origin", "check_attributes", "outer_names", "sort_topologically",
           "without_weights", "node_attribute", "FLOAT_TYPES", "size_options", "size_fixed_by"]

log = logging.getLogger(__name__)

# The options that fix the input's size, as the errors about unknown shapes name them: --input-shape,
# which every command that plans has; the Explainer's callers (run, compare, eval) also fix a dynamic
# height and width with their pre-processing --size (see size_options).
_SIZE_OPTIONS: ContextVar[str] = ContextVar("size_options", default="--input-shape")


@contextmanager
def size_options(text: str):
    """Inside, errors that ask for a fixed input size name ``text`` as the options that fix it."""
    token = _SIZE_OPTIONS.set(text)
    try:
        yield
    finally:
        _SIZE_OPTIONS.reset(token)


def size_fixed_by() -> str:
    """The options that fix the input's size where the model is being read ("--input-shape" by default)."""
    return _SIZE_OPTIONS.get()


FLOAT_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
    }
)


def load_model(source: str | Path | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Load a model from a path, serialized bytes or a ModelProto (which is copied)."""
    return load_model_and_origin(source)[0]


def load_model_and_origin(source: str | Path | bytes | onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """:func:`load_model`, and whether the file kept its weights in external data files (then loaded
    into the returned model), so that what is written from it can keep them outside too."""
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        return _negative_dims_named(model), False
    if not isinstance(source, (bytes, bytearray, str, Path)):
        raise ModelError(f"cannot read an ONNX model from {type(source).__name__}; give a path, bytes or a ModelProto")
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ModelError("the model bytes are empty; give the contents of an .onnx file")
            model = onnx.load_from_string(bytes(source))
            if _uses_external_data(model):
                raise ModelError("this model keeps its weights in external data files, which bytes cannot carry; "
                                 "pass the model's path instead, so that the files beside it are found")
            return _checked(model, "the model bytes"), False
        path = Path(source)
        if not path.is_file():
            raise ModelError(f"model file '{path}' not found; pass the path of an .onnx file")
        if path.stat().st_size == 0:
            raise ModelError(f"model file '{path}' is empty (0 bytes); give a complete .onnx file")
        model = _checked(onnx.load(str(path), load_external_data=False), f"'{path}'")
        external = _uses_external_data(model)
        if external:
            _load_external_data(model, path)
        return model, external
    except ModelError:
        raise
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(f"cannot read ONNX model from {_describe(source)}: {_first_line(exc)}") from None


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read the weights from the files beside ``path`` (onnx refuses locations outside its folder)."""
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # a missing file (FileNotFoundError), a location outside the folder (onnx's ValidationError)
        raise ModelError(f"cannot read the external data of '{path}': {_first_line(exc)}; keep the model's data "
                         "files beside it, as they were written") from None
    for tensor in _stored_tensors(model.graph):  # onnx leaves them marked external, which the checker follows
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


def _stored_tensors(graph: onnx.GraphProto):
    """The initializers and attribute tensors of a graph and its subgraphs: where weights live."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _stored_tensors(sub)


# Attributes that size windows and grids: they must be small whole numbers (strides and dilations ≥ 1).
_GEOMETRY_ATTRIBUTES = {"kernel_shape": 0, "strides": 1, "dilations": 1, "pads": 0, "output_padding": 0,
                        "output_shape": 0}
_GEOMETRY_LIMIT = 1 << 20
_INT_FLAGS = {"transA", "transB", "keepdims", "ceil_mode", "count_include_pad", "noop_with_empty_axes",
              "select_last_index"}


def check_attributes(model: onnx.ModelProto) -> None:
    """Refuse attributes of the wrong type (by the op's ONNX schema) or of absurd size, before any
    rule or shape inference trusts them; such a model is damaged or not what its opset says."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or opset is None:
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset)
        except Exception:  # an op the opset does not define: ONNX Runtime's loader says so
            continue
        for attribute in node.attribute:
            _check_attribute(node, attribute, schema)


def _check_attribute(node: onnx.NodeProto, attribute: onnx.AttributeProto, schema) -> None:
    label = f"attribute '{attribute.name}' of {node.op_type} node '{node.name}'"
    declared = schema.attributes.get(attribute.name)
    if declared is not None and int(declared.type) != 0 and int(declared.type) != int(attribute.type):
        expected = onnx.AttributeProto.AttributeType.Name(int(declared.type)).lower()
        got = onnx.AttributeProto.AttributeType.Name(attribute.type).lower() if attribute.type in \
            onnx.AttributeProto.AttributeType.values() else f"type {attribute.type}"
        raise ModelError(f"{label} is {got}, but the ONNX schema wants {expected}; the model is damaged")
    if attribute.name in _GEOMETRY_ATTRIBUTES and attribute.type == onnx.AttributeProto.INTS:
        low = _GEOMETRY_ATTRIBUTES[attribute.name]
        bad = [v for v in attribute.ints if not (low if attribute.name != "pads" else -_GEOMETRY_LIMIT) <= v
               <= _GEOMETRY_LIMIT]
        if bad:
            raise ModelError(f"{label} holds {bad[0]}, outside {low}..{_GEOMETRY_LIMIT}; the model is damaged")
    if attribute.name in _INT_FLAGS and attribute.type == onnx.AttributeProto.INT and attribute.i not in (0, 1):
        raise ModelError(f"{label} is {attribute.i}, but it is a flag (0 or 1); the model is damaged")


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _stored_tensors(model.graph))


def _checked(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """A parsed model that is recognisably ONNX (protobuf parses many byte strings as an empty model)
    and whose names are text (protobuf decodes string fields only when they are read)."""
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{label} is not an ONNX model (no graph in it); give an .onnx file")
    graph = model.graph
    try:
        names = [t.name for t in graph.initializer]
        names += [v.name for v in (*graph.input, *graph.output, *graph.value_info)]
        names += [d.dim_param for v in (*graph.input, *graph.output) for d in v.type.tensor_type.shape.dim]
        for node in graph.node:
            names += [node.name, node.op_type, node.domain, *node.input, *node.output, *(a.name for a in node.attribute)]
    except UnicodeDecodeError:
        names = [b""]
    if not all(isinstance(name, str) for name in names):  # protobuf hands back bytes that are not UTF-8
        raise ModelError(f"{label} holds names that are not UTF-8 text; the file is damaged")
    return _negative_dims_named(model)


def _negative_dims_named(model: onnx.ModelProto) -> onnx.ModelProto:
    """paddle2onnx writes a dynamic dim as ``dim_value: -1``, which ONNX does not allow and every
    reader would take as a size: such dims of the inputs and outputs get names instead ("batch" on
    axis 0, else "dim<axis>"), and those of value_info become unknown (inference fills them in)."""
    graph = model.graph
    for infos, named in ((graph.input, True), (graph.output, True), (graph.value_info, False)):
        for info in infos:
            for axis, dim in enumerate(info.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value < 0:
                    dim.Clear()
                    if named:
                        dim.dim_param = "batch" if axis == 0 else f"dim{axis}"
    return model


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _describe(source) -> str:
    return "bytes" if isinstance(source, (bytes, bytearray)) else f"'{source}'"


class GraphView:
    """Read-only facts about the main graph of a model, with shapes inferred once."""

    def __init__(self, model: onnx.ModelProto, complete: bool = True):
        """``complete=False`` keeps ONNX's own inference only, without ONNX Runtime's symbolic inference
        and the probe run (which can cost seconds on dynamic-size graphs): for views that read the
        interface, not every intermediate shape. ``misdeclared_outputs`` names the outputs whose
        declared shapes the graph contradicts; their computed shapes are the ones the view gives."""
        self.model = model
        self.graph = model.graph
        self.opset = _default_opset(model)
        self._inferred, self.misdeclared_outputs = _infer_shapes(model, complete)
        self._types = _collect_types(self._inferred.graph)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.nodes = list(self.graph.node)

    # --- structure -------------------------------------------------------------------------
    @cached_property
    def producers(self) -> dict[str, onnx.NodeProto]:
        return {out: node for node in self.nodes for out in node.output if out}

    def unknown_shape_fix(self) -> str:
        """What to do about a shape that stays unknown, given whether the input size is fixed already
        (by the model or by --input-shape): then only a different layer or a re-export helps."""
        feeds = [i for i in self.graph.input if i.name not in self.initializers]
        if feeds and all(None not in (self.shape(i.name) or (None,))[1:] for i in feeds):
            return ("the input's size is fixed, yet neither ONNX's shape inference, ONNX Runtime's symbolic "
                    "inference nor a probe run resolves this shape; choose another layer, or re-export the model "
                    "with static shapes")
        return f"fix the input's size with {size_fixed_by()}, or re-export the model with static shapes"

    @cached_property
    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                if name:
                    users[name].append(node)
        for out in self.graph.output:
            users.setdefault(out.name, [])
        return users

    @cached_property
    def graph_inputs(self) -> list[str]:
        """Inputs a caller feeds (initializers that double as inputs are excluded)."""
        return [i.name for i in self.graph.input if i.name not in self.initializers]

    @property
    def graph_outputs(self) -> list[str]:
        return [o.name for o in self.graph.output]

    def all_names(self) -> set[str]:
        names = {i.name for i in self.graph.input} | set(self.initializers)
        for node in self.nodes:
            names.update(node.input)
            names.update(node.output)
        names.update(node.name for node in self.nodes)
        return names

    def node_by_name(self, name: str) -> onnx.NodeProto | None:
        return next((n for n in self.nodes if n.name == name), None)

    def ancestors(self, names, inputs=None) -> set[str]:
        """Every tensor that the given tensors depend on, themselves included.

        ``inputs(node)``, when given, says which of a node's inputs the walk follows (default: all).
        """
        seen: set[str] = set()
        stack = [n for n in names if n]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = self.producers.get(name)
            if node is not None:
                stack.extend(i for i in (node.input if inputs is None else inputs(node)) if i)
        return seen

    # --- types and shapes --------------------------------------------------------------------
    def elem_type(self, name: str) -> int | None:
        if name in self.initializers:
            return self.initializers[name].data_type
        entry = self._types.get(name)
        return entry[0] if entry else None

    def np_dtype(self, name: str) -> np.dtype:
        elem = self.elem_type(name)
        if elem is None:
            return np.dtype(np.float32)
        try:
            return np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        except (KeyError, ValueError, TypeError):
            raise ModelError(f"tensor '{name}' has element type {elem}, which ONNX does not define; the model is "
                             "damaged") from None

    def is_float(self, name: str) -> bool:
        elem = self.elem_type(name)
        return elem is None or elem in FLOAT_TYPES

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        """Inferred shape with ``None`` for unknown dims, or ``None`` when the rank is unknown."""
        if name in self.initializers:
            return tuple(self.initializers[name].dims)
        entry = self._types.get(name)
        return entry[1] if entry else None

    def bytes_per_sample(self) -> int:
        """Bytes of every node output per batch entry, all held at once (an upper bound of a run's
        working memory per sample); outputs whose size is unknown beyond the batch are not counted."""
        total = 0
        for node in self.nodes:
            for name in node.output:
                shape = self.shape(name)
                if shape and shape[0] is None and all(isinstance(d, int) for d in shape[1:]):
                    total += int(np.prod(shape[1:], dtype=np.int64)) * self.np_dtype(name).itemsize
        return total

    def symbolic_shape(self, name: str) -> tuple[int | str | None, ...] | None:
        """Like :meth:`shape`, with the names of symbolic dims (``"batch"``) where the model has them."""
        if name in self.initializers:
            return tuple(self.initializers[name].dims)
        entry = self._types.get(name)
        return entry[2] if entry else None

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    # --- constants -----------------------------------------------------------------------------
    def const_value(self, name: str) -> np.ndarray | None:
        """The value of an initializer or of a ``Constant`` node's output, else ``None``."""
        if not name:
            return None
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            return _constant_node_value(node)
        return None

    def is_const(self, name: str) -> bool:
        return self.const_value(name) is not None


TWIN_PREFIX = "onnxcam/twin"  # the names of the nodes a quantised model's float twin adds (onnxcam.quantized)
_VALUE_KEEPING = ("Identity", "QuantizeLinear", "DequantizeLinear")
_REQUANTISING = ("Div", "Add", "Sub", "Mul", "Clip")


def varying_input(view: GraphView, node: onnx.NodeProto) -> str:
    """The node's first input that is not a constant ("" when all are): the data a scale, a zero
    point or a shape is applied to."""
    return next((i for i in node.input if i and not view.is_const(i)), "")


def keeps_values(view: GraphView, node: onnx.NodeProto) -> bool:
    """Whether ``node`` passes its one varying input on with its values (up to rounding): an Identity, a
    float Cast (a float16 model's float32 outputs), a QuantizeLinear or DequantizeLinear (QDQ pairs), or
    the float twin's own requantisation arithmetic (x/scale + zero point, clipped; and back)."""
    if node.op_type in _VALUE_KEEPING or node.op_type == "Cast" and node_attribute(node, "to") in FLOAT_TYPES:
        return True
    if not node.name.startswith(TWIN_PREFIX + "/") or node.op_type not in _REQUANTISING:
        return False
    if sum(not view.is_const(i) for i in node.input if i) == 1:
        return True
    # the twin's clip, x − ReLU(x − high) + ReLU(low − x): an Add or Sub of x and one of its ReLUs
    clipped = view.producers.get(node.input[1]) if len(node.input) > 1 else None
    return node.op_type in ("Add", "Sub") and clipped is not None and clipped.op_type == "Relu" \
        and clipped.name.startswith(TWIN_PREFIX + "/")


def value_origin(view: GraphView, tensor: str, also=None) -> str:
    """The tensor whose values ``tensor`` carries: walking back from it through ops that keep values
    (:func:`keeps_values`), and those ``also(node)`` accepts, the output of the first op that does not —
    ``tensor`` itself where its producer is one. A QDQ or float16 model's head reads as its float model's."""
    while (node := view.producers.get(tensor)) is not None and (keeps_values(view, node) or also and also(node)):
        tensor = varying_input(view, node)
    return tensor


def fed_inputs(model: onnx.ModelProto) -> list[tuple[onnx.ValueInfoProto, tuple]]:
    """The inputs a caller feeds (graph inputs that are not initializers), each with its declared dims:
    ``None`` for a dim that is symbolic, unset or not positive."""
    initializers = {t.name for t in model.graph.initializer}
    return [(info, tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                         for d in info.type.tensor_type.shape.dim))
            for info in model.graph.input if info.name not in initializers]


def node_attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of ``node``'s attribute ``name`` (STRING attributes as text), or ``default``."""
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def outer_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If, Loop, Scan bodies, nested ones too) read from the enclosing graph:
    what their nodes read that the subgraph does not define itself."""
    names = set()
    for attribute in node.attribute:
        for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
            defined.update(o for sub in graph.node for o in sub.output)
            for sub in graph.node:
                names.update(i for i in (*sub.input, *outer_names(sub)) if i and i not in defined)
    return names


def sort_topologically(graph: onnx.GraphProto) -> bool:
    """Put the nodes in an order where each comes after the producers of what it reads, keeping the
    given order where it is one (in place; ONNX requires such an order, but some tools, e.g.
    onnxruntime's float16 converter, append nodes that feed earlier ones). Returns whether the order
    changed; a cycle is a :class:`ModelError`."""
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output if out}
    users: dict[int, list[int]] = defaultdict(list)
    waiting = []
    for k, node in enumerate(graph.node):
        needs = {producer[i] for i in (*node.input, *outer_names(node)) if i in producer}
        for j in needs:
            users[j].append(k)
        waiting.append(len(needs))
    ready = [k for k, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for user in users[k]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) < len(graph.node):
        stuck = next(graph.node[k] for k, count in enumerate(waiting) if count)
        raise ModelError(f"node '{stuck.name}' ({stuck.op_type}) depends on its own output through a cycle; the model "
                         "is damaged")
    if order == sorted(order):
        return False
    nodes = [graph.node[k] for k in order]
    del graph.node[:]
    graph.node.extend(nodes)
    return True


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelError("model imports no default (ai.onnx) opset; re-export it with a standard exporter")


def _infer_shapes(model: onnx.ModelProto, complete: bool = True) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """Shapes from ONNX's inference (with data propagation); where it leaves dims unknown that ONNX
    Runtime's symbolic inference resolves (a Reshape to a computed shape, as flatten exports are),
    those fill the gaps. Also returns the outputs whose declared shapes the graph contradicts."""
    light = without_weights(model)
    declared = _undeclare_outputs(light)
    try:
        inferred = shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference failing is not fatal: rules then see fewer shapes
        log.warning("ONNX shape inference failed (%s); continuing with declared shapes only", exc)
        return model, ()
    if complete and _unknown_tensors(inferred.graph, model):
        _fill_from_symbolic(inferred.graph, light)
    if complete and _unknown_tensors(inferred.graph, model):
        _fill_from_probe(inferred.graph, model)
    return inferred, _settle_output_shapes(inferred.graph, declared)


def _undeclare_outputs(light: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Remove the graph outputs' declared shapes from ``light`` (a copy), so that inference says what the
    graph computes (ONNX's inference keeps a declaration it contradicts); returns the declarations."""
    declared = {}
    for output in light.graph.output:
        declared[output.name] = onnx.ValueInfoProto()
        declared[output.name].CopyFrom(output)
        output.type.tensor_type.ClearField("shape")
    return declared


def _settle_output_shapes(graph: onnx.GraphProto, declared: dict[str, onnx.ValueInfoProto]) -> tuple[str, ...]:
    """Each output's shape: what inference (or the probe) found, completed by the declaration where
    that agrees; where the two contradict each other, the found shape wins, with a warning. Returns
    the outputs whose declarations were contradicted."""
    misdeclared = []
    input_dim_names = {d.dim_param for i in graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
    for output in graph.output:
        found, claim = output.type.tensor_type, declared[output.name].type.tensor_type
        if not claim.HasField("shape"):
            continue
        if not found.HasField("shape"):  # nothing contradicts the declaration
            found.shape.CopyFrom(claim.shape)
            continue
        dims, claimed = found.shape.dim, claim.shape.dim
        if len(dims) != len(claimed) or any(d.HasField("dim_value") and c.HasField("dim_value") and
                                            d.dim_value != c.dim_value for d, c in zip(dims, claimed)):
            log.warning("output '%s' is declared %s, but the graph computes %s; using the computed shape",
                        output.name, _dims_text(claimed), _dims_text(dims))
            misdeclared.append(output.name)
            continue
        for dim, claimed_dim in zip(dims, claimed):
            # a dim the graph ties to an input's dim (the batch) keeps its name: a torch export declared a
            # (T, N, C) output's dims as (batch_size, Addoutput_dim_1, C), which put the batch first;
            # a name inference made up (unk__3) is still replaced by the declared one
            keeps_name = dim.dim_param in input_dim_names and not claimed_dim.HasField("dim_value")
            if not dim.HasField("dim_value") and not keeps_name and (claimed_dim.HasField("dim_value") or
                                                                     claimed_dim.dim_param):
                dim.CopyFrom(claimed_dim)
    return tuple(misdeclared)


def _dims_text(dims) -> str:
    return "(" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + ")"


def _unknown_tensors(graph: onnx.GraphProto, model: onnx.ModelProto) -> list[str]:
    """Node outputs whose rank, or a dim other than the inputs' symbolic ones, is unknown."""
    inputs = {d.dim_param for i in graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
    infos = {info.name: info for info in (*graph.value_info, *graph.output)}
    unknown = []
    for node in model.graph.node:
        for name in filter(None, node.output):
            info = infos.get(name)
            if info is None or not info.type.tensor_type.HasField("shape") or any(
                    not d.HasField("dim_value") and d.dim_param not in inputs for d in info.type.tensor_type.shape.dim):
                unknown.append(name)
    return unknown


_PROBE_ELEMENTS = 1 << 26  # per sample of an input: 64 M values (a 4096 x 4096 RGB image is 50 M)
# a model that needs longer on zeros (a long Loop) keeps the shapes inference found, with a warning; at
# 5 s a ViT-S's two unoptimised runs overran it on a loaded 2-core machine, and its encoder's layers vanished
_PROBE_SECONDS = 30.0


def _fill_from_probe(graph: onnx.GraphProto, model: onnx.ModelProto) -> None:
    """Shapes read off two ONNX Runtime runs on zero inputs (batch 1 and 2) of the fixed input size:
    a dim that changes with the batch is the batch, the others are static. Needs static non-batch
    input dims; skipped when ONNX Runtime is absent or the model does not run."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    feeds_by_batch = {}
    batch_symbols = {}
    for info, dims in fed_inputs(model):
        if not dims or None in dims[1:]:
            return  # dynamic (or malformed) non-batch dims: nothing to probe with (the size must be fixed)
        first = info.type.tensor_type.shape.dim[0]
        batch_symbols[info.name] = first.dim_param or None
        if np.prod(dims[1:], dtype=np.float64) > _PROBE_ELEMENTS or (dims[0] is not None and dims[0] > 64):
            return  # an input too large (or malformed) to probe with
        try:
            dtype = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
        except (KeyError, ValueError, TypeError):
            return
        for batch in (1, 2):
            shape = [batch if dims[0] is None else dims[0], *dims[1:]]
            feeds_by_batch.setdefault(batch, {})[info.name] = np.zeros(shape, dtype)
    wanted = _unknown_tensors(graph, model)
    if not wanted:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in wanted if n not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    options.log_severity_level = 4
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    budget = threading.Timer(_PROBE_SECONDS, lambda: setattr(run_options, "terminate", True))
    budget.daemon = True
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        budget.start()
        runs = [dict(zip(wanted, session.run(wanted, feeds_by_batch[b], run_options))) for b in (1, 2)]
    except Exception as exc:  # the model does not run on zeros, or not within the budget
        if run_options.terminate:
            log.warning("the probe run that reads %d unknown tensor shapes took over %g s and was stopped; those "
                        "tensors cannot be candidate layers (fix the input's size with --input-shape so that shape "
                        "inference finds them)", len(wanted), _PROBE_SECONDS)
        else:
            log.debug("probe run for shapes failed (%s)", exc)
        return
    finally:
        budget.cancel()
    symbol = next((s for s in batch_symbols.values() if s), "batch")
    infos = {info.name: info for info in (*graph.value_info, *graph.output)}
    for name in wanted:
        one, two = runs[0][name], runs[1][name]
        if not isinstance(one, np.ndarray) or one.ndim != two.ndim:
            continue
        elem = helper.np_dtype_to_tensor_dtype(one.dtype)
        dims = [a if a == b else symbol for a, b in zip(one.shape, two.shape)]
        info = infos.get(name)
        if info is None:
            graph.value_info.append(helper.make_tensor_value_info(name, elem, dims))
        else:
            info.CopyFrom(helper.make_tensor_value_info(name, elem, dims))
    log.info("shapes of %d tensor(s) read off a probe run (static inference left them unknown)", len(wanted))


def _fill_from_symbolic(graph: onnx.GraphProto, light: onnx.ModelProto) -> None:
    """Merge ONNX Runtime's symbolic shape inference into ``graph``: a known dim wins over an unknown one."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:  # the autodiff engine works without ONNX Runtime; shapes then stay as ONNX inferred them
        return
    try:
        symbolic = SymbolicShapeInference.infer_shapes(light, auto_merge=True, guess_output_rank=True)
    except Exception as exc:  # its own assertions on graphs it does not handle
        log.debug("ONNX Runtime's symbolic shape inference failed (%s)", exc)
        return
    if symbolic is None:  # it returns None for opsets it does not know
        return
    found = {info.name: info for info in (*symbolic.graph.value_info, *symbolic.graph.output)}
    for info in (*graph.value_info, *graph.output):
        better = found.get(info.name)
        if better is None or not better.type.tensor_type.HasField("shape"):
            continue
        dims, extra = info.type.tensor_type.shape.dim, better.type.tensor_type.shape.dim
        if not info.type.tensor_type.HasField("shape") or len(dims) != len(extra):
            info.type.tensor_type.shape.CopyFrom(better.type.tensor_type.shape)
            continue
        for dim, other in zip(dims, extra):
            if not dim.HasField("dim_value") and other.HasField("dim_value"):
                dim.dim_value = other.dim_value
    known = {info.name for info in graph.value_info} | {o.name for o in graph.output}
    graph.value_info.extend(info for name, info in found.items() if name not in known)


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large initializers are declared inputs instead: same shapes, far less to copy.

    Small initializers stay, since data propagation reads their values (Reshape's shape, ...).
    """
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph, source = light.graph, model.graph
    graph.name = source.name
    for field in ("node", "input", "output", "value_info"):
        getattr(graph, field).extend(getattr(source, field))
    declared = {i.name for i in light.graph.input}
    for tensor in model.graph.initializer:
        if np.prod(tensor.dims, dtype=np.int64) <= 64:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return light


def _collect_types(graph: onnx.GraphProto) -> dict[str, tuple]:
    """name → (elem_type, shape with None for unknown dims, shape with dim names kept)."""
    types = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if not info.type.HasField("tensor_type"):
            continue
        tensor_type = info.type.tensor_type
        shape = symbols = None
        if tensor_type.HasField("shape"):
            dims = tensor_type.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
            symbols = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
        types[info.name] = (tensor_type.elem_type, shape, symbols)
    return types


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None
