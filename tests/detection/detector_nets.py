"""Tiny anchor-free detectors in torch, in the three raw-head layouts onnxcam explains, and their export.

A 32×32 input, two pyramid levels (strides 4 and 8: 8×8 + 4×4 = 80 anchors). Per level a neck
convolution (its ReLU output feeds both the box and the class branch) and a head:

* ``yolov8``: output (N, 4+C, A) = Concat(boxes cx, cy, w, h decoded in the graph, Sigmoid(class logits));
* ``yolov5``: output (N, A, 5+C) = per level Concat(boxes, Sigmoid(objectness), Sigmoid(classes)), flattened;
* ``levels``: per level a score output (N, A_l, C) = Sigmoid(class logits) and a raw DFL box output
  (N, A_l, 4·(R+1)), R = 3 — PicoDet's layout;
* ``nanodet``: one output (N, A, C + 4·(R+1)) = per level Concat(Sigmoid(class logits), DFL bins),
  flattened, joined and transposed — NanoDet-Plus's layout;
* ``yunet``: per level Sigmoid class scores (N, A_l, C), a Sigmoid objectness (N, A_l, 1), raw box
  offsets (N, A_l, 4) straight from a convolution (YOLOX's decoding) and raw landmarks (N, A_l, 10) —
  YuNet's layout (its cls, obj, bbox, kps outputs).

``joined=True`` (yolov8 only) writes the head as ultralytics' exports do: per level Concat(DFL box bins,
class logits), flattened and joined over the levels, then split again; the bins' expectation is a fixed
1×1 Conv over their Softmax (ultralytics' DFL), the class logits go through the Sigmoid.

``squeeze=True`` gives each class branch a squeeze-and-excitation gate (its input times the Sigmoid of
its mean over the map): a head whose box scores read the whole map, not a window of it.

``logits(x)`` returns what onnxcam differentiates per box: (N, A, C) class logits and (N, A)
objectness logits (yolov5), with ``neck`` the per-level neck outputs, for autograd references.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn
from torch.nn import functional as F

LAYOUTS = ("yolov8", "yolov5", "levels", "nanodet", "yunet")
STRIDES = (4, 8)
BINS = 4  # R + 1


class TinyDetector(nn.Module):
    def __init__(self, layout: str, classes: int = 3, seed: int = 0, squeeze: bool = False, joined: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.layout, self.classes, self.squeeze, self.joined = layout, classes, squeeze, joined
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(12, 16, 3, 2, 1), nn.ReLU())
        self.neck = nn.ModuleList([nn.Conv2d(12, 12, 3, 1, 1), nn.Conv2d(16, 12, 3, 1, 1)])
        box_channels = 4 * BINS if layout in ("levels", "nanodet") or joined else 4
        self.box = nn.ModuleList([nn.Sequential(nn.Conv2d(12, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, box_channels, 1))
                                  for _ in STRIDES])
        self.cls = nn.ModuleList([nn.Sequential(*([_Squeeze()] if squeeze else []), nn.Conv2d(12, 8, 3, 1, 1),
                                                nn.ReLU(), nn.Conv2d(8, classes, 1)) for _ in STRIDES])
        self.obj = nn.ModuleList([nn.Conv2d(12, 1, 1) for _ in STRIDES])
        self.kps = nn.ModuleList([nn.Conv2d(12, 10, 1) for _ in STRIDES])
        self.register_buffer("bin_values", torch.arange(BINS, dtype=torch.float32).view(1, BINS, 1, 1))
        self.eval()

    def features(self, x):
        a = self.stem(x)
        b = self.down(a)
        return [F.relu(neck(t)) for neck, t in zip(self.neck, (a, b))]

    def logits(self, x, neck=None):
        """(class logits (N, A, C), objectness logits (N, A)) and the neck outputs they come from."""
        neck = self.features(x) if neck is None else neck
        classes = torch.cat([c(t).flatten(2) for c, t in zip(self.cls, neck)], 2).transpose(1, 2)
        objectness = torch.cat([o(t).flatten(2) for o, t in zip(self.obj, neck)], 2)[:, 0]
        return classes, objectness, neck

    def _boxes(self, t, level: int):
        """(N, 4, h·w) cx, cy, w, h in input pixels: distances to the cell centre, softplus × stride."""
        centre, stride = _cells(t.shape[2:], STRIDES[level])
        return _cxcywh(F.softplus(self.box[level](t)).flatten(2) * stride, centre)

    def _joined_head(self, neck):
        """ultralytics' layout: Split(Concat_levels(Flatten(Concat(bins_l, class_l)))), the bins' expectation
        (the DFL Conv over their Softmax) × the anchor's stride as the distances to its centre."""
        maps = torch.cat([torch.cat([b(t), c(t)], 1).flatten(2) for b, c, t in zip(self.box, self.cls, neck)], 2)
        bins, classes = maps.split([4 * BINS, self.classes], 1)
        softmax = bins.view(bins.shape[0], 4, BINS, -1).transpose(2, 1).softmax(1)
        expected = F.conv2d(softmax, self.bin_values).view(bins.shape[0], 4, -1)
        cells = [_cells(t.shape[2:], stride) for t, stride in zip(neck, STRIDES)]
        centre, stride = (torch.cat(parts, -1) for parts in zip(*cells))
        return torch.cat([_cxcywh(expected * stride, centre), classes.sigmoid()], 1)

    def forward(self, x):
        neck = self.features(x)
        if self.layout == "yolov8" and self.joined:
            return self._joined_head(neck)
        if self.layout == "yolov8":
            boxes = torch.cat([self._boxes(t, i) for i, t in enumerate(neck)], 2)
            classes = torch.cat([c(t).flatten(2) for c, t in zip(self.cls, neck)], 2)
            return torch.cat([boxes, classes.sigmoid()], 1)
        if self.layout == "yolov5":
            levels = [torch.cat([self._boxes(t, i), self.obj[i](t).sigmoid().flatten(2),
                                 self.cls[i](t).sigmoid().flatten(2)], 1) for i, t in enumerate(neck)]
            return torch.cat(levels, 2).transpose(1, 2)
        if self.layout == "nanodet":
            levels = [torch.cat([c(t).sigmoid(), b(t)], 1).flatten(2) for c, b, t in zip(self.cls, self.box, neck)]
            return torch.cat(levels, 2).transpose(1, 2)
        scores = [c(t).sigmoid().flatten(2).transpose(1, 2) for c, t in zip(self.cls, neck)]
        boxes = [b(t).flatten(2).transpose(1, 2) for b, t in zip(self.box, neck)]
        if self.layout == "yunet":
            objectness = [o(t).sigmoid().flatten(2).transpose(1, 2) for o, t in zip(self.obj, neck)]
            landmarks = [k(t).flatten(2).transpose(1, 2) for k, t in zip(self.kps, neck)]
            return (*scores, *objectness, *boxes, *landmarks)
        return (*scores, *boxes)


def _cells(hw, stride: int):
    """(centres (2, h·w), strides (1, h·w)) of a level's cells in input pixels."""
    ys, xs = torch.meshgrid(torch.arange(hw[0]), torch.arange(hw[1]), indexing="ij")
    centre = (torch.stack([xs.flatten(), ys.flatten()]).float() + 0.5) * stride
    return centre, torch.full((1, centre.shape[1]), float(stride))


def _cxcywh(distances, centre):
    """(N, 4, A) cx, cy, w, h from distances l, t, r, b to the cells' centres (2, A), in input pixels."""
    x0y0, x1y1 = centre - distances[:, :2], centre + distances[:, 2:]
    return torch.cat([(x0y0 + x1y1) / 2, x1y1 - x0y0], 1)


class _Squeeze(nn.Module):
    def forward(self, t):
        return t * t.mean(dim=(2, 3), keepdim=True).sigmoid()


def export(module: TinyDetector) -> onnx.ModelProto:
    """ONNX (opset 17); the batch is dynamic except for ``levels``, exported at batch 1 like PicoDet's own
    models (so that every level's anchor count is static, which pairing score and box outputs needs)."""
    levels = module.layout in ("levels", "yunet")
    parts = ("cls", "obj", "bbox", "kps") if module.layout == "yunet" else ("scores", "boxes")
    names = [f"{part}{i}" for part in parts for i in range(len(STRIDES))] if levels else ["detections"]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(1, 3, 32, 32),), buffer, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=names,
                          dynamic_axes=None if levels else {n: {0: "batch"} for n in ["image", *names]})
    return onnx.load_from_string(buffer.getvalue())


class EndToEnd(nn.Module):
    """A yolov8 TinyDetector with an NMS-free end-to-end tail as YOLOv10/YOLO26 export it: the ``rows``
    anchors of best class probability, then the ``rows`` best (anchor, class) pairs among them, as
    (N, rows, 6) rows of x0, y0, x1, y1, score, class (TopK, GatherElements, Mod and Div in ONNX)."""

    def __init__(self, detector: TinyDetector, rows: int = 12):
        super().__init__()
        self.detector, self.rows = detector, rows
        self.eval()

    def forward(self, x):
        return self._select(x)[0]

    def anchors(self, x):
        """(N, rows): the anchor each row was picked from."""
        return self._select(x)[1]

    def _select(self, x):
        raw = self.detector(x).transpose(1, 2)  # (N, A, 4+C): cx, cy, w, h, probabilities
        centre, size, scores = raw[..., :2], raw[..., 2:4], raw[..., 4:]
        boxes = torch.cat([centre - size / 2, centre + size / 2], -1)
        classes = scores.shape[-1]
        _, best = scores.amax(-1).topk(self.rows)
        boxes = boxes.gather(1, best.unsqueeze(-1).repeat(1, 1, 4))
        scores = scores.gather(1, best.unsqueeze(-1).repeat(1, 1, classes))
        scores, flat = scores.flatten(1).topk(self.rows)
        labels, index = flat % classes, flat // classes
        boxes = boxes.gather(1, index.unsqueeze(-1).repeat(1, 1, 4))
        rows = torch.cat([boxes, scores.unsqueeze(-1), labels.unsqueeze(-1).float()], -1)
        return rows, best.gather(1, index)


def export_end_to_end(module: EndToEnd) -> onnx.ModelProto:
    return export_module(module, "rows")


def export_module(module: nn.Module, output: str) -> onnx.ModelProto:
    """ONNX (opset 17) of a module with one 32×32 image input and one output, the batch dynamic."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, 32, 32),), buffer, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=[output],
                          dynamic_axes={n: {0: "batch"} for n in ["image", output]})
    return onnx.load_from_string(buffer.getvalue())


def with_nms(model: onnx.ModelProto, classes: int = 3, max_boxes: int = 5) -> onnx.ModelProto:
    """The yolov8 export ending in NonMaxSuppression (centre-point boxes, score threshold 0.05): its only
    output is the selected (K, 3) batch/class/anchor rows, as in end-to-end detector exports."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    graph = model.graph
    out = graph.output[0].name

    def const(name, values, dtype):
        graph.initializer.append(numpy_helper.from_array(np.array(values, dtype), name))
        return name

    graph.node.extend([
        helper.make_node("Slice", [out, const("s0", [4], np.int64), const("s1", [4 + classes], np.int64),
                                   const("ax", [1], np.int64)], ["nms_scores"]),
        helper.make_node("Slice", [out, const("b0", [0], np.int64), const("b1", [4], np.int64), "ax"], ["nms_cxcywh"]),
        helper.make_node("Transpose", ["nms_cxcywh"], ["nms_boxes"], perm=[0, 2, 1]),
        helper.make_node("NonMaxSuppression", ["nms_boxes", "nms_scores", const("k", [max_boxes], np.int64),
                                               const("iou", [0.45], np.float32), const("thr", [0.05], np.float32)],
                         ["selected"], center_point_box=1),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("selected", TensorProto.INT64, ["k", 3]))
    return model
