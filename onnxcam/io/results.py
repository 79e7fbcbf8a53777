"""``results.jsonl`` written record by record as a run goes, and the run's summary gathered on the way.

A run of 100,000 images would otherwise hold 100,000 records (~4 kB each as Python dicts) until
the end; streamed, its memory stays flat however many images there are.
"""

from __future__ import annotations

import json
from pathlib import Path

from onnxcam.errors import OutputError

__all__ = ["ResultsFile", "RunSummary"]


class RunSummary:
    """What the summary line needs from a run's records: images, failures, all-zero maps, boxes, and a
    quantised model's twin facts (the first record's: its check on the first batch)."""

    def __init__(self):
        self.images = self.all_zero = self.boxes = 0
        self.failures: list[dict] = []
        self.twin: dict | None = None
        self._last_image = None

    @classmethod
    def of(cls, records) -> RunSummary:
        summary = cls()
        for record in records:
            summary.add(record)
        return summary

    def add(self, record: dict) -> None:
        if record["image"] != self._last_image:  # a detector's records of one image come one after another
            self.images += 1
            self._last_image = record["image"]
        if record["status"] != "ok":
            self.failures.append({"image": record["image"], "error": record["error"]})
        self.all_zero += bool(record.get("all_zero"))
        self.boxes += record.get("box_index") is not None
        self.twin = self.twin or record.get("twin")

    @property
    def explained(self) -> int:
        return self.images - len(self.failures)


class ResultsFile:
    """One JSON line per record, appended as the records come; use it as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.summary = RunSummary()
        self._file = None

    def __enter__(self) -> ResultsFile:
        try:
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115  (closed by __exit__)
        except OSError as exc:
            raise OutputError(f"cannot write '{self.path}': {exc.strerror or exc}") from None
        return self

    def add(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False) + "\n"
        try:
            self._file.write(line)
        except OSError as exc:  # e.g. the disk filled up
            raise self._error(exc) from None
        self.summary.add(record)

    def __exit__(self, *exc_info) -> None:
        try:
            self._file.close()  # flushes: a full disk shows here
        except OSError as exc:
            if exc_info[0] is None:
                raise self._error(exc) from None

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write '{self.path}': {exc.strerror or exc}")
