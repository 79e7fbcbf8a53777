"""results.jsonl streamed record by record, and the run's summary gathered from the records."""

import json
from pathlib import Path

import pytest

from onnxcam.errors import OutputError
from onnxcam.io.results import ResultsFile, RunSummary


def test_the_summary_counts_images_not_a_detectors_box_records():
    records = [
        {"image": "a.png", "status": "ok", "box_index": 0}, {"image": "a.png", "status": "ok", "box_index": 1},
        {"image": "b.png", "status": "failed", "error": "cannot decode"},
        {"image": "c.png", "status": "ok", "box_index": None, "all_zero": True},
    ]
    summary = RunSummary.of(records)
    assert (summary.images, summary.explained, summary.boxes, summary.all_zero) == (3, 2, 2, 1)
    assert summary.failures == [{"image": "b.png", "error": "cannot decode"}]


def test_results_file_writes_one_strict_json_line_per_record(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsFile(path) as results:
        results.add({"image": "a.png", "status": "ok", "target_score": 1.5})
        results.add({"image": "b.png", "status": "ok"})
        with pytest.raises(ValueError):
            results.add({"image": "c.png", "status": "ok", "target_score": float("nan")})
    assert [json.loads(line)["image"] for line in path.read_text().splitlines()] == ["a.png", "b.png"]
    assert results.summary.images == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_one_output_error_not_an_os_error():
    with pytest.raises(OutputError, match="cannot write '/dev/full': No space left on device"):
        with ResultsFile("/dev/full") as results:
            results.add({"image": "a.png", "status": "ok"})
