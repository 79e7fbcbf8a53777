"""Sub-models of a model: the *head* (target layer → score) and the plain forward (image → score).

``cut_model(model, inputs, output)`` keeps the nodes that ``output`` is computed from, stopping at
the tensors in ``inputs``, which become the new model's inputs. A graph input still reached
on another path (a skip connection that bypasses the layer) stays an input too: the caller feeds
it (``CutModel.inputs`` lists all, cut tensors first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import helper

from onnxcam.errors import ModelError
from onnxcam.graph import GraphView, outer_names

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
              view: GraphView | None = None, optional: Sequence[str] = ()) -> CutModel:
    """The part of ``model`` computing ``output`` (one tensor or several) from the tensors ``inputs``;
    the ``optional`` inputs (inputs with a default initializer) stay inputs where they are reached."""
    view = view or GraphView(model)
    outputs = [output] if isinstance(output, str) else list(output)
    stop = set(inputs)
    seen: set[str] = set()
    kept: set[int] = set()
    extra: list[str] = []
    optional = {i.name for i in view.graph.input} & set(view.initializers) & set(optional)
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
        kept.add(id(node))
        stack.extend(node.input)
        stack.extend(outer_names(node))  # names a subgraph reads from the outer scope
    unused = [name for name in inputs if name not in seen]
    if unused:
        raise ModelError(f"'{', '.join(outputs)}' does not depend on {', '.join(unused)}; cannot cut the model there")
    nodes = [node for node in view.nodes if id(node) in kept]
    initializers = [t for t in view.graph.initializer if t.name in seen]
    names = [*inputs, *[i.name for i in view.graph.input if i.name in extra]]
    infos = [next((i for i in view.graph.input if i.name == name), None) if name in optional else _info(view, name)
             for name in names]
    graph = helper.make_graph(nodes, f"{view.graph.name}_cut", infos, [_info(view, name) for name in outputs],
                              initializer=initializers)
    # IR 3 would want the initializers kept here listed as inputs; IR 4 reads the model the same way
    cut = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=max(model.ir_version, 4))
    return CutModel(cut, names, outputs)


def _info(view: GraphView, name: str) -> onnx.ValueInfoProto:
    shape = view.shape(name)
    dims = None if shape is None else ["batch" if i == 0 else (d if d is not None else f"{name}_{i}")
                                      for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, view.elem_type(name), dims)
