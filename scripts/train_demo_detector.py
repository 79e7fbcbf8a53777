"""Train and export onnxcam's small demo object detector ("shapes_det").

The model finds the four shapes of ``shapes_data.py`` (circle, square,
triangle, cross) in 128x128 cluttered scenes holding 1-4 non-overlapping
objects (``shapes_data.make_scene``). It is a tiny anchor-free detector in the
YOLOv8/FCOS style: a Conv-BN-SiLU backbone with stride-2 stages, an FPN-lite
neck (upsample + add) giving levels of stride 8 and 16 (16x16 + 8x8 = 320
anchors), and per level a shared 3x3 conv feeding a 1x1 class-logit conv and a
1x1 box conv that predicts distances (l, t, r, b) = softplus * stride from the
cell centre. A cell is positive for a box when its centre lies inside the box
and within 1.5 strides of the box centre, or when it holds the box centre;
classes use the sigmoid focal loss, boxes the GIoU loss. Training runs on the
CPU (one thread), is seeded and uses a fixed, pre-generated training set.

The exported graph has input ``image`` (N, 3, 128, 128), RGB scaled by 1/255,
and one output ``boxes`` (N, 4 + 4, 320): rows 0:4 are decoded boxes
(cx, cy, w, h) in input pixels, rows 4: the class probabilities; its last op
is ``Concat(boxes, Sigmoid(class_logits))``.

After training the script prints the training time and, on 300 fresh scenes
(``shapes_data.validation_scenes``), precision and recall at IoU 0.5 after a
0.25 score threshold and class-wise NMS at 0.45 (``cv2.dnn.NMSBoxesBatched``),
and mAP@0.5; it exports ``shapes_det.onnx`` (legacy exporter, opset 17,
dynamic batch), checks it against torch with onnxruntime, and writes
``shapes_det.json`` (pre-processing sidecar, labels ``shapes.labels.txt``) and
four 256x256 example scenes ``examples_det/scene_<n>.png`` of 2-4 objects, all
found (and nothing else) after downscaling to 128x128.

Measured with the defaults (seed 0, 6000 scenes, 16 epochs) on a shared CPU:
data + training 282.6 s CPU (939 s wall); on 300 validation scenes (736
objects) precision 0.987, recall 0.999, mAP@0.5 0.999; ONNX file 703 kB,
max |onnx - torch| = 2.29e-05.

Usage::

    python scripts/train_demo_detector.py [--out models] [--epochs N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes_data import CLASSES, SCENE_SIZE, make_scene, validation_scenes  # noqa: E402
from train_demo_model import SCALE, check_onnx, export_onnx, write_labels, write_sidecar  # noqa: E402

STRIDES = (8, 16)
TRAIN_SCENES = 6000
VALIDATION_SCENES = 300
EXAMPLE_SIZE = 256
EXAMPLE_COUNT = 4
EXAMPLE_OBJECTS = (2, 4)
BATCH_SIZE = 32
LEARNING_RATE = 4e-3
WEIGHT_DECAY = 1e-4
CENTRE_RADIUS = 1.5  # strides; centre sampling
BOX_LOSS_WEIGHT = 2.0
SCORE_THRESHOLD = 0.25
NMS_THRESHOLD = 0.45
MATCH_IOU = 0.5
MAP_SCORE_THRESHOLD = 0.01
ONNX_TOLERANCE = 1e-3  # pixels and probabilities; box coordinates reach 128
MAX_ONNX_BYTES = 1024 * 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="output directory")
    parser.add_argument("--epochs", type=int, default=16, help="training epochs")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser.parse_args()


def conv(in_ch: int, out_ch: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Convolution (same padding) followed by batch norm and SiLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.SiLU(),
    )


class Head(nn.Module):
    """One level's head: a shared 3x3 conv feeding a class branch and a box branch."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.shared = conv(channels, channels)
        self.cls = nn.Conv2d(channels, num_classes, 1)
        self.box = nn.Conv2d(channels, 4, 1)
        # Start from a low foreground probability so the many background cells do not swamp the loss.
        nn.init.constant_(self.cls.bias, -4.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.shared(x)
        return self.cls(shared).flatten(2), self.box(shared).flatten(2)


def anchor_grid(size: int = SCENE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (2, A) in pixels and strides (1, A), level by level, row-major."""
    centres, strides = [], []
    for stride in STRIDES:
        cells = size // stride
        coords = (torch.arange(cells, dtype=torch.float32) + 0.5) * stride
        ys, xs = torch.meshgrid(coords, coords, indexing="ij")
        centres.append(torch.stack([xs.flatten(), ys.flatten()]))
        strides.append(torch.full((1, cells * cells), float(stride)))
    return torch.cat(centres, dim=1), torch.cat(strides, dim=1)


class Detector(nn.Module):
    """Backbone (stride 8 and 16 features), FPN-lite neck and one head per level."""

    def __init__(self, num_classes: int = len(CLASSES)):
        super().__init__()
        self.stem = nn.Sequential(conv(3, 16, 2), conv(16, 32, 2))  # stride 4
        self.stage8 = nn.Sequential(conv(32, 48, 2), conv(48, 48))
        self.stage16 = nn.Sequential(conv(48, 64, 2), conv(64, 64))
        self.lateral16 = conv(64, 48, kernel=1)
        self.fuse8 = conv(48, 48)
        self.heads = nn.ModuleList([Head(48, num_classes), Head(48, num_classes)])
        centres, strides = anchor_grid()
        self.register_buffer("centres", centres, persistent=False)
        self.register_buffer("strides", strides, persistent=False)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (N, C, A) and boxes (x0, y0, x1, y1) in pixels (N, 4, A)."""
        c8 = self.stage8(self.stem(x))
        p16 = self.lateral16(self.stage16(c8))
        p8 = self.fuse8(c8 + F.interpolate(p16, scale_factor=2.0, mode="nearest"))
        outputs = [head(level) for head, level in zip(self.heads, (p8, p16))]
        logits = torch.cat([cls for cls, _ in outputs], dim=2)
        distances = F.softplus(torch.cat([box for _, box in outputs], dim=2)) * self.strides
        corners = torch.cat([self.centres - distances[:, :2], self.centres + distances[:, 2:]], dim=1)
        return logits, corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, corners = self.raw(x)
        centre = (corners[:, :2] + corners[:, 2:]) * 0.5
        extent = corners[:, 2:] - corners[:, :2]
        return torch.cat([torch.cat([centre, extent], dim=1), logits.sigmoid()], dim=1)


def generate(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` scenes as uint8 NCHW images, boxes padded to (n, M, 4) and classes (n, M) (-1 = none)."""
    most = 4
    images = np.empty((n, 3, SCENE_SIZE, SCENE_SIZE), dtype=np.uint8)
    boxes = np.zeros((n, most, 4), dtype=np.float32)
    classes = np.full((n, most), -1, dtype=np.int64)
    for i in range(n):
        image, scene_boxes, scene_classes = make_scene(rng)
        images[i] = image.transpose(2, 0, 1)
        boxes[i, : len(scene_boxes)] = scene_boxes
        classes[i, : len(scene_classes)] = scene_classes
    return torch.from_numpy(images), torch.from_numpy(boxes), torch.from_numpy(classes)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW RGB -> float32 scaled by SCALE."""
    return images.float() * SCALE


def flip(images, boxes, horizontal: bool, vertical: bool):
    """Flip a batch of NCHW images and their (x0, y0, x1, y1) boxes (padding rows stay unused)."""
    size = images.shape[-1]
    boxes = boxes.clone()
    if horizontal:
        images = images.flip(3)
        boxes[..., [0, 2]] = size - boxes[..., [2, 0]]
    if vertical:
        images = images.flip(2)
        boxes[..., [1, 3]] = size - boxes[..., [3, 1]]
    return images, boxes


def assign(boxes: torch.Tensor, classes: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor):
    """Per-cell targets: one-hot classes (N, A, C), boxes (N, A, 4) and the positive mask (N, A)."""
    cx, cy = centres[0][None, :, None], centres[1][None, :, None]
    stride = strides[0][None, :, None]
    x0, y0, x1, y1 = (boxes[..., k][:, None, :] for k in range(4))
    bx, by = (x0 + x1) * 0.5, (y0 + y1) * 0.5
    inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    near = ((cx - bx).abs() < CENTRE_RADIUS * stride) & ((cy - by).abs() < CENTRE_RADIUS * stride)
    holds_centre = (torch.floor(bx / stride) == torch.floor(cx / stride)) & (
        torch.floor(by / stride) == torch.floor(cy / stride)
    )
    matches = ((inside & near) | holds_centre) & (classes >= 0)[:, None, :]
    positive = matches.any(dim=2)
    owner = matches.float().argmax(dim=2)  # boxes do not overlap, so at most one matches
    box_targets = torch.gather(boxes, 1, owner[..., None].expand(-1, -1, 4))
    owner_classes = torch.gather(classes, 1, owner)
    cls_targets = F.one_hot(owner_classes.clamp(min=0), len(CLASSES)).float() * positive[..., None]
    return cls_targets, box_targets, positive


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - generalised IoU of (K, 4) x0, y0, x1, y1 boxes, per box."""
    lt, rb = torch.max(pred[:, :2], target[:, :2]), torch.min(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = lambda b: (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)  # noqa: E731
    union = area(pred) + area(target) - inter
    hull = (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])).prod(dim=1)
    iou = inter / union.clamp(min=1e-6)
    return 1.0 - iou + (hull - union) / hull.clamp(min=1e-6)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """Sigmoid focal loss (Lin et al.), summed."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * ce).sum()


def detection_loss(model: Detector, x, boxes, classes) -> torch.Tensor:
    logits, corners = model.raw(x)
    cls_targets, box_targets, positive = assign(boxes, classes, model.centres, model.strides)
    positives = max(int(positive.sum()), 1)
    cls_loss = focal_loss(logits.transpose(1, 2), cls_targets) / positives
    box_loss = giou_loss(corners.transpose(1, 2)[positive], box_targets[positive]).mean()
    return cls_loss + BOX_LOSS_WEIGHT * box_loss


def train(model: Detector, images, boxes, classes, epochs: int) -> None:
    """AdamW with a one-cycle schedule and random flips, one progress line per epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (len(images) + BATCH_SIZE - 1) // BATCH_SIZE
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=epochs * steps_per_epoch
    )
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(images))
        total = 0.0
        for start in range(0, len(images), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            horizontal, vertical = (bool(v) for v in torch.rand(2) < 0.5)
            batch, batch_boxes = flip(images[idx], boxes[idx], horizontal, vertical)
            loss = detection_loss(model, to_input(batch), batch_boxes, classes[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch}/{epochs}  loss {total / len(images):.4f}  "
              f"({time.perf_counter() - started:.1f} s)", flush=True)


def detect(output: np.ndarray, score_threshold: float = SCORE_THRESHOLD):
    """One image's (4 + C, A) output -> boxes (k, 4) x0, y0, x1, y1, scores (k,), classes (k,) after class-wise NMS."""
    probs = output[4:].T
    classes, scores = probs.argmax(axis=1), probs.max(axis=1)
    cx, cy, w, h = output[:4]
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(),
                                   score_threshold, NMS_THRESHOLD)
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return corners[keep], scores[keep], classes[keep]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (n, 4) and (m, 4) x0, y0, x1, y1 boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def match(boxes, scores, classes, gt_boxes, gt_classes) -> np.ndarray:
    """Whether each detection (in descending score order) is a true positive at IoU >= MATCH_IOU."""
    order = np.argsort(-scores)
    iou = box_iou(boxes[order], gt_boxes) if len(gt_boxes) else np.zeros((len(order), 0))
    taken = np.zeros(len(gt_boxes), dtype=bool)
    hits = np.zeros(len(order), dtype=bool)
    for i, det in enumerate(order):
        candidates = (gt_classes == classes[det]) & ~taken & (iou[i] >= MATCH_IOU)
        if candidates.any():
            best = int(np.argmax(np.where(candidates, iou[i], -1.0)))
            taken[best] = hits[i] = True
    hits_in_input_order = np.empty_like(hits)
    hits_in_input_order[order] = hits
    return hits_in_input_order


def average_precision(scores: np.ndarray, hits: np.ndarray, positives: int) -> float:
    """All-point interpolated AP from detections' scores and true-positive flags."""
    order = np.argsort(-scores)
    tp = np.cumsum(hits[order])
    recall = np.concatenate([[0.0], tp / max(positives, 1)])
    precision = np.concatenate([[1.0], tp / np.arange(1, len(order) + 1)])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


@torch.no_grad()
def predict(model: Detector, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB scenes -> model outputs (N, 4 + C, A)."""
    x = to_input(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    return torch.cat([model.eval()(chunk) for chunk in x.split(100)]).numpy()


def evaluate(outputs: np.ndarray, scenes) -> dict[str, float]:
    """Precision and recall at the score threshold, and mAP@0.5, over the scenes."""
    true_pos = detections = 0
    per_class = {c: ([], [], 0) for c in range(len(CLASSES))}
    for output, (_, gt_boxes, gt_classes) in zip(outputs, scenes):
        boxes, scores, classes = detect(output, MAP_SCORE_THRESHOLD)
        hits = match(boxes, scores, classes, gt_boxes, gt_classes)
        confident = scores >= SCORE_THRESHOLD
        true_pos += int(hits[confident].sum())
        detections += int(confident.sum())
        for c in per_class:
            class_scores, class_hits, count = per_class[c]
            class_scores.append(scores[classes == c])
            class_hits.append(hits[classes == c])
            per_class[c] = (class_scores, class_hits, count + int((gt_classes == c).sum()))
    objects = sum(count for _, _, count in per_class.values())
    aps = [average_precision(np.concatenate(s), np.concatenate(h), n) for s, h, n in per_class.values()]
    return {"precision": true_pos / max(detections, 1), "recall": true_pos / objects, "mAP@0.5": float(np.mean(aps))}


def finds_exactly(model: Detector, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> bool:
    """Whether the model, on the image downscaled to 128x128, finds every object and nothing else."""
    small = cv2.resize(image, (SCENE_SIZE, SCENE_SIZE), interpolation=cv2.INTER_AREA)
    found, scores, found_classes = detect(predict(model, small[None])[0])
    scaled = boxes * (SCENE_SIZE / image.shape[0])
    hits = match(found, scores, found_classes, scaled, classes)
    return len(found) == len(boxes) and bool(hits.all())


def write_examples(model: Detector, directory: Path, rng: np.random.Generator) -> None:
    """Save 256x256 scenes of 2-4 objects that the model detects exactly."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.png"):
        stale.unlink()
    written = rejected = 0
    while written < EXAMPLE_COUNT:
        count = int(rng.integers(EXAMPLE_OBJECTS[0], EXAMPLE_OBJECTS[1] + 1))
        image, boxes, classes = make_scene(rng, EXAMPLE_SIZE, count)
        if len(boxes) < EXAMPLE_OBJECTS[0] or not finds_exactly(model, image, boxes, classes):
            rejected += 1
            continue
        written += 1
        cv2.imwrite(str(directory / f"scene_{written}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    print(f"examples: {written} scenes in {directory} ({rejected} candidates skipped)")


def main() -> None:
    args = parse_args()
    # One thread: on a shared, busy CPU two OpenMP threads spin-wait and run ~40x slower.
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    images, boxes, classes = generate(np.random.default_rng(args.seed), TRAIN_SCENES)
    print(f"generated {TRAIN_SCENES} training scenes ({time.perf_counter() - started:.1f} s)", flush=True)

    model = Detector()
    train(model, images, boxes, classes, args.epochs)
    print(f"data + training {time.perf_counter() - started:.1f} s wall, "
          f"{time.process_time() - cpu_started:.1f} s CPU")

    scenes = validation_scenes(VALIDATION_SCENES)
    outputs = predict(model, np.stack([image for image, _, _ in scenes]))
    figures = evaluate(outputs, scenes)
    print(f"validation ({VALIDATION_SCENES} scenes, {sum(len(c) for _, _, c in scenes)} objects): "
          + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "shapes_det.onnx"
    export_onnx(model, onnx_path, size=SCENE_SIZE, output="boxes")
    sample = to_input(torch.from_numpy(np.stack([s[0] for s in scenes[:8]]).transpose(0, 3, 1, 2).copy()))
    difference = check_onnx(model, onnx_path, sample, output="boxes", tolerance=ONNX_TOLERANCE)
    print(f"exported {onnx_path} ({onnx_path.stat().st_size} bytes), max |onnx - torch| = {difference:.2e}")
    labels_path = out / "shapes.labels.txt"
    write_labels(labels_path)
    write_sidecar(out / "shapes_det.json", labels_path.name, size=SCENE_SIZE,
                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    write_examples(model, out / "examples_det", np.random.default_rng(args.seed + 1))
    if onnx_path.stat().st_size > MAX_ONNX_BYTES:
        raise RuntimeError(f"{onnx_path} holds {onnx_path.stat().st_size} bytes, more than {MAX_ONNX_BYTES}")
    print(f"done in {time.perf_counter() - started:.1f} s total")


if __name__ == "__main__":
    main()
