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
dilations and pads), and per level a crop-gradient session and a map session (cut from the
explain model, so any per-layer method works). A head with an op that mixes cells beyond a
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
    session: object  # crop of the layer + one seed per leaf → the layer crop's gradient
    seeds: list[str]  # the session's seed input per leaf
    gradient: str  # its output, the crop's gradient
    layer_gradient: str  # the explain model's gradient of the layer, which the map session reads
    cam: tuple  # (cut, session): the layer and its full-size gradient → this layer's finished map
    image_shape_only: bool  # the CAM reads the image only for its size (one image serves every box)


@dataclass
class LocalBoxes:
    """Where S's entries live in the leaves, and per level the crop-gradient and map sessions."""

    leaf_names: list[str]
    entry_leaf: np.ndarray  # (A, columns) int: leaf index of S[a, column] (anchors last), -1 when not a leaf cell
    entry_cell: np.ndarray  # (A, columns, 3) int: (channel, y, x) in that leaf
    levels: dict[int, _Level]  # by layer index (the explainer's layers)
    leaf_level: dict[int, int]  # leaf index → layer index
    layers: int  # how many layers the explain model fuses
    fuse: str

    def leaves_wanted(self) -> list[str]:
        """The leaves the scores read: what the features pass must return besides the layers."""
        return [self.leaf_names[i] for i in sorted(self.leaf_level)]

    def box_entries(self, head: Head, boxes: Boxes) -> list[list[tuple[int, int, int, int]]]:
        """Per box, the (leaf, channel, y, x) of the S entries its score sums."""
        entries = []
        for anchor, column in zip(boxes.anchors, head.first_class + boxes.classes):
            wanted = [column] + ([head.objectness] if head.objectness >= 0 else [])
            entries.append([(int(self.entry_leaf[anchor, j]), *map(int, self.entry_cell[anchor, j])) for j in wanted])
        return entries

    def box_maps(self, batch: np.ndarray, features: dict[str, np.ndarray], owner: np.ndarray,
                 entries: list[list[tuple[int, int, int, int]]], chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, H, W) maps and (K,) scores (the leaves' logits) of the K boxes; ``owner[k]`` is box k's image."""
        scores = np.array([sum(float(features[self.leaf_names[leaf]][owner[k], c, y, x]) for leaf, c, y, x in cells)
                           for k, cells in enumerate(entries)], np.float64)
        maps = None
        by_level: dict[int, list[int]] = {}
        for k, cells in enumerate(entries):
            by_level.setdefault(self.leaf_level[cells[0][0]], []).append(k)
        for index, boxes in by_level.items():
            for first in range(0, len(boxes), chunk):
                rows = np.array(boxes[first:first + chunk])
                found = self._level_maps(self.levels[index], batch, features, owner[rows], [entries[k] for k in rows])
                if maps is None:
                    maps = np.zeros((len(owner), *found.shape[1:]), np.float32)
                maps[rows] = fuse_alone(found, self.layers, self.fuse)
        return maps, scores

    def _level_maps(self, level: _Level, batch, features, owner, entries) -> np.ndarray:
        activations = features[level.layer][owner]
        gradient = np.zeros_like(activations)
        crops, corners = self._crop_gradients(level, activations, features, entries)
        ch, cw = level.crop
        for k, (y0, x0) in enumerate(corners):
            gradient[k, :, y0:y0 + ch, x0:x0 + cw] = crops[k]
        cut, session = level.cam
        image = batch[owner[:1]] if level.image_shape_only else batch[owner]
        feeds = {level.layer: activations, level.layer_gradient: gradient}
        feeds.update({name: image for name in cut.inputs if name not in feeds})  # the image, for its size
        return _run(session, [cut.output], feeds)[0]

    def _crop_gradients(self, level: _Level, activations, features, entries):
        """The layer's gradient on each box's crop (its score seeded at the crop's cells), and the crops' corners."""
        height, width = activations.shape[2:]
        ch, cw = level.crop
        corners = [_corner(cells[0][2], cells[0][3], ch, cw, height, width) for cells in entries]
        crops = np.stack([a[:, y0:y0 + ch, x0:x0 + cw] for a, (y0, x0) in zip(activations, corners)])
        feeds = {level.layer: crops}
        for leaf_name, seed in zip(level.leaves, level.seeds):
            values = np.zeros((len(entries), features[leaf_name].shape[1], ch, cw), features[leaf_name].dtype)
            for k, (cells, (y0, x0)) in enumerate(zip(entries, corners)):
                for leaf, c, y, x in cells:
                    if self.leaf_names[leaf] == leaf_name:
                        values[k, c, y - y0, x - x0] += 1
            feeds[seed] = values
        return _run(level.session, [level.gradient], feeds)[0], corners


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
    except _NotLocal as why:
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
    wanted = _scored_columns(head)
    used = sorted({int(i) for i in np.unique(entry_leaf[:, wanted])})
    if -1 in used:
        raise _NotLocal("some class or objectness entries of S are not cells of a convolution map")
    if any(via_sigmoid[leaves[i]] != head.sigmoid for i in used):
        raise _NotLocal("the score is not the leaves' logit")
    leaf_level = {i: _source_layer(view, leaves[i], layers) for i in used}
    levels = {}
    for index in sorted(set(leaf_level.values())):
        names = [leaves[i] for i in used if leaf_level[i] == index]
        levels[index] = _level(explainer, view, layers[index], names, gradients[index], maps[index])
    _check_same_cell(entry_leaf, entry_cell, wanted, leaf_level)
    return LocalBoxes(leaves, entry_leaf, entry_cell, levels, leaf_level, len(layers), explainer.contract.fuse or "mean")


def _scored_columns(head: Head) -> list[int]:
    return list(range(head.first_class, head.first_class + head.classes)) + \
        ([head.objectness] if head.objectness >= 0 else [])


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


def _level(explainer, view: GraphView, layer: str, leaves: list[str], gradient: str, cam_map: str) -> _Level:
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
    local, seeds, crop_gradient = _gradient_model(explainer.with_weights(cut.model), layer, leaves, layer_shape[1], crop)
    session = explainer._new_session(local, threads=_SMALL_SESSION_THREADS)
    if explainer._cancelled:
        session.cancel()
    explainer._extra_sessions[f"box-crops:{layer}"] = (local, session)
    cam = explainer._sub_session(f"box-map:{layer}", [layer, gradient], [cam_map], threads=_SMALL_SESSION_THREADS)
    image = explainer.input_name
    if set(cam[0].inputs) - {layer, gradient, image}:
        raise _NotLocal(f"the map of '{layer}' reads more than the layer, its gradient and the image")
    shape_only = all(n.op_type == "Shape" for n in cam[0].model.graph.node if image in n.input)
    return _Level(layer, leaves, crop, session, seeds, crop_gradient, gradient, cam, shape_only)


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
    auto = auto.decode() if isinstance(auto, bytes) else auto
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

