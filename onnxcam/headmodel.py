"""Sub-models of a model: the *head* (target layer → score) and the plain forward (image → score).

``cut_model(model, inputs, output)`` keeps the nodes that ``output`` is computed from, stopping at
the tensors in ``inputs``, which become the new model's inputs. A graph input still reached
on another path (a skip connection that bypasses the layer) stays an input too: the caller feeds
it (``CutModel.inputs`` lists all, cut tensors first).

A ``Shape`` (or ``Size``) of a tensor outside the cut whose size is known from shape inference —
each dim static, or the size of a cut input's dim (the batch) — does not pull that tensor's graph
in: it becomes a constant, read where needed from the cut inputs' own shapes. tf2onnx's flatten, the Shape of the
tensor just before the layer, would otherwise put the whole backbone and the image into the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxcam.errors import ModelError
from onnxcam.graph import GraphView, node_attribute, outer_names

__all__ = ["CutModel", "cut_model"]


@dataclass
class CutModel:
    model: onnx.ModelProto
    inputs: list[str]  # the cut tensors, then any graph inputs still needed (optional ones stay optional)
    outputs: list[str]

    @property
    def output(self) -> str:
        return self.outputs[0]


def cut_model(model: onnx.ModelProto, inputs: Sequence[str], output: str | Sequence[str],
              view: GraphView | None = None, optional: Sequence[str] = (), reread_shapes: bool = True) -> CutModel:
    """The part of ``model`` computing ``output`` (one tensor or several) from the tensors ``inputs``;
    the ``optional`` inputs (inputs with a default initializer) stay inputs where they are reached.
    ``reread_shapes=False`` keeps every Shape's upstream graph: for callers that feed the inputs
    batches of different sizes, where a dim the inputs share a name for is not one size."""
    view = view or GraphView(model)
    outputs = [output] if isinstance(output, str) else list(output)
    stop = set(inputs)
    seen: set[str] = set()
    kept: set[int] = set()
    extra: list[str] = []
    optional = {i.name for i in view.graph.input} & set(view.initializers) & set(optional)
    deferred: dict[int, tuple[onnx.NodeProto, list]] = {}  # Shapes whose entries the cut inputs give
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in stop:
            continue
        node = view.producers.get(name)
        if node is None:
            if name in view.graph_inputs or name in optional:
                extra.append(name)
            elif name not in view.initializers:
                raise ModelError(f"cannot cut the model at {', '.join(inputs)}: '{name}' comes from nowhere")
            continue
        entries = _shape_entries(view, node, inputs) if reread_shapes else None
        if entries is not None:
            deferred[id(node)] = (node, entries)
            continue
        kept.add(id(node))
        stack.extend(node.input)
        stack.extend(outer_names(node))  # names a subgraph reads from the outer scope
    # a Shape whose tensor the cut computes anyway stays as it is; the others are rebuilt
    rebuilt = {key: _entries_nodes(node, entries) for key, (node, entries) in deferred.items()
               if node.input[0] not in seen}
    kept.update(key for key in deferred if key not in rebuilt)
    seen.update(source for key in rebuilt for source in _sources(deferred[key][1]))
    unused = [name for name in inputs if name not in seen]
    if unused:
        raise ModelError(f"'{', '.join(outputs)}' does not depend on {', '.join(unused)}; cannot cut the model there")
    nodes = [_without_outputs(new, stop) for node in view.nodes if id(node) in kept or id(node) in rebuilt
             for new in rebuilt.get(id(node), [node])]
    initializers = [t for t in view.graph.initializer if t.name in seen]
    names = [*inputs, *[i.name for i in view.graph.input if i.name in extra]]
    infos = [next((i for i in view.graph.input if i.name == name), None) if name in optional else _info(view, name)
             for name in names]
    graph = helper.make_graph(nodes, f"{view.graph.name}_cut", infos, [_info(view, name) for name in outputs],
                              initializer=initializers)
    # IR 3 would want the initializers kept here listed as inputs; IR 4 reads the model the same way
    cut = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=max(model.ir_version, 4))
    return CutModel(cut, names, outputs)


def _without_outputs(node: onnx.NodeProto, fed: set[str]) -> onnx.NodeProto:
    """The node, or where it also computes a tensor the cut is fed (one output of a Split whose others the
    cut needs), a copy writing that output under an unused name: a graph may define a name once."""
    if not fed.intersection(node.output):
        return node
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for i, name in enumerate(copy.output):
        if name in fed:
            copy.output[i] = f"{name}/onnxcam_cut_fed"
    return copy


def _info(view: GraphView, name: str) -> onnx.ValueInfoProto:
    shape = view.shape(name)
    dims = None if shape is None else ["batch" if i == 0 else (d if d is not None else f"{name}_{i}")
                                      for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, view.elem_type(name), dims)


def _shape_entries(view: GraphView, node: onnx.NodeProto, inputs: Sequence[str]) -> list | None:
    """What the ``Shape`` ``node`` returns, entry by entry (for a ``Size``: the entries it multiplies): a
    static size, or ``(input, axis)``, a cut input's dim of the same size; ``None`` when ``node`` is
    neither op or an entry is neither.

    Axis 0 is the batch wherever the cut inputs' axis 0 has its size (a name, or a fixed batch): it is
    read from them, since the cut is run at batch sizes of its own (ablated copies, boxes)."""
    if node.op_type not in ("Shape", "Size") or node.domain not in ("", "ai.onnx") or node.input[0] in inputs:
        return None
    dims = view.symbolic_shape(node.input[0])
    if dims is None:
        return None
    start, end = node_attribute(node, "start", 0), node_attribute(node, "end", None)
    if node.op_type == "Size":
        start, end = 0, None
    entries = []
    for axis in range(len(dims))[start:end]:  # Shape-15's start/end clamp as Python's slices do
        entry = _same_size(view, dims[axis], axis, inputs)
        if entry is None:
            return None
        entries.append(entry)
    return entries


def _same_size(view: GraphView, dim, axis: int, inputs: Sequence[str]):
    """``dim`` (of axis ``axis``) as a static size or as the first cut input's dim of that size."""
    for name in inputs:
        dims = view.symbolic_shape(name) or ()
        if isinstance(dim, str) and dim in dims:
            return name, dims.index(dim)
        if isinstance(dim, int) and axis == 0 and dims[:1] == (dim,):
            return name, 0
    return dim if isinstance(dim, int) else None


def _sources(entries: list) -> list[str]:
    return list(dict.fromkeys(entry[0] for entry in entries if isinstance(entry, tuple)))


def _entries_nodes(node: onnx.NodeProto, entries: list) -> list[onnx.NodeProto]:
    """Nodes computing ``node``'s output from ``entries``: runs of static sizes as constants, each
    cut input's dim gathered from its Shape, concatenated (for a ``Size``, then multiplied)."""
    out, label = node.output[0], node.name or node.output[0]
    if node.op_type == "Size":
        if not _sources(entries):
            return [_constant(f"{label}/onnxcam_static", out, np.prod(entries, dtype=np.int64))]
        shape = helper.make_node("Shape", node.input, [f"{out}/onnxcam_dims"], name=f"{label}/onnxcam_dims")
        return [*_entries_nodes(shape, entries),
                helper.make_node("ReduceProd", [shape.output[0]], [out], name=label, keepdims=0)]
    if not _sources(entries):
        return [_constant(f"{label}/onnxcam_static", out, entries)]
    nodes = [helper.make_node("Shape", [source], [f"{out}/onnxcam_shape{i}"], name=f"{label}/onnxcam_shape{i}")
             for i, source in enumerate(_sources(entries))]
    shape_of = {source: shape.output[0] for source, shape in zip(_sources(entries), nodes)}
    parts: list[str] = []
    runs: list[int] = []
    for i, entry in enumerate([*entries, None]):
        if isinstance(entry, int):
            runs.append(entry)
            continue
        if runs:
            nodes.append(_constant(f"{label}/onnxcam_sizes{i}", f"{out}/onnxcam_sizes{i}", runs))
            parts.append(nodes[-1].output[0])
            runs = []
        if entry is not None:
            source, axis = entry
            nodes.append(_constant(f"{label}/onnxcam_axis{i}", f"{out}/onnxcam_axis{i}", [axis]))
            nodes.append(helper.make_node("Gather", [shape_of[source], nodes[-1].output[0]], [f"{out}/onnxcam_dim{i}"],
                                          name=f"{label}/onnxcam_dim{i}"))
            parts.append(nodes[-1].output[0])
    nodes.append(helper.make_node("Concat", parts, [out], name=label, axis=0))
    return nodes


def _constant(name: str, output: str, values) -> onnx.NodeProto:
    value = numpy_helper.from_array(np.array(values, np.int64), output)
    return helper.make_node("Constant", [], [output], name=name, value=value)
