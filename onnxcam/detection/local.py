"""Per-box maps on crops: a box's score reads its level's layer only near the box's anchor.

A detector head is mostly convolutions from the explained layer (a neck output) to per-level maps
(the *leaves*: class logits, objectness), which the head then only rearranges into the score
tensor S. The gradient of one anchor's logit with respect to the layer is then zero outside a
window around the anchor's cell: the head's receptive field, R cells either side. So a box's
gradient is computed exactly on a crop of the layer — the head's forward and backward pass on
(2R+1)² cells instead of the whole map, all boxes of a level in one call — and set into a
full-size zero gradient. The CAM method then makes the map of the box's level alone from it
(every other level's gradient is zero, and so is its map), fused as :func:`fuse_maps` would.

:func:`plan_local_boxes` decides once per explainer whether a head allows this, and builds the
pieces: where each (anchor, column) of S lives in the leaves (by running the rearranging ops on
numbered leaf cells), which layer each leaf is computed from, R (from the convolutions' kernels,
dilations and pads), and two sessions shared by the levels: the crops' gradients (the head's own
convolutions and their backward pass) and the maps (cut from the explain model, so any per-layer
method works). A head with an op that mixes cells beyond a
window — a pooling over the map, a resize, attention, a stride — keeps the per-box head pass of
:mod:`onnxcam.detection.explain`, as do methods that are not per layer (guided backpropagation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxcam.autodiff.engine import backward
from onnxcam.detection.boxes import Boxes
from onnxcam.detection.head import REARRANGING, Head
from onnxcam.errors import InputError, ModelError, OnnxCamError
from onnxcam.graph import GraphView, node_attribute
from onnxcam.headmodel import cut_model
from onnxcam.methods.fusion import fuse_alone

log = logging.getLogger(__name__)

__all__ = ["LocalBoxes", "plan_local_boxes"]

# Ops that compute each cell from the same cell of their inputs (with per-channel constants).
_CELLWISE = {"Identity", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip",
             "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Exp", "Log", "Neg", "Abs",
             "Sqrt", "Reciprocal", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
             "BatchNormalization", "Dropout", "Cast", "Concat", "Split", "ThresholdedRelu"}
_WINDOWED = {"Conv", "MaxPool", "AveragePool"}
# The per-box sessions are small, and run right after the features pass: with a thread pool of their
# own, its threads and the features pass's (spinning while they wait for work) fight for the cores.
_SMALL_SESSION_THREADS = 1
_CODE_BASES = (float(2 ** 22), float(2 ** 23))  # leaf cells are numbered from these: exact in float32 up to 2²⁴


@dataclass
class _Level:
    layer: str  # the explained layer this level's leaves are computed from
    leaves: list[str]  # the leaf maps (N, C_l, h, w) of this level
    crop: tuple[int, int]  # the crop's (height, width): 2R+1 per axis, at most the map
    crop_input: str  # the crops session's input for this level's crops of the layer,
    seeds: list[str]  # its seed input per leaf,
    crop_gradient: str  # and its output, the crops' gradient
    layer_gradient: str  # the explain model's gradient of the layer, which the maps session reads
    layer_map: str  # the explain model's finished map of the layer, which the maps session gives


@dataclass
class LocalBoxes:
    """Where S's entries live in the leaves, the levels, and the two sessions all levels share: the
    crops' gradients, then the maps from the full-size gradients."""

    leaf_names: list[str]
    entry_leaf: np.ndarray  # (A, columns) int: leaf index of S[a, column] (anchors last), -1 when not a leaf cell
    entry_cell: np.ndarray  # (A, columns, 3) int: (channel, y, x) in that leaf
    levels: dict[int, _Level]  # by layer index (the explainer's layers)
    leaf_level: dict[int, int]  # leaf index → layer index
    layers: int  # how many layers the explain model fuses
    fuse: str
    crops: object  # session: per level crops + seeds → the crops' gradients
    maps: tuple  # (cut, session): per level the layer and its full-size gradient → its finished map
    image: str  # the maps session reads the image, for its size only

    def leaves_wanted(self) -> list[str]:
        """The leaves the scores read: what the features pass must return besides the layers."""
        return [self.leaf_names[i] for i in sorted(self.leaf_level)]

    def box_entries(self, head: Head, boxes: Boxes) -> list[list[tuple[int, int, int, int]]]:
        """Per box, the (leaf, channel, y, x) of the S entries its score sums."""
        return [[(int(self.entry_leaf[anchor, j]), *map(int, self.entry_cell[anchor, j])) for j in head.box_columns(c)]
                for anchor, c in zip(boxes.anchors, boxes.classes)]

    def box_maps(self, batch: np.ndarray, features: dict[str, np.ndarray], owner: np.ndarray,
                 entries: list[list[tuple[int, int, int, int]]], chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, H, W) maps and (K,) scores (the leaves' logits) of the K boxes; ``owner[k]`` is box k's image;
        at most ``chunk`` boxes per ONNX Runtime call."""
        scores = np.array([sum(float(features[self.leaf_names[leaf]][owner[k], c, y, x]) for leaf, c, y, x in cells)
                           for k, cells in enumerate(entries)], np.float64)
        maps = None
        for first in range(0, len(entries), chunk):
            rows = {index: [] for index in self.levels}
            for k in range(first, min(first + chunk, len(entries))):
                rows[self.leaf_level[entries[k][0][0]]].append(k)
            for index, found in self._maps(batch, features, owner, entries, rows).items():
                if maps is None:
                    maps = np.zeros((len(owner), *found.shape[1:]), np.float32)
                maps[rows[index]] = fuse_alone(found, self.layers, self.fuse)
        return maps, scores

    def _maps(self, batch, features, owner, entries, rows: dict[int, list[int]]) -> dict[int, np.ndarray]:
        """Per level the finished maps of its boxes ``rows[level]``: one call for every level's crops'
        gradients, one for every level's maps. A level without boxes gets a stand-in row (an image's
        activations, no seed) whose map is dropped: ONNX Runtime's layout rewrites do not all take 0 rows."""
        crop_feeds, placed = {}, {}
        stand_in = next(boxes[:1] for boxes in rows.values() if boxes)
        for index, boxes in rows.items():
            level = self.levels[index]
            activations = features[level.layer][owner[boxes or stand_in]]
            cells = [entries[k] for k in boxes] or [[(-1, 0, 0, 0)]]  # a crop in the corner, no seed
            corners = self._crop_feeds(level, activations, features, cells, crop_feeds)
            placed[index] = (activations, corners)
        levels = [self.levels[index] for index in rows]
        crop_grads = dict(zip(rows, _run(self.crops, [level.crop_gradient for level in levels], crop_feeds)))
        cut, session = self.maps
        map_feeds = {self.image: batch[owner[:1]]} if self.image in cut.inputs else {}
        for index, (activations, corners) in placed.items():
            level = self.levels[index]
            gradient = np.zeros_like(activations)
            ch, cw = level.crop
            for k, (y0, x0) in enumerate(corners):
                gradient[k, :, y0:y0 + ch, x0:x0 + cw] = crop_grads[index][k]
            map_feeds[level.layer], map_feeds[level.layer_gradient] = activations, gradient
        found = _run(session, [level.layer_map for level in levels], map_feeds)
        return {index: maps for (index, boxes), maps in zip(rows.items(), found) if boxes}

    def _crop_feeds(self, level: _Level, activations, features, entries, feeds) -> list[tuple[int, int]]:
        """Add the level's crops of the layer (around each box's cell) and its seeds (one at each scored
        cell) to ``feeds``; the crops' corners."""
        height, width = activations.shape[2:]
        ch, cw = level.crop
        corners = [_corner(cells[0][2], cells[0][3], ch, cw, height, width) for cells in entries]
        feeds[level.crop_input] = np.stack([a[:, y0:y0 + ch, x0:x0 + cw] for a, (y0, x0) in zip(activations, corners)])
        for leaf_name, seed in zip(level.leaves, level.seeds):
            values = np.zeros((len(entries), features[leaf_name].shape[1], ch, cw), features[leaf_name].dtype)
            for k, (cells, (y0, x0)) in enumerate(zip(entries, corners)):
                for leaf, c, y, x in cells:
                    if leaf >= 0 and self.leaf_names[leaf] == leaf_name:
                        values[k, c, y - y0, x - x0] += 1
            feeds[seed] = values
        return corners


def _run(session, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session.run(outputs, feeds)
    except OnnxCamError:
        raise
    except Exception as exc:  # ORT's own error types
        raise InputError(f"ONNX Runtime could not run the per-box maps: {str(exc).strip().splitlines()[-1]}") \
            from None


def _corner(y: int, x: int, ch: int, cw: int, height: int, width: int) -> tuple[int, int]:
    """The crop's top-left cell: centred on (y, x), shifted inside the map."""
    return min(max(y - ch // 2, 0), height - ch), min(max(x - cw // 2, 0), width - cw)


def plan_local_boxes(explainer, head: Head, batch: np.ndarray) -> LocalBoxes | None:
    """The crop plan for this explainer's head, or ``None`` (logged why) where the head is not local."""
    try:
        plan = _plan(explainer, head, batch)
    except (_NotLocal, OnnxCamError) as why:  # OnnxCamError: a crop model that would not build or load
        log.info("per-box maps: the head's whole backward pass per box (no crops: %s)", why)
        return None
    log.debug("per-box maps on crops of %s", ", ".join(f"{level.layer} ({level.crop[0]}×{level.crop[1]})"
                                                       for level in plan.levels.values()))
    return plan


class _NotLocal(Exception):
    pass


def _plan(explainer, head: Head, batch: np.ndarray) -> LocalBoxes:
    view: GraphView = explainer._view
    layers = list(explainer.contract.layers)
    gradients = [g for g in explainer.contract.layer_gradients.split(",") if g]
    maps = [m for m in explainer.contract.layer_maps.split(",") if m]
    if len(gradients) != len(layers) or len(maps) != len(layers):
        raise _NotLocal("the explain model does not name its layers' gradients and maps (a method that is not "
                        "per layer, or an explain model from an older onnxcam)")
    if any(code != "NCHW" for code in explainer.contract.layer_layout.split(",")):
        raise _NotLocal("a layer is not NCHW")
    leaves, via_sigmoid = _leaves(view, head.score_tensor)
    entry_leaf, entry_cell = _locate_entries(explainer, view, head, leaves, batch)
    wanted = head.scored_columns
    used = sorted({int(i) for i in np.unique(entry_leaf[:, wanted])})
    if -1 in used:
        raise _NotLocal("some class or objectness entries of S are not cells of a convolution map")
    if any(via_sigmoid[leaves[i]] != head.sigmoid for i in used):
        raise _NotLocal("the score is not the leaves' logit")
    leaf_level = {i: _source_layer(view, leaves[i], layers) for i in used}
    _check_same_cell(entry_leaf, entry_cell, wanted, leaf_level)
    levels, crop_models = {}, []
    for index in sorted(set(leaf_level.values())):
        names = [leaves[i] for i in used if leaf_level[i] == index]
        levels[index], model = _level(explainer, view, index, layers[index], names, gradients[index], maps[index])
        crop_models.append(model)
    crops = explainer._new_session(_disjoint_union(crop_models), threads=_SMALL_SESSION_THREADS)
    explainer._extra_sessions["box-crops"] = (None, crops)
    return LocalBoxes(leaves, entry_leaf, entry_cell, levels, leaf_level, len(layers), explainer.contract.fuse or "mean",
                      crops, _maps_session(explainer, list(levels.values())), explainer.input_name)


def _leaves(view: GraphView, score_tensor: str) -> tuple[list[str], dict[str, bool]]:
    """The tensors S is rearranged from (walking back through REARRANGING ops and Sigmoids), and
    whether each was reached through a Sigmoid (leaves reached both ways are left out)."""
    reached: dict[str, set[bool]] = {}
    stack, seen = [(score_tensor, False)], set()
    while stack:
        name, sigmoid = stack.pop()
        if (name, sigmoid) in seen:
            continue
        seen.add((name, sigmoid))
        node = view.producers.get(name)
        if node is not None and node.op_type in REARRANGING:
            passed = sigmoid or node.op_type == "Sigmoid"
            stack.extend((i, passed) for i in (node.input if node.op_type == "Concat" else node.input[:1]) if i)
        elif not view.is_const(name):
            reached.setdefault(name, set()).add(sigmoid)
    via = {name: flags.pop() for name, flags in reached.items() if len(flags) == 1}
    return sorted(via), via


def _locate_entries(explainer, view: GraphView, head: Head, leaves: list[str], batch: np.ndarray):
    """(entry_leaf, entry_cell) of every S entry: the rearranging ops run on numbered leaf cells.

    Leaves of unknown size are computed from the image instead; their entries are told apart from
    numbered ones by running twice with different numberings (a number moves with it, a value not).
    """
    numbered = [name for name in leaves if _known(view.shape(name)) and view.np_dtype(name) == np.float32]
    shapes = [view.shape(name) for name in numbered]
    counts = [int(np.prod(s[1:])) for s in shapes]
    starts = np.cumsum([0, *counts])
    if not numbered or starts[-1] >= 2 ** 22:
        raise _NotLocal("the leaves' cells cannot be numbered exactly in float32")
    try:
        cut = cut_model(explainer.model, numbered, [head.score_tensor], view)
    except ModelError as exc:
        raise _NotLocal(str(exc)) from None
    probe = onnx.ModelProto()
    probe.CopyFrom(cut.model)
    for node in probe.graph.node:  # S's values stay the leaves' own numbers
        if node.op_type == "Sigmoid":
            node.op_type = "Identity"
    try:
        session = explainer._new_session(probe)
        runs = []
        for base in _CODE_BASES:
            feeds = {name: (base + start + np.arange(count, dtype=np.float64)).reshape(1, *shape[1:]).astype(np.float32)
                     for name, shape, start, count in zip(numbered, shapes, starts, counts)}
            feeds.update({name: batch[:1] for name in cut.inputs[len(numbered):]})
            runs.append(np.asarray(session.run([cut.output], feeds)[0], np.float64))
    except Exception as exc:  # ORT's own types: a probe that cannot run leaves the head pass
        raise _NotLocal(f"the rearranging ops did not run on numbered leaves ({exc})") from None
    if runs[0].ndim != 3 or runs[0].shape[0] != 1:
        raise _NotLocal("S is not (1, ·, ·) for one image")
    codes = [(r[0] if head.class_axis == 2 else r[0].T) - base for r, base in zip(runs, _CODE_BASES)]  # (A, columns)
    valid = (codes[0] == codes[1]) & (codes[0] >= 0) & (codes[0] < starts[-1]) & (codes[0] == np.round(codes[0]))
    code = np.where(valid, codes[0], 0).astype(np.int64)
    index = np.searchsorted(starts, code, side="right") - 1
    cells = np.zeros((*code.shape, 3), np.int64)
    for i, shape in enumerate(shapes):
        mine = valid & (index == i)
        if len(shape) != 4:
            valid &= ~mine  # not a (N, C, h, w) map
            continue
        cells[mine] = np.stack(np.unravel_index(code[mine] - starts[i], shape[1:]), axis=-1)
    leaf_of = np.array([leaves.index(name) for name in numbered])
    return np.where(valid, leaf_of[index], -1), cells


def _known(shape) -> bool:
    return shape is not None and None not in shape[1:]


def _source_layer(view: GraphView, leaf: str, layers: list[str]) -> int:
    stop = set(layers)
    reached = view.ancestors([leaf], inputs=lambda node: [] if stop.intersection(node.output) else node.input)
    sources = [i for i, name in enumerate(layers) if name in reached]
    if len(sources) != 1:
        raise _NotLocal(f"leaf '{leaf}' is computed from {len(sources)} of the layers, not one")
    return sources[0]


def _check_same_cell(entry_leaf, entry_cell, wanted, leaf_level) -> None:
    """A box's class and objectness entries must lie at one cell of one level (its crop's centre)."""
    if len(wanted) < 2:
        return
    levels = np.vectorize(lambda i: leaf_level.get(int(i), -1))(entry_leaf[:, wanted])
    cells = entry_cell[:, wanted, 1:]
    if not ((levels == levels[:, :1]).all() and (cells == cells[:, :1]).all()):
        raise _NotLocal("an anchor's class and objectness entries lie at different cells")


def _level(explainer, view: GraphView, index: int, layer: str, leaves: list[str], gradient: str,
           layer_map: str) -> tuple[_Level, onnx.ModelProto]:
    """The level of ``layer`` and its crop-gradient model (names prefixed ``level<index>/``)."""
    try:
        cut = cut_model(explainer.model, [layer], leaves, view)
    except ModelError as exc:
        raise _NotLocal(str(exc)) from None
    if cut.inputs != [layer]:
        raise _NotLocal(f"the head after '{layer}' reads more than the layer")
    layer_shape = view.shape(layer)
    if layer_shape is None or len(layer_shape) != 4 or None in layer_shape[1:]:
        raise _NotLocal(f"layer '{layer}' is not a map of known size")
    radius = _radius(view, cut.model.graph.node, layer, layer_shape[2:])
    crop = (min(2 * radius[0] + 1, layer_shape[2]), min(2 * radius[1] + 1, layer_shape[3]))
    model, seeds, crop_gradient = _gradient_model(explainer.with_weights(cut.model), layer, leaves, layer_shape[1], crop)
    prefix = f"level{index}/"
    model = onnx.compose.add_prefix(model, prefix)
    _own_batch_dims(model.graph, prefix)
    level = _Level(layer, leaves, crop, prefix + layer, [prefix + seed for seed in seeds], prefix + crop_gradient,
                   gradient, layer_map)
    return level, model


def _disjoint_union(models: list[onnx.ModelProto]) -> onnx.ModelProto:
    """One model computing each of ``models`` (whose names do not overlap) side by side."""
    graphs = [m.graph for m in models]
    graph = helper.make_graph([n for g in graphs for n in g.node], "box_crops", [i for g in graphs for i in g.input],
                              [o for g in graphs for o in g.output], [t for g in graphs for t in g.initializer])
    return helper.make_model(graph, opset_imports=list(models[0].opset_import), ir_version=models[0].ir_version)


def _maps_session(explainer, levels: list[_Level]) -> tuple:
    """The explain model cut from every level's layer and gradient to its finished map; each level's
    inputs get batch dims of their own (levels have different numbers of boxes)."""
    inputs = [name for level in levels for name in (level.layer, level.layer_gradient)]
    try:
        # the levels are fed their own numbers of boxes: their shared batch name is not one size
        cut = cut_model(explainer.model, inputs, [level.layer_map for level in levels], explainer._view,
                        reread_shapes=False)
    except ModelError as exc:
        raise _NotLocal(str(exc)) from None
    image = explainer.input_name
    if set(cut.inputs) - set(inputs) - {image}:
        raise _NotLocal("the levels' maps read more than the layers, their gradients and the image")
    if any(node.op_type != "Shape" for node in cut.model.graph.node if image in node.input):
        raise _NotLocal("the levels' maps read the image's pixels, not only its size")
    _own_batch_dims(cut.model.graph, "", skip=image)
    session = explainer._new_session(cut.model, threads=_SMALL_SESSION_THREADS)
    explainer._extra_sessions["box-maps"] = (cut, session)
    return cut, session


def _own_batch_dims(graph, prefix: str, skip: str = "") -> None:
    """Name each input's and output's batch dim after the tensor, so that ONNX Runtime plans no
    buffer of one level for another's (their box counts differ)."""
    del graph.value_info[:]
    for value in [*graph.input, *graph.output]:
        if value.name != skip and value.type.tensor_type.shape.dim:
            value.type.tensor_type.shape.dim[0].dim_param = f"{prefix}rows_{value.name}"


def _radius(view: GraphView, nodes, layer: str, size) -> tuple[int, int]:
    """How many cells either side of a leaf cell the layer's cells reach it from (per axis), checking
    that every op is cell-wise or a stride-1 window that keeps the map's size."""
    reach = {layer: (0, 0)}
    for node in nodes:
        inputs = [i for i in node.input if i in reach]
        if not inputs:
            continue
        _check_local(view, node, reach, size)
        ry, rx = max(reach[i][0] for i in inputs), max(reach[i][1] for i in inputs)
        if node.op_type in _WINDOWED:
            wy, wx = _window_reach(view, node)
            ry, rx = ry + wy, rx + wx
        for out in node.output:
            reach[out] = (ry, rx)
    return max(r[0] for r in reach.values()), max(r[1] for r in reach.values())


def _check_local(view: GraphView, node, reach, size) -> None:
    """``node`` computes each cell of its (layer-sized) outputs from a window of its inputs' cells,
    the same way at every cell: no op that mixes the map, no constant that varies across it."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in _CELLWISE | _WINDOWED:
        raise _NotLocal(f"the head has a {node.op_type} node ('{node.name}'), which mixes cells beyond a window")
    if node.op_type in ("Concat", "Split") and node_attribute(node, "axis", 0) not in (1, -3):
        raise _NotLocal(f"'{node.name}' joins or splits along a spatial axis")
    for name in node.output:
        shape = view.shape(name)
        if name and (shape is None or len(shape) != 4 or tuple(shape[2:]) != tuple(size)):
            raise _NotLocal(f"'{name}' is not a map of the layer's size")
    if node.op_type in _WINDOWED or node.op_type in ("BatchNormalization", "Split"):
        return  # the inputs besides the map are per-channel parameters
    for name in node.input:
        if not name or name in reach:
            continue
        shape = view.shape(name) if view.is_const(name) else None
        if shape is None or any(d != 1 for d in shape[-2:]):  # trailing dims broadcast along the map
            raise _NotLocal(f"'{node.name}' reads '{name}', which varies across the map")


def _window_reach(view: GraphView, node) -> tuple[int, int]:
    if any(s != 1 for s in node_attribute(node, "strides", [1, 1])):
        raise _NotLocal(f"'{node.name}' has a stride")
    kernel = node_attribute(node, "kernel_shape", None)
    if kernel is None and node.op_type == "Conv":
        kernel = (view.shape(node.input[1]) or (0, 0, None, None))[2:]
    if kernel is None or len(kernel) != 2 or None in kernel:
        raise _NotLocal(f"'{node.name}' is not a 2-D window of known size")
    dilations = node_attribute(node, "dilations", [1, 1])
    pads = node_attribute(node, "pads", [0, 0, 0, 0])
    auto = node_attribute(node, "auto_pad", "NOTSET")
    reach = []
    for axis in range(2):
        extent = (kernel[axis] - 1) * dilations[axis]
        begin = extent - extent // 2 if auto == "SAME_LOWER" else extent // 2 if auto == "SAME_UPPER" else \
            pads[axis]
        reach.append(max(begin, extent - begin))
    return reach[0], reach[1]


def _gradient_model(cut: onnx.ModelProto, layer: str, leaves: list[str], channels: int, crop) -> tuple:
    """The head from ``layer`` to ``leaves`` on (B, C, crop) crops, with seed inputs per leaf and the
    crop's gradient as the only output."""
    model = onnx.ModelProto()
    model.CopyFrom(cut)
    graph = model.graph
    elem = next(i for i in graph.input if i.name == layer).type.tensor_type.elem_type
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(layer, elem, ["boxes", channels, *crop]))
    del graph.value_info[:]
    del graph.output[:]
    for leaf in leaves:  # the crop size fixes every map's size: let shape inference find them
        graph.output.append(helper.make_tensor_value_info(leaf, elem, None))
    view = GraphView(model, complete=False)
    seeds = [f"onnxcam/seed/{leaf}" for leaf in leaves]
    for leaf, seed in zip(leaves, seeds):
        shape = view.shape(leaf)
        if shape is None:
            raise _NotLocal(f"the shape of '{leaf}' on a crop is unknown")
        graph.input.append(helper.make_tensor_value_info(seed, elem, ["boxes", *shape[1:]]))
    result = backward(model, dict(zip(leaves, seeds)), [layer])
    gradient = result.names[layer]
    del result.model.graph.output[:]
    result.model.graph.output.append(helper.make_tensor_value_info(gradient, elem, ["boxes", channels, *crop]))
    return result.model, seeds, gradient

