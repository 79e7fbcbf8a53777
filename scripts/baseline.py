"""For the benchmark scripts: onnxcam as of another git revision, and Python subprocesses that import a chosen one."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_at(revision: str, workdir: Path) -> Path:
    """A folder holding the ``onnxcam`` package as of git ``revision`` (extracted once), for PYTHONPATH."""
    package = workdir / f"onnxcam-{revision}"
    if not package.exists():
        package.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "onnxcam"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(package)], input=archive.stdout, check=True)
    return package


def python(args: list[str], pythonpath: Path) -> str:
    """The stdout of ``python ARGS`` importing onnxcam from ``pythonpath``.

    It runs from a neutral folder: ``python -c`` and ``-m`` put the working directory first on
    sys.path, where a checkout's own package would shadow the one asked for.
    """
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir())
    return done.stdout
