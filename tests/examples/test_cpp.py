"""examples/cpp: the C++ library embedding onnxcam, compiled with CMake and run through its demo program.

The build folder is kept in pytest's cache (a first build takes ~30 s, later runs only relink what
changed). Skipped where cmake, a C++ compiler or pybind11 is missing.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from onnxcam import Explainer, InputError, overlay
from onnxcam.io.render import encode_png
from tests.conftest import ROOT
from tests.examples.build_folders import build_folder

SOURCE = ROOT / "examples" / "cpp"


@pytest.fixture(scope="module")
def demo_program(pytestconfig, tmp_path_factory) -> Path:
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: the C++ example needs CMake and a C++17 compiler")
    pytest.importorskip("pybind11", reason="pybind11 is not installed: pip install 'onnxcam[cpp]'")
    key = hashlib.sha1(str(SOURCE).encode()).hexdigest()[:12]  # one build folder per checkout
    build = build_folder(pytestconfig, tmp_path_factory, f"onnxcam-cpp-{key}")
    for step in (["cmake", "-S", str(SOURCE), "-B", str(build), f"-DPython_EXECUTABLE={sys.executable}",
                  "-DCMAKE_BUILD_TYPE=Release"],
                 ["cmake", "--build", str(build), "-j2"]):
        done = subprocess.run(step, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return build / "onnxcam_demo"


def _run(program, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), *map(str, args)], capture_output=True, text=True, timeout=300)


def _summary(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_explainer_releases_the_gil_while_onnx_runtime_computes(demo_model):
    """What lets the library's C++ threads overlap: Python code runs while ``explain`` computes."""
    explainer = Explainer(demo_model, provider="cpu", threads=1)
    batch = np.random.default_rng(0).random((256, 3, 64, 64), np.float32)
    explainer.explain(batch[:2])
    ticks, running = [0], [True]

    def count():
        while running[0]:
            ticks[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        time.sleep(0.1)
        before, started = ticks[0], time.perf_counter()
        explainer.explain(batch)
        during, seconds = ticks[0] - before, time.perf_counter() - started
        time.sleep(seconds)
        after = ticks[0] - before - during  # the same time, with this thread asleep
    finally:
        running[0] = False
        counter.join()
    assert during > 0.1 * after, f"the counter advanced {during} during explain, {after} in as long after"


def test_four_threads_give_the_python_api_results(demo_program, demo_model, demo_images, tmp_path):
    done = _run(demo_program, demo_model, *demo_images, "--provider", "cpu", "--out", tmp_path,
                "--threads", 4, "--calls", 100)
    summary = _summary(done)
    assert summary["calls"] == 400 and summary["mismatches"] == 0
    explainer = Explainer(demo_model, provider="cpu")
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == len(demo_images)
    for record, image in zip(records, demo_images):
        expected = explainer.explain(image.read_bytes())
        index = record["index"]
        assert record["target"] == int(expected.target[0])
        assert np.float32(record["score"]) == expected.scores[0]
        heatmap = np.fromfile(tmp_path / f"{index}.heatmap.f32", np.float32).reshape(record["height"], record["width"])
        np.testing.assert_array_equal(heatmap, expected.cam[0])
        png = encode_png(overlay(expected.images[0], expected.cam[0]))
        assert (tmp_path / f"{index}.overlay.png").read_bytes() == png


def test_a_target_is_passed_through(demo_program, demo_model, demo_images, tmp_path):
    _run(demo_program, demo_model, demo_images[0], "--provider", "cpu", "--target", 3, "--out", tmp_path)
    record = json.loads((tmp_path / "results.jsonl").read_text())
    expected = Explainer(demo_model, provider="cpu").explain(demo_images[0].read_bytes(), target=3)
    assert record["target"] == 3 and np.float32(record["score"]) == expected.scores[0]


def test_a_bad_image_raises_onnxcams_one_line_error(demo_program, demo_model, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InputError) as python_error:
        Explainer(demo_model, provider="cpu").explain(bad.read_bytes())
    done = _run(demo_program, demo_model, bad, "--provider", "cpu")
    assert done.returncode == 1  # an onnxcam.OnnxCamError (3 would be a broken Python environment)
    assert done.stderr.splitlines() == [f"Error: {python_error.value}"]


def test_a_missing_model_is_a_user_error(demo_program, demo_images, tmp_path):
    done = _run(demo_program, tmp_path / "nothing.onnx", demo_images[0])
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "nothing.onnx" in done.stderr


def test_memory_stays_flat_over_1000_calls(demo_program, demo_model, demo_images):
    summary = _summary(_run(demo_program, demo_model, demo_images[0], "--provider", "cpu", "--calls", 1000))
    rss = summary["rss_kib"]  # after every 100 calls
    assert len(rss) == 10 and summary["mismatches"] == 0
    growth = rss[-1] - rss[1]  # from call 200 (allocators warmed up) to call 1000
    # one leaked heatmap per call would add 12.8 MB, one leaked overlay PNG ~85 MB
    assert growth < 2048, f"RSS grew by {growth} KiB over 800 calls: {rss}"
