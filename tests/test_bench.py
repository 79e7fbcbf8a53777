"""onnxcam bench: interleaved timing, the winner per row, and the command's table and JSON."""

import json

import onnx
import pytest

from onnxcam.bench import Timing, fastest, interleaved
from tests.reliability.models import classifier
from tests.test_cli import assert_one_line_error, invoke


def test_interleaved_calls_each_function_in_turn_after_a_warm_up():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeat=3)
    assert calls == ["a", "b"] * 4
    assert [len(t) for t in times.values()] == [3, 3] and all(t >= 0 for t in times["a"] + times["b"])


def test_fastest_backend_per_method_and_batch():
    rows = [Timing("cpu", "gradcam", 1, 1.0, 2.0, 2.0), Timing("openvino", "gradcam", 1, 1.0, 1.0, 1.0),
            Timing("cpu", "gradcam", 8, 8.0, 8.0, 1.0), Timing("openvino", "gradcam", 8, 4.0, 16.0, 4.0)]
    winners = fastest(rows)
    assert [(w["batch"], w["backend"], w["vs"]) for w in winners] == [(1, "openvino", {"cpu": 2.0}),
                                                                      (8, "cpu", {"openvino": 2.0})]


def test_bench_prints_every_row_and_the_winner_as_json(demo_model):
    pytest.importorskip("openvino")
    result = invoke("bench", demo_model, "--json", "--repeat", 2, "--batch", 1, "--batch", 3,
                    "--provider", "cpu", "--provider", "openvino", "--method", "gradcam", "--method", "ablationcam")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["timings"]
    assert [(r["backend"], r["method"], r["batch"]) for r in rows] == [
        (b, m, n) for b in ("cpu", "openvino") for m in ("gradcam", "ablationcam") for n in (1, 3)]
    assert all(r["plain_ms"] > 0 and r["explain_ms"] > 0 and r["ratio"] > 0 for r in rows)
    assert len(report["fastest"]) == 4 and {w["backend"] for w in report["fastest"]} <= {"cpu", "openvino"}
    assert set(report["run_stages_ms_per_image"]) == {"decode+preprocess", "render"}
    assert report["peak_rss_mib"] > 50


def test_bench_table(demo_model):
    result = invoke("bench", demo_model, "--repeat", 1, "--batch", 2, "--provider", "cpu")
    assert result.exit_code == 0, result.output
    assert "| cpu | gradcam | 2 |" in result.stdout and "gradcam at batch 2: cpu wins" in result.stdout


def test_bench_refuses_a_batch_the_model_cannot_take(tmp_path):
    path = tmp_path / "fixed.onnx"
    onnx.save(classifier(batch=1), str(path))
    assert_one_line_error(invoke("bench", path, "--batch", 4, "--provider", "cpu"), "fixed at 1; pass --batch 1")


def test_bench_refuses_an_unknown_method(demo_model):
    assert_one_line_error(invoke("bench", demo_model, "--method", "nope"), "unknown method 'nope'")


def test_bench_refuses_a_backend_that_cannot_run_here(demo_model, monkeypatch):
    monkeypatch.setattr("onnxcam.runtime.cuda_problem", lambda: "no NVIDIA driver found")
    assert_one_line_error(invoke("bench", demo_model, "--provider", "cuda"),
                          "cannot time cuda: no NVIDIA driver found; leave --provider cuda out")
