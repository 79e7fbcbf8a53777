"""What kind of raw object-detector head a model ends in, read from its graph.

Six layouts are recognised (A = anchors, i.e. grid cells of all pyramid levels; C = classes):

* ``yolov8`` — one output (N, 4+C, A): boxes (cx, cy, w, h in input pixels, decoded in the
  graph) then class probabilities, no objectness (YOLOv8/v11, RT-DETR-style exports alike);
* ``yolov5`` — one output (N, A, 5+C): boxes, objectness, class probabilities (YOLOv5/v7 and
  YOLOX; a single-class (N, A, 6) too). Boxes are decoded in the graph, or — where the box
  columns come straight from a convolution, as in YOLOX exports without ``decode_in_inference`` —
  raw YOLOX regressions, decoded here: ((x + grid) · stride, exp(w) · stride);
* ``levels`` — per pyramid level a score output (N, A_l, C) and a box output (N, A_l, 4·(R+1))
  (PicoDet/NanoDet/GFL: distances to the cell's centre as distributions over R+1 bins, decoded
  here as their expectation × stride) or (N, A_l, 4) (boxes x0, y0, x1, y1, decoded in the graph;
  or, straight from a convolution, raw offsets decoded as YOLOX's: YuNet). A second Sigmoid-fed
  output of width 1 is the level's objectness (YuNet's ``obj``); outputs that are neither scores nor
  boxes (YuNet's landmarks) are left alone. The score outputs (objectness first) are joined into one
  tensor, ``detection_scores``, added as an output;
* ``nanodet`` — one output (N, A, C + 4·(R+1)): per level the class probabilities and the DFL box
  bins concatenated, flattened and joined (NanoDet-Plus), decoded as the ``levels`` DFL boxes;
* ``nms`` — a graph that ends in ``NonMaxSuppression``: its scores (N, C, A) and boxes (N, A, 4)
  inputs are added as outputs ``detection_scores`` and ``detection_boxes``, and the boxes it
  selects (its output, (K, 3) batch/class/anchor rows) are the boxes explained;
* ``end2end`` — an NMS-free head whose output is (N, K, 6) rows of x0, y0, x1, y1, score, class
  picked by ``TopK`` (YOLOv10, YOLO26, ultralytics' ``nms=True`` exports): the class probabilities
  (N, C, A) the rows are picked from — the 3-D Sigmoid output nearest the rows — are added as
  output ``detection_scores``, and the rows are the boxes explained, each at the anchor whose
  probability for the row's class is the row's score.

A :class:`Head` is stored in the explain model's metadata (JSON), so that the runtime decodes
boxes without reading the graph again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper

from onnxcam.graph import TWIN_PREFIX, GraphView, keeps_values, node_attribute, value_origin, varying_input

__all__ = ["Head", "find_head", "add_level_scores", "add_nms_outputs", "add_end2end_outputs", "add_class_logits",
           "level_outputs",
           "LEVEL_SCORES", "NMS_BOXES", "CLASS_LOGITS", "score_and_box_columns"]

LEVEL_SCORES = "detection_scores"
NMS_BOXES = "detection_boxes"
CLASS_LOGITS = "detection_logits"
# Ops that move or select values without mixing them (plus the final Sigmoid).
REARRANGING = ("Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
               "Sigmoid")
_MIN_ANCHORS = 16  # fewer rows than this is not a dense detector head
# ops walked back from an output to find a Conv: a head is a few ops past its convolutions, but a
# QOperator model's float twin writes each requantisation as several
_CONV_DEPTH = 96


@dataclass(frozen=True)
class Head:
    """A raw detector head: where the score tensor S and the boxes are, and how to decode them."""

    layout: str  # "yolov8", "yolov5" or "levels"
    output: str  # the output the boxes (yolov8, yolov5) or the joined level scores (levels) are read from
    score_tensor: str  # S, the tensor the per-box weightings apply to
    classes: int
    class_axis: int  # S's axis (batch first) holding the columns: 1 for (N, K, A), 2 for (N, A, K)
    first_class: int  # column of class 0 in S
    objectness: int  # column of the objectness in S, -1 when the head has none
    sigmoid: bool  # S's class (and objectness) columns are Sigmoid outputs: the score is their logit
    probabilities: bool  # the outputs' class (and objectness) columns are Sigmoid outputs (else logits)
    boxes: str  # "cxcywh" (decoded), "yolox" (raw YOLOX regressions), "dfl", "xyxy" (levels), "yxyx" (nms),
    # "rows" (end2end: read from the selected rows)
    box_outputs: tuple[str, ...] = ()  # levels: the box output of each level; nms: the boxes; end2end: the rows
    score_outputs: tuple[str, ...] = ()  # levels: the score output of each level; nms: the scores
    selected: str = ""  # nms: the NonMaxSuppression's output, (K, 3) rows of batch, class, anchor
    width: int = 0  # S's width along class_axis when the box columns come after the classes (nanodet)
    objectness_outputs: tuple[str, ...] = ()  # levels: each level's objectness output, where the head has one

    @property
    def anchor_axis(self) -> int:
        return 2 if self.class_axis == 1 else 1

    @property
    def scored_columns(self) -> list[int]:
        """The columns of S a box's score reads: the classes, and the objectness where the head has one."""
        return [*range(self.first_class, self.first_class + self.classes), *([self.objectness] if self.objectness >= 0
                                                                             else [])]

    def box_columns(self, class_index: int) -> list[int]:
        """The columns of S one box of class ``class_index`` is scored by: its class and the objectness."""
        return [self.first_class + int(class_index), *([self.objectness] if self.objectness >= 0 else [])]

    def logit_mask(self, rank: int) -> np.ndarray:
        """``scored_columns`` as a boolean mask broadcastable to the batch-first S of ``rank`` dims."""
        mask = np.zeros(self.columns, bool)
        mask[self.scored_columns] = True
        shape = [1] * rank
        shape[self.class_axis] = self.columns
        return mask.reshape(shape)

    @property
    def output_first_class(self) -> int:
        """Column of class 0 in a yolov8/yolov5 output: after the 4 box columns and the objectness."""
        return 5 if self.objectness >= 0 else 4

    @property
    def columns(self) -> int:
        """S's width along ``class_axis``: the box columns, the objectness, the classes (, the box bins)."""
        return self.width or self.first_class + self.classes

    def describe(self) -> str:
        obj = ", objectness" if self.objectness >= 0 else ""
        boxes = {"cxcywh": "boxes decoded in the graph", "xyxy": "boxes decoded in the graph",
                 "yxyx": "boxes selected by the graph's NonMaxSuppression",
                 "rows": "boxes selected by the graph's own TopK (NMS-free)",
                 "yolox": "raw YOLOX box regressions", "dfl": "DFL box distributions"}[self.boxes]
        return f"{self.layout} detector head: {self.classes} classes{obj}, {boxes}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Head | None:
        if not text:
            return None
        values = json.loads(text)
        return cls(**{**values, "box_outputs": tuple(values.get("box_outputs", ())),
                      "score_outputs": tuple(values.get("score_outputs", ())),
                      "objectness_outputs": tuple(values.get("objectness_outputs", ()))})


def find_head(view: GraphView, output: str) -> Head | None:
    """The head ``output`` belongs to, or ``None`` when it is not a raw detector output."""
    if output == LEVEL_SCORES:
        if NMS_BOXES in view.graph_outputs:
            return _nms_head(view)
        return _end2end_head(view) or _levels_head(view)
    if output in (CLASS_LOGITS, NMS_BOXES):
        return None  # explained through the head's own output
    if LEVEL_SCORES in view.graph_outputs and output in {n for level in level_outputs(view) for n in level if n}:
        return None  # one level of a multi-level head: explained through the joined scores
    shape = view.shape(output)
    if shape is None or len(shape) != 3 or not _comes_from_convolutions(view, output):
        return None
    if not (_sigmoid_fed(view, output) or _columns_from_conv(view, output)):
        return None  # not made of convolution maps and Sigmoids (a per-step classifier, a sequence)
    rows, cols = shape[1], shape[2]
    if _is_wide(rows, cols):  # (N, 4+C, A)
        if rows < 5:
            return None
        return _yolov8_head(view, output, rows - 4)
    if _is_wide(cols, rows) and cols >= 6:  # (N, A, 5+C), or NanoDet's (N, A, C + 4·(R+1))
        parts = _level_channel_parts(view, output)
        fed = _sigmoid_fed(view, output)
        if parts is not None and len(parts) == 2 and parts[1] % 4 == 0 and parts[1] >= 8 and parts[0] != 4:
            return Head("nanodet", output, output, parts[0], 2, 0, -1, fed, fed, "dfl", width=cols)
        if not fed:  # objectness and classes are Sigmoid outputs; raw columns alone are regressions (landmarks)
            return None
        raw = _columns_from_conv(view, output)
        return Head("yolov5", output, output, cols - 5, 2, 5, 4, fed, fed, "yolox" if raw else "cxcywh")
    return None


def _level_channel_parts(view: GraphView, output: str) -> list[int] | None:
    """The channel sizes of the per-level maps an (N, A, K) output's columns are concatenated from:
    Transpose(0, 2, 1) of a Concat over levels of Reshape(Concat(parts, axis 1)); None for other graphs."""
    node = view.producers.get(output)
    if node is None or node.op_type != "Transpose" or list(node_attribute(node, "perm", [])) != [0, 2, 1]:
        return None
    levels = view.producers.get(node.input[0])
    if levels is None or levels.op_type != "Concat" or node_attribute(levels, "axis", 0) not in (2, -1):
        return None
    found = None
    for flat in levels.input:
        reshape = view.producers.get(flat)
        joined = view.producers.get(reshape.input[0]) if reshape is not None and reshape.op_type in ("Reshape", "Flatten") \
            else None
        if joined is None or joined.op_type != "Concat" or node_attribute(joined, "axis", 0) != 1:
            return None
        sizes = [(view.shape(i) or (None, None))[1] for i in joined.input]
        if None in sizes or (found is not None and sizes != found):
            return None
        found = sizes
    return found


def _is_wide(small, large) -> bool:
    """``large`` is an anchor count (or unknown) and ``small`` a column count."""
    return small is not None and (large is None or (large >= _MIN_ANCHORS and large > small))


def _yolov8_head(view: GraphView, output: str, classes: int) -> Head:
    """S is the class logits where the class rows are one Sigmoid's output (a linear score), else the output."""
    logits = _class_logits(view, output, classes)
    if logits is not None:
        separate = CLASS_LOGITS if CLASS_LOGITS in view.graph_outputs else logits
        return Head("yolov8", output, separate, classes, 1, 0, -1, False, True, "cxcywh")
    fed = _sigmoid_fed(view, output)
    return Head("yolov8", output, output, classes, 1, 4, -1, fed, fed, "cxcywh")


def _class_logits(view: GraphView, output: str, classes: int) -> str | None:
    """The input of the Sigmoid that gives a yolov8 output's class rows, if it is one (through ops that
    keep values: a QDQ, QOperator or float16 model's output is its float model's, requantised or cast)."""
    node = _origin_node(view, output)
    if node is None or node.op_type != "Concat" or len(node.input) < 2 or node_attribute(node, "axis", 0) != 1:
        return None
    last = _origin_node(view, node.input[-1])
    if last is None or last.op_type != "Sigmoid" or view.shape(node.input[-1]) is None \
            or view.shape(node.input[-1])[1] != classes:
        return None
    return last.input[0]


def _origin_node(view: GraphView, tensor: str) -> onnx.NodeProto | None:
    """The node whose values ``tensor`` carries (:func:`onnxcam.graph.value_origin`), if any."""
    return view.producers.get(value_origin(view, tensor))


def _level_class_maps(view: GraphView, logits: str) -> list[str] | None:
    """The per-level class maps that ``logits`` (N, C, A) is cut from, where the head concatenates each
    level's box and class maps, flattens and joins the levels, then splits the classes off again
    (ultralytics' YOLOv8/v11 exports): Split(Concat_levels(Reshape(Concat(box_l, class_l)))), each step
    read through ops that keep values (a quantised model's requantisations)."""
    cut = value_origin(view, logits)
    split = view.producers.get(cut)
    if split is None or split.op_type != "Split" or node_attribute(split, "axis", 0) != 1:
        return None
    sizes = node_attribute(split, "split", None)
    if sizes is None and len(split.input) > 1:
        value = view.const_value(split.input[1])
        sizes = None if value is None else [int(v) for v in value.ravel()]
    if not sizes or len(sizes) != len(split.output):
        return None
    k = list(split.output).index(cut)
    start, width = sum(sizes[:k]), sizes[k]
    levels = _origin_node(view, split.input[0])
    if levels is None or levels.op_type != "Concat" or node_attribute(levels, "axis", 0) != 2:
        return None
    maps = []
    for flat in levels.input:
        reshape = _origin_node(view, flat)
        joined = _origin_node(view, reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
        if joined is None or joined.op_type != "Concat" or node_attribute(joined, "axis", 0) != 1:
            return None
        offset, found = 0, None
        for part in joined.input:
            channels = (view.shape(part) or (None, None))[1]
            if channels is None:
                return None
            if offset == start and channels == width:
                found = part
            offset += channels
        if found is None:
            return None
        maps.append(found)
    return maps


def add_class_logits(model: onnx.ModelProto, view: GraphView) -> bool:
    """Rebuild a yolov8 head's class logits from the per-level class maps alone, as output
    ``detection_logits`` (N, C, A), in place: the same values, without the box branch that the
    graph's own logits are cut from — so that explaining a box runs no part of the box branch.

    Pre: the model has no tensor of that name. Post: where :func:`_level_class_maps` finds the maps,
    the new output is Concat over levels of Reshape(class map, (N, C, h·w)) (the model's outputs kept).
    """
    if CLASS_LOGITS in view.all_names():
        return False
    for output in view.graph_outputs:
        shape = view.shape(output)
        if shape is None or len(shape) != 3 or shape[1] is None or shape[1] < 5:
            continue
        logits = _class_logits(view, output, shape[1] - 4)
        maps = _level_class_maps(view, logits) if logits is not None else None
        if not maps:
            continue
        flat_shape = f"{CLASS_LOGITS}/shape"
        model.graph.initializer.append(onnx.numpy_helper.from_array(
            np.array([0, shape[1] - 4, -1], np.int64), flat_shape))
        flats = [f"{CLASS_LOGITS}/level{i}" for i in range(len(maps))]
        model.graph.node.extend([helper.make_node("Reshape", [m, flat_shape], [f], name=f"onnxcam/{f}")
                                 for m, f in zip(maps, flats)])
        model.graph.node.append(helper.make_node("Concat", flats, [CLASS_LOGITS], axis=2, name=f"onnxcam/{CLASS_LOGITS}"))
        dims = view.symbolic_shape(logits) or [None] * 3
        model.graph.output.append(helper.make_tensor_value_info(
            CLASS_LOGITS, view.elem_type(logits), [d if d is not None else f"{CLASS_LOGITS}_{i}"
                                                   for i, d in enumerate(dims)]))
        return True
    return False


def _levels_head(view: GraphView) -> Head | None:
    levels = level_outputs(view)
    if not levels:
        return None
    scores, boxes, objectness = (tuple(parts) for parts in zip(*levels))
    width = view.shape(boxes[0])[2]
    fed = all(_sigmoid_fed(view, s) for s in scores)
    kind = "dfl" if width != 4 else "yolox" if all(_columns_from_conv(view, b) for b in boxes) else "xyxy"
    first = 1 if objectness[0] else 0
    return Head("levels", LEVEL_SCORES, LEVEL_SCORES, view.shape(scores[0])[2], 2, first, 0 if first else -1, fed, fed,
                kind, boxes, scores, objectness_outputs=objectness if first else ())


def _nms_node(view: GraphView) -> onnx.NodeProto | None:
    nodes = [n for n in view.nodes if n.op_type == "NonMaxSuppression" and n.domain in ("", "ai.onnx")]
    return nodes[-1] if len(nodes) == 1 else None


def _nms_head(view: GraphView) -> Head | None:
    node = _nms_node(view)
    shape = view.shape(LEVEL_SCORES)
    if node is None or shape is None or len(shape) != 3 or shape[1] is None:
        return None
    centre = next((a.i for a in node.attribute if a.name == "center_point_box"), 0)
    fed = _sigmoid_fed(view, node.input[1])
    return Head("nms", LEVEL_SCORES, LEVEL_SCORES, shape[1], 1, 0, -1, fed, fed, "cxcywh" if centre else "yxyx",
                (NMS_BOXES,), (LEVEL_SCORES,), node.output[0])


def add_nms_outputs(model: onnx.ModelProto, view: GraphView) -> bool:
    """Expose a graph's NonMaxSuppression inputs as outputs ``detection_scores`` (N, C, A) and
    ``detection_boxes`` (N, A, 4), in place (through Identity nodes; the model's outputs are kept)."""
    node = _nms_node(view)
    if node is None or len(node.input) < 2 or {LEVEL_SCORES, NMS_BOXES} & view.all_names():
        return False
    for source, name in ((node.input[1], LEVEL_SCORES), (node.input[0], NMS_BOXES)):
        _expose(model, view, source, name)
    return True


_ROW_COLUMNS = 6  # x0, y0, x1, y1, score, class
_SELECTION_DEPTH = 64  # ops walked back from the rows to the probabilities they are picked from


def _end2end_parts(view: GraphView) -> tuple[str, str] | None:
    """(rows output, class probabilities): an output of (N, K, 6) rows made with a TopK, and the 3-D
    Sigmoid output nearest it upstream, (N, C, A) or (N, A, C) with A the wider axis."""
    for output in view.graph_outputs:
        shape = view.shape(output)
        if shape is None or len(shape) != 3 or shape[2] != _ROW_COLUMNS or not view.is_float(output):
            continue
        topk = False
        for nodes in _upstream(view, output, _SELECTION_DEPTH):
            topk = topk or any(node.op_type == "TopK" for node in nodes)
            found = [node.output[0] for node in nodes
                     if node.op_type == "Sigmoid" and _probability_shape(view, node.output[0])]
            if found:
                if topk:
                    return output, found[0]
                break
    return None


def _probability_shape(view: GraphView, tensor: str) -> bool:
    shape = view.shape(tensor)
    return shape is not None and len(shape) == 3 and (_is_wide(shape[1], shape[2]) or _is_wide(shape[2], shape[1]))


def _end2end_head(view: GraphView) -> Head | None:
    parts = _end2end_parts(view)
    shape = view.shape(LEVEL_SCORES)
    if parts is None or shape is None or view.producers.get(LEVEL_SCORES) is None \
            or view.producers[LEVEL_SCORES].input[0] != parts[1]:
        return None
    class_axis = 1 if _is_wide(shape[1], shape[2]) else 2
    return Head("end2end", LEVEL_SCORES, LEVEL_SCORES, shape[class_axis], class_axis, 0, -1, True, True, "rows",
                (parts[0],), (LEVEL_SCORES,))


def add_end2end_outputs(model: onnx.ModelProto, view: GraphView) -> bool:
    """Expose the class probabilities an end-to-end head's rows are picked from as output
    ``detection_scores``, in place (through an Identity node; the model's outputs are kept)."""
    parts = _end2end_parts(view)
    if parts is None or LEVEL_SCORES in view.all_names():
        return False
    _expose(model, view, parts[1], LEVEL_SCORES)
    return True


def _expose(model: onnx.ModelProto, view: GraphView, source: str, name: str) -> None:
    model.graph.node.append(helper.make_node("Identity", [source], [name], name=f"onnxcam/{name}"))
    dims = view.symbolic_shape(source)
    model.graph.output.append(helper.make_tensor_value_info(
        name, view.elem_type(source), None if dims is None else [d if d is not None else f"{name}_{i}"
                                                                  for i, d in enumerate(dims)]))


def level_outputs(view: GraphView) -> list[tuple[str, str, str]]:
    """(score, box, objectness or "") outputs per pyramid level, largest level first: outputs (N, A_l, C)
    and (N, A_l, 4) or (N, A_l, 4·(R+1)) with the same A_l, and a Sigmoid-fed (N, A_l, 1) objectness
    where the level has one, at least two levels."""
    by_anchors: dict[int, list[str]] = {}
    for name in view.graph_outputs:
        if name == LEVEL_SCORES:
            continue
        shape = view.shape(name)
        if shape is not None and len(shape) == 3 and isinstance(shape[1], int) and isinstance(shape[2], int) \
                and shape[1] >= 1 and view.is_float(name):
            by_anchors.setdefault(shape[1], []).append(name)
    levels = []
    for anchors, names in sorted(by_anchors.items(), reverse=True):
        boxes = [n for n in names if view.shape(n)[2] % 4 == 0 and not _sigmoid_fed(view, n)]
        rest = [n for n in names if n not in boxes]
        # Sigmoid-fed scores (a class output, maybe an objectness) beside others left alone (landmarks); a
        # head without Sigmoids (logit scores) has just one other output per level
        scores = [n for n in rest if _sigmoid_fed(view, n)] or (rest if len(rest) == 1 else [])
        level = _scores_and_objectness(view, scores) if len(boxes) == 1 else None
        if level is None:
            return []
        levels.append((level[0], boxes[0], level[1]))
    widths = {view.shape(b)[2] for _, b, _ in levels} | {-view.shape(s)[2] for s, _, _ in levels}
    if len(levels) < 2 or len(widths) != 2 or len({bool(o) for _, _, o in levels}) != 1 \
            or not all(_comes_from_convolutions(view, s) for s, _, _ in levels):
        return []
    return levels


def _scores_and_objectness(view: GraphView, scores: list[str]) -> tuple[str, str] | None:
    """(class scores, objectness or ""): one score output, or two of which one has width 1 (both, for one
    class: the one named like an objectness, "obj" or "iou", else the second)."""
    if len(scores) == 1:
        return scores[0], ""
    if len(scores) != 2:
        return None
    single = [n for n in scores if view.shape(n)[2] == 1]
    if len(single) == 2:
        named = [n for n in scores if "obj" in n.lower() or "iou" in n.lower()]
        single = named if len(named) == 1 else [scores[1]]
    if len(single) != 1:
        return None
    return next(n for n in scores if n != single[0]), single[0]


def add_level_scores(model: onnx.ModelProto, view: GraphView) -> bool:
    """Join a multi-level head's score outputs into one output ``detection_scores`` (N, A, C), or
    (N, A, 1 + C) with each level's objectness first, in place.

    Pre: the model has no tensor of that name. Post: when the model has a multi-level head, the new
    output is the Concat of the level scores along the anchor axis (the model's outputs are kept).
    """
    levels = level_outputs(view)
    if not levels or LEVEL_SCORES in view.all_names():
        return False
    parts = []
    for i, (scores, _, objectness) in enumerate(levels):
        if objectness:
            joined = f"{LEVEL_SCORES}/level{i}"
            model.graph.node.append(helper.make_node("Concat", [objectness, scores], [joined], axis=2,
                                                     name=f"onnxcam/{joined}"))
            parts.append(joined)
        else:
            parts.append(scores)
    model.graph.node.append(helper.make_node("Concat", parts, [LEVEL_SCORES], axis=1, name="onnxcam/detection_scores"))
    columns = view.shape(levels[0][0])[2] + (1 if levels[0][2] else 0)
    batch = view.symbolic_shape(levels[0][0])[0]
    anchors = sum(view.shape(s)[1] for s, _, _ in levels)
    model.graph.output.append(helper.make_tensor_value_info(
        LEVEL_SCORES, view.elem_type(levels[0][0]), [batch if batch is not None else "batch", anchors, columns]))
    return True


def _leaf_producers(view: GraphView, tensor: str) -> list[onnx.NodeProto]:
    """The nodes where walking back from ``tensor`` through rearranging and value-keeping ops
    (:func:`onnxcam.graph.keeps_values`) stops (a Sigmoid included)."""
    def passes(node):
        return keeps_values(view, node) or node.op_type in REARRANGING and node.op_type != "Sigmoid"

    def followed(node):
        if not passes(node):
            return []
        return node.input if node.op_type == "Concat" else [varying_input(view, node)]

    walked = view.ancestors([tensor], inputs=followed)
    producers = {id(node): node for name in walked if (node := view.producers.get(name)) is not None}
    return [node for node in producers.values() if not passes(node)]


def _sigmoid_fed(view: GraphView, tensor: str) -> bool:
    return any(node.op_type == "Sigmoid" for node in _leaf_producers(view, tensor))


def _columns_from_conv(view: GraphView, tensor: str) -> bool:
    """Some of the columns are a convolution's output as it is (raw box regressions) — or a
    dynamically quantised one's, rescaled: its twin's Conv, then the model's Cast, scale and bias."""
    return any(node.op_type == "Conv" or _rescales_a_twin_conv(view, node)
               for node in _leaf_producers(view, tensor))


def _rescales_a_twin_conv(view: GraphView, node, steps: int = 6) -> bool:
    """``node`` ends a ConvInteger's dequantisation (Add(Mul(Cast(twin Conv), scale), bias)): without this,
    a dynamically quantised YuNet's raw box offsets read as boxes decoded in the graph."""
    for _ in range(steps):
        if node is None:
            return False
        if node.op_type == "Conv":
            return node.name.startswith(TWIN_PREFIX + "/")
        if node.op_type not in ("Add", "Mul", "Cast", "Identity"):
            return False
        node = view.producers.get(node.input[0])
    return False


def _comes_from_convolutions(view: GraphView, tensor: str) -> bool:
    """A detector head is built from convolution maps: a Conv lies within a few ops of the output."""
    return any(node.op_type == "Conv" for nodes in _upstream(view, tensor, _CONV_DEPTH) for node in nodes)


def _upstream(view: GraphView, tensor: str, steps: int):
    """The producers met walking back from ``tensor`` over non-constant inputs, one step at a time (each
    step's nodes a list), for at most ``steps`` steps."""
    frontier, seen = [tensor], {tensor}
    for _ in range(steps):
        nodes = [node for name in frontier if (node := view.producers.get(name)) is not None]
        if not nodes:
            return
        yield nodes
        frontier = [i for node in nodes for i in node.input if i and i not in seen and not view.is_const(i)]
        seen.update(frontier)


def grid_strides(input_hw: tuple[int, int], anchors: list[int], candidates=(4, 8, 16, 32, 64, 128),
                 rounding=np.ceil) -> list[int]:
    """The stride of each level from its anchor count: the s whose ⌈H/s⌉·⌈W/s⌉ is that count."""
    height, width = input_hw
    strides = []
    for count in anchors:
        found = [s for s in candidates if int(rounding(height / s)) * int(rounding(width / s)) == count]
        if not found:
            return []
        strides.append(found[0])
    return strides


def score_and_box_columns(head: Head, name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """A YOLOv8/YOLOv5 head's output, (N, 4+C, A) or (N, A, 5+C), as its box columns, its scored columns
    (the objectness and the classes) and any columns after them (masks, keypoints), labelled; any other
    output whole."""
    axis = {"yolov8": 1, "yolov5": 2}.get(head.layout)
    scores_end = head.output_first_class + head.classes
    if name != head.output or axis is None or values.ndim != 3 or values.shape[axis] < scores_end:
        return {name: values}
    parts = np.split(values, [4, scores_end], axis=axis)
    labels = [f"{name} (boxes)", f"{name} (scores)", f"{name} (other columns)"]
    return {label: part for label, part in zip(labels, parts) if part.size}
