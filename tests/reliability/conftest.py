"""Shared pieces of the reliability suite: the CLI in-process and as a subprocess, file snapshots."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxcam.cli import cli
from tests.reliability import models

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """name → sha256 of every file below ``folder`` (hidden ones included)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_subprocess(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "onnxcam", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT, **kwargs)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture()
def model_path(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(models.classifier(), str(path))
    (tmp_path / "model.json").write_text(json.dumps({"size": [16, 16], "scale": 1 / 255, "mean": [0.5, 0.5, 0.5],
                                                     "std": [0.5, 0.5, 0.5]}))
    return path


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    return folder
