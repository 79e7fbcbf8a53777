"""A PNG writer for onnxcam's pictures: the Sub filter in NumPy, then deflate at ISA-L's level 1.

OpenCV's encoder runs libpng over its bundled zlib, whose fastest level that still compresses
costs 2-7x ISA-L's (``python scripts/bench_run.py --pngs``). The container itself is three
chunks (PNG specification, sections 5 and 11): IHDR, one IDAT holding the zlib stream of the
filtered rows, IEND.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

try:  # declared for the platforms that have wheels; elsewhere the caller falls back to OpenCV
    from isal import isal_zlib
except ImportError:  # pragma: no cover - exercised by monkeypatching AVAILABLE
    isal_zlib = None

__all__ = ["AVAILABLE", "encode"]

AVAILABLE = isal_zlib is not None
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> greyscale, truecolour, truecolour with alpha
_TO_RGB = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}
_SUB = 1  # filter type: each byte minus the byte one pixel to its left


def encode(image: np.ndarray) -> bytes:
    """The PNG of an OpenCV picture: (H, W) or (H, W, 1|3|4) uint8 or uint16, BGR(A) channel order."""
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if image.dtype not in (np.uint8, np.uint16) or channels not in _COLOUR_TYPES or not height or not width:
        raise ValueError(f"cannot write a {image.dtype} picture of shape {image.shape} as PNG")
    depth = 8 * image.dtype.itemsize
    header = struct.pack(">IIBBBBB", width, height, depth, _COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join((_SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"IDAT", isal_zlib.compress(_filtered_rows(image), 1)), _chunk(b"IEND", b"")))


def _filtered_rows(image: np.ndarray) -> np.ndarray:
    """Each row as its filter type byte and the Sub-filtered bytes (PNG stores RGB order, big-endian samples)."""
    if image.ndim == 3 and image.shape[2] in _TO_RGB:
        image = cv2.cvtColor(image, _TO_RGB[image.shape[2]])  # contiguous; NumPy's image[..., ::-1] is not
    raw = np.ascontiguousarray(image).astype(image.dtype.newbyteorder(">"), copy=False).view(np.uint8)
    raw = raw.reshape(image.shape[0], -1)
    pixel = raw.shape[1] // image.shape[1]
    rows = np.empty((raw.shape[0], raw.shape[1] + 1), np.uint8)
    rows[:, 0] = _SUB
    rows[:, 1:pixel + 1] = raw[:, :pixel]
    np.subtract(raw[:, pixel:], raw[:, :-pixel], out=rows[:, pixel + 1:])  # wraps modulo 256, as the filter does
    return rows


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
