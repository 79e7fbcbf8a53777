"""scripts/check_cuda.py: a clear exit 2 where CUDA cannot be used, and its comparisons on the CPU."""

import subprocess
import sys
from pathlib import Path

import pytest

from onnxcam.runtime import cuda_problem

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_cuda.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_without_cuda_it_says_why_and_exits_2():
    if cuda_problem() is None:
        pytest.skip("a CUDA driver and execution provider are present")
    result = _run("--models", "demo")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"CUDA is not usable here: {cuda_problem()}"
    assert result.stdout == ""


def test_cpu_mode_compares_the_bound_path_with_plain_runs():
    result = _run("--provider", "cpu", "--models", "demo", "--batches", "1,2", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| demo |")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "2"]
    assert all(row.endswith("| — |") for row in rows)  # no second configuration on the CPU
    assert "all 2 checks within 0.0001" in result.stdout


def test_a_difference_over_the_tolerance_fails_the_check():
    result = _run("--provider", "cpu", "--models", "demo", "--batches", "1", "--repeat", "1", "--tolerance", "-1")
    assert result.returncode == 1
    assert " FAIL |" in result.stdout and "1 of 1 checks differ by more than -1" in result.stderr


def test_an_unknown_model_is_named():
    result = _run("--provider", "cpu", "--models", "nope")
    assert result.returncode != 0 and "unknown model(s) nope" in result.stderr
