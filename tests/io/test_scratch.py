"""Temporary folders that a process leaves behind when it dies are removed by the next one made;
the folders of live processes, and folders without a lock file, are kept."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from onnxcam.io import scratch
from onnxcam.io.scratch import ScratchFolder, remove_abandoned_folders

PREFIX = "onnxcam-test-scratch-"

MAKE_THEN_WAIT = f"""
import os, sys
from onnxcam.io.scratch import ScratchFolder
folder = ScratchFolder({PREFIX!r})
(folder.path / "data").write_bytes(b"x" * 1000)
print(folder.path, flush=True)
sys.stdin.readline()  # until told
os._exit(0)  # as a killed worker would: no finalisers run, so the folder stays
"""

pytestmark = pytest.mark.skipif(scratch.fcntl is None, reason="no flock on this platform")


def _holder(parent: Path) -> tuple[subprocess.Popen, Path]:
    """A process holding a scratch folder in ``parent``, and the folder."""
    child = subprocess.Popen([sys.executable, "-c", MAKE_THEN_WAIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "TMPDIR": str(parent)})
    return child, Path(child.stdout.readline().strip())


@pytest.fixture
def parent(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile caches $TMPDIR once
    return tmp_path


def test_folders_of_processes_that_died_are_removed_and_those_of_live_ones_kept(parent):
    dead, dead_folder = _holder(parent)
    live, live_folder = _holder(parent)
    dead.communicate("\n", timeout=60)
    assert dead_folder.is_dir() and live_folder.is_dir()  # os._exit left it behind
    without_lock = parent / f"{PREFIX}without-lock"  # being made, or from before the locks
    without_lock.mkdir()
    other = parent / "onnxcam-other-abandoned"
    other.mkdir()
    (other / scratch.LOCK_FILE).touch()  # abandoned, but not this prefix's
    try:
        mine = ScratchFolder(PREFIX)
        assert not dead_folder.exists()
        assert (live_folder / "data").is_file() and without_lock.is_dir() and other.is_dir()
        assert remove_abandoned_folders(PREFIX) == 0  # this process's own folder is locked too
    finally:
        live.communicate("\n", timeout=60)
    assert remove_abandoned_folders(PREFIX) == 1 and not live_folder.exists()
    mine.cleanup()
    assert not mine.path.exists()


def test_a_link_named_like_a_folder_is_not_followed_nor_counted(parent, tmp_path_factory):
    """A link in a shared temporary folder to an abandoned folder elsewhere: its lock was taken, the removal
    failed on the link, and the folder was counted as removed, on every explainer made."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / scratch.LOCK_FILE).touch()
    (parent / f"{PREFIX}link").symlink_to(elsewhere, target_is_directory=True)
    assert remove_abandoned_folders(PREFIX) == 0
    assert (elsewhere / scratch.LOCK_FILE).is_file() and (parent / f"{PREFIX}link").is_symlink()


def test_a_folder_goes_with_its_object(parent):
    folder = ScratchFolder(PREFIX)
    path = folder.path
    assert sorted(p.name for p in path.iterdir()) == [scratch.LOCK_FILE]
    del folder
    assert not path.exists()
