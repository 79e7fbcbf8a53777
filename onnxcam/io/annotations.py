"""Ground truth a user gives beside the images: true labels and object boxes, as small CSV files.

``truth.csv`` has one ``image,label`` line per image; ``boxes.csv`` one ``image,x0,y0,x1,y1``
line per object box (several lines per image allowed), in the image file's pixels. A header
line is allowed in both. ``image`` is the path as given to onnxcam or just the file name; an
:class:`Annotations` lookup tries the path, then the name. Object masks are a folder of PNGs,
``NAME.png`` for the image ``NAME.*`` (any size; non-zero pixels are the object).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from onnxcam.errors import InputError

__all__ = ["Annotations", "MaskFolder", "read_truth", "read_boxes"]

MAX_BYTES = 64 << 20


class Annotations(dict):
    """Values keyed by image path as written in the file; ``lookup`` also matches by file name."""

    def lookup(self, image: str):
        if image in self:
            return self[image]
        by_name = self._by_name()
        return by_name.get(Path(image).name)

    def _by_name(self) -> dict:
        if not hasattr(self, "_names"):
            self._names = {Path(key).name: value for key, value in self.items()}
        return self._names


def _rows(path: str | Path, what: str, columns: int) -> list[list[str]]:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InputError(f"{what} '{path}' is over {MAX_BYTES >> 20} MB; give a smaller CSV file")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} '{path}' is not UTF-8 text; give a CSV file") from None
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    for number, row in enumerate(rows, 1):
        if len(row) != columns:
            raise InputError(f"{what} '{path}' line {number} has {len(row)} fields, not {columns}; "
                             f"write one {_FORMATS[what]} per line")
    return rows


_FORMATS = {"labels file": "image,label", "boxes file": "image,x0,y0,x1,y1"}


def read_truth(path: str | Path) -> Annotations:
    """True labels (a class name or index, as text) per image, from ``image,label`` lines."""
    rows = _rows(path, "labels file", 2)
    if rows and rows[0] == ["image", "label"]:
        rows = rows[1:]
    return Annotations((image, label) for image, label in rows)


def read_boxes(path: str | Path) -> Annotations:
    """Object boxes (x0, y0, x1, y1) per image, in the image's pixels, from ``image,x0,y0,x1,y1`` lines."""
    rows = _rows(path, "boxes file", 5)
    boxes = Annotations()
    for number, (image, *coords) in enumerate(rows, 1):
        try:
            x0, y0, x1, y1 = (float(c) for c in coords)
        except ValueError:
            if number == 1:
                continue  # a header line
            raise InputError(f"boxes file '{path}' line {number}: {','.join(coords)} are not numbers; "
                             "write image,x0,y0,x1,y1") from None
        if not (x1 > x0 and y1 > y0):
            raise InputError(f"boxes file '{path}' line {number}: the box {x0:g},{y0:g},{x1:g},{y1:g} is empty; "
                             "give x0 < x1 and y0 < y1")
        boxes.setdefault(image, []).append((x0, y0, x1, y1))
    return boxes


class MaskFolder:
    """Object masks ``FOLDER/NAME.png`` for the images ``NAME.*``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"masks folder '{folder}' does not exist; give a folder of NAME.png object masks")
        self._files = {p.stem: p for p in self.folder.glob("*.png")}

    def lookup(self, image: str) -> Path | None:
        return self._files.get(Path(image).stem)
