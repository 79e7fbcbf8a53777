"""The HTML report: one self-contained ``index.html`` per output folder (:func:`write_report`).

:mod:`onnxcam.report.items` turns ``results.jsonl`` records into the page's items,
:mod:`onnxcam.report.page` fills the template (``template.html``, package data) with them,
:mod:`onnxcam.report.svg` draws the evaluation curves.
"""

from onnxcam.report.page import read_records, render_report, write_report

__all__ = ["read_records", "render_report", "write_report"]
