"""The report page: the template with the items (and evaluation metrics) as one embedded JSON blob.

Nothing on the page is fetched: styles and script are inline, images load by relative path, and
a Content-Security-Policy forbids every other request.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from pathlib import Path

from onnxcam.errors import InputError
from onnxcam.io.files import write_atomically
from onnxcam.report.items import build_items

__all__ = ["read_records", "render_report", "write_report", "REPORT_NAME"]

REPORT_NAME = "index.html"


def read_records(out_dir: str | Path) -> list[dict]:
    """The records of ``OUTDIR/results.jsonl``."""
    path = Path(out_dir) / "results.jsonl"
    if not path.is_file():
        raise InputError(f"'{out_dir}' holds no results.jsonl; give a folder written by 'onnxcam run' or 'compare'")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number} is not JSON ({exc.msg}); write the folder again") from None
        if not isinstance(record, dict):
            raise InputError(f"{path} line {number} is not a JSON object; write the folder again")
        records.append(record)
    return records


def render_report(records: list[dict], out_dir: str | Path, *, truth=None, metrics: dict | None = None,
                  title: str = "onnxcam report") -> bytes:
    """The page's bytes for ``records`` (image paths made relative to ``out_dir``, where it will be)."""
    data = {"items": build_items(records, Path(out_dir), truth), "has_truth": truth is not None, "metrics": metrics}
    blob = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    template = resources.files("onnxcam.report").joinpath("template.html").read_text(encoding="utf-8")
    return template.replace("__ONNXCAM_TITLE__", escape(title)).replace("__ONNXCAM_DATA__", blob).encode()


def write_report(path: str | Path, records: list[dict], out_dir: str | Path, **options) -> None:
    """Write the page for ``records`` to ``path`` (in a staging folder or in ``out_dir`` itself)."""
    write_atomically(path, render_report(records, out_dir, **options))
