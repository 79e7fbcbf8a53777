"""Hand-made results.jsonl folders for the report tests: every task's record format, with real PNGs."""

import json
import os
from pathlib import Path

import cv2
import numpy as np


def png(path: Path, colour, size=(48, 64)) -> None:
    image = np.zeros((*size, 3), np.uint8)
    image[:] = colour
    cv2.rectangle(image, (8, 8), (30, 30), (255, 255, 255), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def detection_folder(root: Path) -> Path:
    """The detection format the lead's detector writes: one record per box, an image without boxes."""
    images, out = root / "images", root / "out"
    png(images / "street.png", (40, 90, 160))
    png(images / "empty.png", (90, 90, 90))
    records = []
    for i, (label, score) in enumerate([("car", 0.91), ("person", 0.55), ("car", 0.32)]):
        for name in (f"street.box{i}.overlay.png", f"street.box{i}.cam.png"):
            png(out / name, (0, 0, 200 - 40 * i))
        records.append({"status": "ok", "task": "detection", "image": str(images / "street.png"), "box_index": i,
                        "box": [4 + i, 5, 30, 40], "class": 2 if label == "car" else 0, "label": label,
                        "score": score, "target_score": score * 10, "heatmap": f"street.box{i}.cam.png",
                        "overlay": f"street.box{i}.overlay.png", "image_overlay": "street.overlay.png",
                        "layer": "backbone.out", "method": "gradcam", "target_description": "the box's class score"})
    png(out / "street.overlay.png", (0, 200, 0))
    png(out / "empty.overlay.png", (0, 100, 0))
    records.append({"status": "ok", "task": "detection", "image": str(images / "empty.png"), "box_index": None,
                    "boxes": 0, "image_overlay": "empty.overlay.png", "layer": "backbone.out", "method": "gradcam",
                    "target_description": "no detections"})
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


def classification_folder(root: Path, count: int, labels=("circle", "square", "triangle")) -> list[dict]:
    """``count`` classification records of ``count`` image files (hard links to four PNGs) and four overlays."""
    images = root / "images"
    for i in range(4):
        png(images / f"base{i}.png", (60 * i, 80, 120))
        png(root / f"ov{i}.png", (0, 60 * i, 200))
    records = []
    for i in range(count):
        label = labels[i % len(labels)]
        os.link(images / f"base{i % 4}.png", images / f"img{i}.png")
        records.append({"status": "ok", "image": str(images / f"img{i}.png"), "overlay": f"ov{i % 4}.png",
                        "heatmap": f"cam{i % 4}.png", "task": "classification", "target": i % len(labels),
                        "target_description": "the top-1 class's score", "target_score": float(i % 97),
                        "layer": "features", "method": "gradcam", "provider": "cpu", "target_label": label,
                        "topk": [{"class": i % len(labels), "label": label, "output": 1.0,
                                  "probability": round(0.3 + 0.7 * ((i * 37) % 100) / 100, 3)}]})
    return records
