"""``results.jsonl`` records → the report's items: one per image, with what the page filters on.

Records of one image are grouped: several methods (``onnxcam compare``) become views side by
side; a detector's boxes (one record per box, ``box_index``) become the all-boxes overlay plus a
strip of per-box views. Each item says its predicted label(s), score and confidence (the page
sorts and filters on them) and whether it disagrees with the true label, when one is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

__all__ = ["build_items"]


def build_items(records: list[dict], out_dir: Path, truth=None) -> list[dict]:
    """Items in the order images first appear in ``records``; image paths relative to ``out_dir``."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record.get("image", "?"), []).append(record)
    return [_item(image, group, Path(out_dir), truth) for image, group in groups.items()]


def _item(image: str, group: list[dict], out_dir: Path, truth) -> dict:
    first = group[0]
    item = {"name": Path(image).name, "image": _relative(image, out_dir), "status": first.get("status", "ok"),
            "error": first.get("error"), "task": first.get("task"), "layer": first.get("layer"),
            "target": _target_text(first)}
    if item["status"] != "ok":
        item.update(labels=[], score=None, confidence=None, views=[], prediction=[])
    elif first.get("task") == "detection":
        item.update(_detection(group))
    else:
        item.update(_prediction(first))
        item["views"] = [_view(r.get("method", ""), r.get("overlay"), r.get("target_score")) for r in group]
        if first.get("output_map"):
            item["output_map"] = quote(first["output_map"])
    item["methods"] = sorted({r.get("method") for r in group if r.get("method")})
    label = truth.lookup(image) if truth is not None else None
    item["truth"] = label
    item["disagrees"] = label is not None and not _agrees(label, item)
    return item


def _view(title: str, overlay: str | None, score) -> dict:
    return {"title": title, "overlay": quote(overlay) if overlay else None, "score": score}


def _target_text(record: dict) -> str:
    label = record.get("target_label")
    description = record.get("target_description", "")
    if record.get("task") == "detection" or record.get("target") is None:
        return description
    return f"{label if label is not None else record['target']} ({description})" if description else str(label)


def _prediction(record: dict) -> dict:
    """Predicted label(s), score, confidence and the prediction as (label, value) rows, by task."""
    task, score = record.get("task"), record.get("target_score")
    if task == "classification":
        topk = record.get("topk", [])
        rows = [(t["label"], t.get("probability")) for t in topk]
        return {"labels": [topk[0]["label"]] if topk else [], "score": score, "prediction": rows,
                "confidence": topk[0].get("probability") if topk else None,
                "top_class": topk[0]["class"] if topk else None}
    if task == "segmentation":
        rows = sorted(record.get("predicted", {}).items(), key=lambda kv: -kv[1])
        return {"labels": [record.get("target_label")], "score": score, "confidence": None,
                "prediction": [(name, f"{pixels} px") for name, pixels in rows]}
    if task == "sequence":
        text = record.get("text", " ".join(map(str, record.get("decoded", []))))
        return {"labels": [], "score": score, "confidence": None, "prediction": [("text", text)], "text": text}
    if task == "dense":
        return {"labels": [], "score": score, "confidence": record.get("output_max"),
                "prediction": [("max", record.get("output_max")), ("mean", record.get("output_mean"))]}
    if task == "regression":
        return {"labels": [], "score": score, "confidence": None,
                "prediction": [(f"output {i}", v) for i, v in enumerate(record.get("outputs", [])[:5])]}
    return {"labels": [], "score": score, "confidence": None,
            "prediction": [("similarity", record.get("similarity", score))]}


def _detection(group: list[dict]) -> dict:
    boxes = sorted((r for r in group if r.get("box_index") is not None), key=lambda r: r["box_index"])
    overlay = next((r.get("image_overlay") for r in group if r.get("image_overlay")), None)
    views = [_view("all boxes", overlay, None)] if overlay else []
    strip = [{**_view(f"#{r['box_index']} {r.get('label', r.get('class'))} {_fmt(r.get('score'))}",
                      r.get("overlay"), r.get("target_score")), "box": r.get("box")} for r in boxes]
    scores = [r["score"] for r in boxes if r.get("score") is not None]
    return {"labels": sorted({str(r.get("label", r.get("class"))) for r in boxes}),
            "score": max((r["target_score"] for r in boxes if r.get("target_score") is not None), default=None),
            "confidence": max(scores, default=None), "views": views, "boxes": strip,
            "prediction": [(f"#{r['box_index']} {r.get('label', r.get('class'))}", r.get("score")) for r in boxes]
            or [("boxes", 0)]}


def _agrees(label: str, item: dict) -> bool:
    """The true label (a name, or a class index as text) is among the predicted ones."""
    return label in [str(p) for p in item["labels"]] or label == str(item.get("top_class"))


def _fmt(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _relative(image: str, out_dir: Path) -> str:
    """The original image's path from the report's folder, URL-quoted (the page shows it by relative path)."""
    try:
        return quote(Path(os.path.relpath(Path(image).resolve(), out_dir.resolve())).as_posix())
    except ValueError:  # on another drive (Windows): no relative path exists
        return Path(image).resolve().as_uri()
