"""onnxcam.integrations.ray on a local Ray instance (2 CPUs): the same outputs as ``onnxcam run``,
and a job that loses a worker, then its driver, resumes without redoing finished images.

Skipped where Ray is not installed (pip install 'onnxcam[ray]'). About 30 s: Ray and its actors
take seconds to start.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'onnxcam[ray]'")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from onnxcam.cli import cli  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
import shapes_data  # noqa: E402

IMAGES = 200


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """200 demo-style images, at 256x256 so that a job lasts long enough to be interrupted."""
    folder = tmp_path_factory.mktemp("ray-images")
    images, _, _ = shapes_data.evaluation_batch(IMAGES)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"shape{i:03d}.png"), cv2.resize(image, (256, 256), interpolation=cv2.INTER_NEAREST))
    return folder


def _run(*args):
    done = CliRunner().invoke(cli, ["-q", "run", *map(str, args), "--provider", "cpu"])
    assert done.exit_code == 0, done.output
    return done


@pytest.fixture(scope="module")
def local_out(demo_model, image_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    _run(demo_model, image_folder, "-o", out)
    return out


def _records(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "timings_ms"}
            for line in (out / "results.jsonl").read_text().splitlines()]


def _assert_same_outputs(out: Path, local: Path) -> None:
    assert _records(out) == _records(local)
    pictures = sorted(p.name for p in local.glob("*.png"))
    assert sorted(p.name for p in out.glob("*.png")) == pictures and len(pictures) == 2 * IMAGES
    for name in pictures:  # the same pixels (compact PNGs of the same pixels have differed by a few bytes)
        ours, theirs = (cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED) for folder in (out, local))
        assert ours is not None and np.array_equal(ours, theirs), name
    assert not list(out.rglob("*.tmp"))


def test_ray_writes_what_onnxcam_run_writes(demo_model, image_folder, local_out, ray_address, tmp_path):
    _run(demo_model, image_folder, "-o", tmp_path, "--engine", "ray", "--address", ray_address, "--workers", 2)
    _assert_same_outputs(tmp_path, local_out)
    assert len(list((tmp_path / "results").glob("part-*.jsonl"))) == IMAGES // 8  # one per batch of 8


def test_ray_honours_no_overlay(demo_model, demo_images, ray_address, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    _run(demo_model, *demo_images, "-o", local, "--no-overlay")
    _run(demo_model, *demo_images, "-o", remote, "--no-overlay", "--engine", "ray", "--address", ray_address)
    assert _records(remote) == _records(local) and not any("overlay" in r for r in _records(remote))
    pictures = sorted(p.name for p in local.glob("*.png"))
    assert sorted(p.name for p in remote.glob("*.png")) == pictures == sorted(f"{p.stem}.cam.png" for p in demo_images)


def test_a_bad_image_stops_the_job_with_onnxcams_one_line_error(demo_model, demo_images, ray_address, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for image in demo_images[:4]:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "zz-broken.png").write_bytes(b"not an image")
    done = CliRunner().invoke(cli, ["-q", "run", str(demo_model), str(folder), "-o", str(tmp_path / "out"),
                                    "--provider", "cpu", "--engine", "ray", "--batch-size", "2"])
    assert done.exit_code == 1 and done.exception.__class__ is SystemExit
    assert done.output.strip().splitlines() == [f"Error: cannot decode image '{folder / 'zz-broken.png'}': not an "
                                                "image OpenCV reads (PNG, JPEG, BMP, TIFF, WebP, ...)"]
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_an_address_with_no_cluster_is_a_one_line_error(demo_model, demo_images, tmp_path):
    done = subprocess.run([sys.executable, "-m", "onnxcam", "-q", "run", str(demo_model), str(demo_images[0]), "-o",
                           str(tmp_path / "out"), "--engine", "ray", "--address", "no-such-address"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    ours = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(ours) == 1 and "cannot join a Ray cluster at 'no-such-address'" in ours[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_ray_options_without_the_ray_engine_are_refused(demo_model, demo_images, tmp_path):
    done = CliRunner().invoke(cli, ["run", str(demo_model), str(demo_images[0]), "-o", str(tmp_path), "--workers", "2"])
    assert done.exit_code == 1 and "add --engine ray" in done.output and not list(tmp_path.iterdir())


def _parts(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "results").glob("part-*.jsonl")}


def _wait_for_parts(out: Path, count: int, driver: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while len(_parts(out)) < count:
        assert driver.poll() is None, f"the job ended before {count} batches were done: {driver.stderr.read()}"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.005)


def _actor_pids() -> list[int]:
    """This test's Ray actors: processes below this one (the Ray instance it started) running the explainer."""
    parents, titles = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue

    def ours(pid):
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, title in titles.items() if "_ExplainBatches" in title and ours(pid)]


def test_a_job_that_loses_a_worker_then_its_driver_resumes(demo_model, image_folder, local_out, ray_address, tmp_path):
    command = [sys.executable, "-m", "onnxcam", "-q", "run", str(demo_model), str(image_folder), "-o", str(tmp_path),
               "--provider", "cpu", "--engine", "ray", "--address", ray_address, "--workers", "2",
               "--batch-size", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_parts(tmp_path, 5, driver)
        os.kill(_actor_pids()[0], signal.SIGKILL)  # Ray restarts the actor and retries its batch
        killed_at = len(_parts(tmp_path))
        _wait_for_parts(tmp_path, killed_at + 20, driver)  # the job goes on
        driver.kill()
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    before = _parts(tmp_path)
    assert len(before) < IMAGES // 2, "the job finished before its driver was killed"
    parts = [(tmp_path / "results" / name).read_text() for name in before]
    done = [json.loads(line)["image"] for text in parts for line in text.splitlines()]
    pictures = {p: p.stat().st_ino for stem in (Path(i).stem for i in done) for p in tmp_path.glob(f"{stem}.*.png")}

    _run(demo_model, image_folder, "-o", tmp_path, "--engine", "ray", "--address", ray_address, "--batch-size", 2)
    after = _parts(tmp_path)
    assert {name: after[name] for name in before} == before  # the finished batches were not redone
    assert {p: p.stat().st_ino for p in pictures} == pictures  # nor their images' files rewritten
    assert len(after) == IMAGES // 2
    _assert_same_outputs(tmp_path, local_out)
