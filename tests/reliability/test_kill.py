"""Killed and interrupted runs: OUTDIR holds the old complete set or the new complete set, never a mix;
SIGINT/SIGTERM stop a run within seconds, even inside a long ONNX Runtime call."""

import json
import random
import shutil
import signal
import time

import cv2
import numpy as np
import onnx
import pytest

from tests.reliability import models
from tests.reliability.conftest import cli_subprocess, snapshot

IMAGES = 300


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    model = root / "model.onnx"
    onnx.save(models.classifier(), str(model))
    (root / "model.json").write_text(json.dumps({"size": [16, 16], "scale": 1 / 255}))
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        cv2.imwrite(str(images / f"{i:03d}.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    return root, model, images


def _run(model, images, out, *args) -> float:
    started = time.monotonic()
    process = cli_subprocess("run", model, images, "-o", out, "--overwrite", *args)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    return time.monotonic() - started


def _contents(out) -> dict:
    """The output set as a comparable value: file bytes, and results.jsonl without its timings."""
    found = {}
    for name, digest in snapshot(out).items():
        if name == "results.jsonl":
            lines = [json.loads(line) for line in (out / name).read_text().splitlines()]
            found[name] = [{k: v for k, v in r.items() if k != "timings_ms"} for r in lines]
        else:
            found[name] = digest
    return found


def test_sigkill_at_random_points_leaves_the_old_or_the_new_set(workload):
    root, model, images = workload
    old, new = root / "ref_old", root / "ref_new"
    _run(model, images, old, "--target", "0")
    seconds = _run(model, images, new, "--target", "1")
    old_set, new_set = _contents(old), _contents(new)
    assert old_set != new_set and len(old_set) == 2 * IMAGES + 1
    rng = random.Random(0)
    outcomes = []
    for trial in range(10):
        out = root / f"out{trial}"
        shutil.copytree(old, out)
        process = cli_subprocess("run", model, images, "-o", out, "--overwrite", "--target", "1")
        time.sleep(rng.uniform(0.3, 1.1) * seconds)  # from start-up to past the end
        process.kill()
        process.wait()
        now = _contents(out)
        assert now in (old_set, new_set), f"trial {trial}: a mixed set after SIGKILL"
        outcomes.append("new" if now == new_set else "old")
        _run(model, images, out, "--target", "1")  # the next run cleans what the killed one left
        assert _contents(out) == new_set
        leftovers = [p.name for p in [*out.iterdir(), *root.iterdir()] if ".onnxcam-" in p.name]
        assert not leftovers, leftovers
    assert "old" in outcomes, outcomes  # some kills landed before the commit


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_a_long_onnxruntime_call(tmp_path, sig):
    model = tmp_path / "slow.onnx"
    onnx.save(models.classifier(loop_iterations=200_000_000), str(model))  # minutes of Loop per image
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((16, 16, 3), np.uint8))
    out = tmp_path / "out"
    process = cli_subprocess("run", model, images, "-o", out, "--preset", "unit")
    time.sleep(4.0)  # past start-up and export, inside ONNX Runtime's Loop
    assert process.poll() is None, process.communicate()[1].decode()
    sent = time.monotonic()
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - sent < 3.0
    assert process.returncode == 128 + sig
    lines = [line for line in err.decode().splitlines() if line.startswith("Error:")]
    assert lines == [f"Error: interrupted by {signal.Signals(sig).name}; nothing was written"], err.decode()
    assert "Traceback" not in err.decode()
    assert snapshot(out) == {} and not [p for p in tmp_path.iterdir() if ".onnxcam-" in p.name]


def test_a_signal_during_the_commit_waits_for_it():
    """The commit is not cut short: a signal inside it is recorded and acted on after."""
    import os

    from onnxcam.commands import signals_recorded

    with signals_recorded() as received:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes: no KeyboardInterrupt here
        done = True
    assert done and received == [signal.SIGINT]
