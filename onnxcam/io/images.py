"""Decoding images (OpenCV) and turning them into the model's input batch.

Pre-processing comes from, in order: explicit arguments, a preset, the sidecar JSON next to the
model (``model.json`` beside ``model.onnx``; ``model.cam.onnx`` also looks for ``model.json``),
then the ``imagenet`` preset. The sidecar's format::

    {"size": [224, 224], "color": "RGB", "scale": 0.00392156862745098,
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW",
     "labels": "labels.txt"}

A pixel value p (0..255) becomes (p·scale − mean) / std, per channel, in the stated colour order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from onnxcam.errors import InputError, OnnxCamError

__all__ = ["Preprocess", "PRESETS", "decode_image", "find_sidecar", "read_labels", "IMAGE_SUFFIXES", "collect_images"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class Preprocess:
    """How decoded pixels become the model's input."""

    size: tuple[int, int] | None = None  # (height, width); None: the model input's static size
    color: str = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str | None = None  # "NCHW" or "NHWC"; None: the model's
    labels: str | None = None  # path of a labels file, one class name per line
    source: str = "default"  # where these settings came from, for messages

    def __post_init__(self):
        if self.color not in ("RGB", "BGR"):
            raise OnnxCamError(f"colour order '{self.color}' is not RGB or BGR")
        if self.layout not in (None, "NCHW", "NHWC"):
            raise OnnxCamError(f"layout '{self.layout}' is not NCHW or NHWC")
        if len(self.mean) != len(self.std) or any(s == 0 for s in self.std):
            raise OnnxCamError(f"mean {self.mean} and std {self.std} must have the same length and std no zeros")

    @classmethod
    def from_dict(cls, data: dict, base_dir: Path | None = None, source: str = "dict") -> Preprocess:
        known = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = set(data) - known
        if unknown:
            raise OnnxCamError(f"unknown pre-processing keys {sorted(unknown)} in {source}; known: {sorted(known)}")
        values = dict(data)
        if values.get("size") is not None:
            values["size"] = tuple(int(v) for v in values["size"])
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        if values.get("labels") and base_dir is not None and not Path(values["labels"]).is_absolute():
            values["labels"] = str(base_dir / values["labels"])
        return cls(**values, source=source)

    def replace(self, **changes) -> Preprocess:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self) -> str:
        size = "model's" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return (f"{self.source}: {self.color}, size {size}, scale {self.scale:.6g}, "
                f"mean {list(self.mean)}, std {list(self.std)}")

    def batch(self, images_bgr: Sequence[np.ndarray], size: tuple[int, int], layout: str) -> np.ndarray:
        """Stack decoded BGR images into a float32 batch of the model's size and layout."""
        height, width = size
        arrays = []
        for image in images_bgr:
            shrink = image.shape[0] > height or image.shape[1] > width
            resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if self.color == "RGB":
                resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
            pixels = resized.astype(np.float32) * np.float32(self.scale)
            pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            arrays.append(pixels)
        batch = np.stack(arrays)
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if layout == "NCHW" else batch)


PRESETS: dict[str, Preprocess] = {
    "imagenet": Preprocess(color="RGB", scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                           source="preset imagenet"),
    "unit": Preprocess(color="RGB", scale=1 / 255, source="preset unit"),
    "raw": Preprocess(color="RGB", scale=1.0, source="preset raw"),
    "caffe": Preprocess(color="BGR", scale=1.0, mean=(103.939, 116.779, 123.68), source="preset caffe"),
}


def preset(name: str) -> Preprocess:
    try:
        return PRESETS[name]
    except KeyError:
        raise OnnxCamError(f"unknown pre-processing preset '{name}'; choose one of: {', '.join(PRESETS)}") from None


def find_sidecar(model_path: str | Path) -> Path | None:
    """``model.json`` beside ``model.onnx`` (and ``model.json`` for ``model.cam.onnx``)."""
    path = Path(model_path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.stem
    candidates = [path.with_name(stem + ".json")]
    if stem.endswith(".cam"):
        candidates.append(path.with_name(stem[: -len(".cam")] + ".json"))
    return next((c for c in candidates if c.is_file()), None)


def load_sidecar(path: Path) -> Preprocess:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read pre-processing sidecar '{path}': {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"sidecar '{path}' must hold a JSON object")
    return Preprocess.from_dict(data, base_dir=path.parent, source=f"sidecar {path.name}")


def resolve_preprocess(model_path: str | Path | None, given=None) -> Preprocess:
    """Pre-processing from ``given`` (Preprocess, preset name or dict), else the sidecar, else imagenet."""
    if isinstance(given, Preprocess):
        return given
    if isinstance(given, str):
        return preset(given)
    if isinstance(given, dict):
        return Preprocess.from_dict(given)
    sidecar = find_sidecar(model_path) if model_path else None
    if sidecar:
        return load_sidecar(sidecar)
    return PRESETS["imagenet"]


def decode_image(source: str | Path | bytes) -> np.ndarray:
    """Decode a path or encoded bytes into a BGR uint8 (H, W, 3) image."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = np.frombuffer(source, dtype=np.uint8), "image bytes"
    else:
        label = f"image '{source}'"
        try:
            data = np.fromfile(str(source), dtype=np.uint8)
        except OSError as exc:
            raise InputError(f"cannot read {label}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"cannot decode {label}: not an image OpenCV reads (PNG, JPEG, BMP, TIFF, WebP, ...)")
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def read_labels(path: str | Path) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read labels file '{path}': {exc.strerror or exc}") from None
    return [line.strip() for line in lines if line.strip()]


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus the image files under named folders (sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"input '{path}' does not exist; pass image files or folders of images")
    if not found:
        raise InputError(f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found
