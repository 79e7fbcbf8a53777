"""Outputs: all-or-nothing commits, leftovers of killed runs, file modes, summaries, per-image failures."""

import json
import os
import stat

import pytest

from onnxcam.io import files
from onnxcam.io.files import OutputSet, recover
from tests.reliability.conftest import assert_one_line_error, invoke, records, snapshot


# --- 2. all or nothing ------------------------------------------------------------------------------
def test_2_a_folder_at_an_output_name_is_refused_before_anything_is_written(model_path, images, tmp_path):
    out = tmp_path / "out"
    assert invoke("run", model_path, images, "-o", out).exit_code == 0
    before = snapshot(out)
    os.remove(out / "im1.cam.png")
    (out / "im1.cam.png").mkdir()
    before = snapshot(out)
    assert_one_line_error(invoke("run", model_path, images, "-o", out, "--overwrite"), "folder named im1.cam.png")
    assert snapshot(out) == before and (out / "im1.cam.png").is_dir()


def test_2_overwrite_keeps_unrelated_files_and_swaps_the_set(model_path, images, tmp_path):
    out = tmp_path / "out"
    assert invoke("run", model_path, images, "-o", out, "--target", 0).exit_code == 0
    (out / "notes.txt").write_text("mine")
    assert invoke("run", model_path, images, "-o", out, "--target", 1, "--overwrite").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert {r["target"] for r in records(out)} == {1}
    assert not [p for p in out.parent.iterdir() if ".onnxcam-" in p.name], "staging left beside the folder"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging left inside the folder"


def test_2_with_a_subfolder_in_outdir_files_are_moved_one_by_one(model_path, images, tmp_path):
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    (out / "keep" / "a.txt").write_text("a")
    assert invoke("run", model_path, images, "-o", out).exit_code == 0
    assert (out / "keep" / "a.txt").read_text() == "a" and len(records(out)) == 3


def test_2_leftover_staging_of_dead_runs_is_removed(model_path, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = 2**22 + 12345  # above the usual pid range: no such process
    beside = tmp_path / f".out.onnxcam-{dead}-abc"
    inside = out / f".onnxcam-{dead}-def"
    for folder in (beside, inside):
        folder.mkdir()
        (folder / "half.png").write_bytes(b"x")
    assert invoke("run", model_path, images, "-o", out).exit_code == 0
    assert not beside.exists() and not inside.exists()


def test_2_a_commit_killed_during_its_moves_is_finished_by_the_next_run(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_text("old a")
    (out / "results.jsonl").write_text("old")
    monkeypatch.setattr(files, "_can_exchange", lambda: False)  # the journaled path
    outputs = OutputSet(out, ["a.png", "b.png", "results.jsonl"], overwrite=True)
    for name, text in (("a.png", "new a"), ("b.png", "new b"), ("results.jsonl", "new")):
        outputs.path(name).write_text(text)
    moved = []
    real_replace = os.replace

    def dies_after_one(src, dst):
        if moved:
            raise KeyboardInterrupt  # stands for SIGKILL between two renames
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        outputs.commit()
    monkeypatch.setattr(files.os, "replace", real_replace)
    monkeypatch.setattr(files, "_owner_alive", lambda name: False)  # the run that staged it is dead
    recover(out)
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.png": "new a", "b.png": "new b",
                                                            "results.jsonl": "new"}


# --- 9. output hygiene ------------------------------------------------------------------------------
def test_9_outputs_get_the_usual_mode_under_the_umask(model_path, images, tmp_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "out"
        assert invoke("run", model_path, images, "-o", out).exit_code == 0
    finally:
        os.umask(previous)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {0o644}


def test_9_quiet_hides_the_progress_and_json_summarises(model_path, tmp_path):
    import cv2
    import numpy as np

    many = tmp_path / "many"
    many.mkdir()
    for i in range(6):
        cv2.imwrite(str(many / f"{i}.png"), np.full((8, 8, 3), i * 40, np.uint8))
    quiet = invoke("-q", "run", model_path, many, "-o", tmp_path / "q", "--json")
    assert quiet.exit_code == 0 and "explaining" not in quiet.output
    summary = json.loads(quiet.stdout.strip().splitlines()[-1])
    assert summary["images"] == 6 and summary["explained"] == 6 and summary["failed"] == 0
    assert summary["results"].endswith("results.jsonl") and summary["failures"] == []


# --- 10. per-image failures -------------------------------------------------------------------------
def test_10_one_bad_image_aborts_unless_skip_bad(model_path, images, tmp_path):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    assert_one_line_error(invoke("run", model_path, images, "-o", out), "broken.png")
    assert snapshot(out) == {}
    result = invoke("run", model_path, images, "-o", out, "--skip-bad", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    by_image = {os.path.basename(r["image"]): r for r in records(out)}
    assert by_image["broken.png"]["status"] == "failed" and "cannot decode" in by_image["broken.png"]["error"]
    assert all(by_image[f"im{i}.png"]["status"] == "ok" for i in range(3))
    assert (out / "im0.overlay.png").is_file() and not (out / "broken.overlay.png").exists()
    assert json.loads(result.stdout.strip().splitlines()[-1])["failed"] == 1
