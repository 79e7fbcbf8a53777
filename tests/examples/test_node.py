"""examples/node: the explain model run from Node.js by onnxruntime-node, with no Python, gives the
Python session's numbers.

``npm install`` runs once into pytest's cache (CPU binaries only: ONNXRUNTIME_NODE_INSTALL=skip
stops its post-install download of the CUDA provider). Skipped where node or npm is missing, or
where the npm registry cannot be reached.
"""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxcam import Explainer
from onnxcam.cli import cli
from tests.conftest import ROOT
from tests.examples.build_folders import build_folder

EXAMPLE = ROOT / "examples" / "node"
_OFFLINE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH", "network")


@pytest.fixture(scope="module")
def node_modules(pytestconfig, tmp_path_factory) -> Path:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: the Node.js example needs Node.js and npm")
    manifest = (EXAMPLE / "package.json").read_bytes()
    folder = build_folder(pytestconfig, tmp_path_factory, f"onnxcam-node-{hashlib.sha1(manifest).hexdigest()[:12]}")
    if not (folder / "node_modules" / "onnxruntime-node").is_dir():
        shutil.copy(EXAMPLE / "package.json", folder)
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=folder, capture_output=True,
                              text=True, timeout=600, env={**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"})
        if done.returncode != 0 and any(word in done.stderr for word in _OFFLINE):
            pytest.skip(f"npm cannot reach its registry: {done.stderr.strip().splitlines()[-1]}")
        assert done.returncode == 0, done.stderr[-3000:]
    return folder / "node_modules"


@pytest.fixture(scope="module")
def explain_model(demo_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("node") / "shapes.cam.onnx"
    done = CliRunner().invoke(cli, ["-q", "export", str(demo_model), "-o", str(out), "--target-inputs", "required"])
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture(scope="module")
def batch_file(demo_model, demo_images, tmp_path_factory) -> Path:
    """The demo images pre-processed by onnxcam (the model's sidecar), saved for JavaScript to read."""
    batch, _ = Explainer(demo_model, provider="cpu").prepare(demo_images)
    path = tmp_path_factory.mktemp("node") / "batch.npy"
    np.save(path, batch)
    return path


def _node(node_modules, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(EXAMPLE / "explain.js"), *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NODE_PATH": str(node_modules)})


WEIGHTS = np.array([[0, 1, -1, 0], [np.nan] * 4, [1, 0, 0, 0], [0, 0, 0.5, 0.5], [np.nan, 1, np.nan, 0], [0, 0, 0, 1]],
                   np.float32)  # one row per demo image; NaN = the default there
CASES = {"default": ([-1], None), "one target": ([2], None), "a target each": ([1, 0, 2, 3, -1, 0], None),
         "target_weights": ([-1], WEIGHTS)}


@pytest.mark.parametrize("case", list(CASES))
def test_node_outputs_equal_the_python_session(case, node_modules, explain_model, batch_file, tmp_path):
    targets, weights = CASES[case]
    args = ["--out", tmp_path, "--target", ",".join(map(str, targets))]
    if weights is not None:
        np.save(tmp_path / "weights.npy", weights)
        args += ["--target-weights", tmp_path / "weights.npy"]
    done = _node(node_modules, explain_model, batch_file, *args)
    assert done.returncode == 0, done.stderr
    session = ort.InferenceSession(str(explain_model), providers=["CPUExecutionProvider"])
    feeds = {"image": np.load(batch_file), "target": np.array(targets, np.int64),
             "target_weights": np.full((1, 1), np.nan, np.float32) if weights is None else weights}
    names = ["logits", "cam", "cam_target", "cam_score"]
    expected = dict(zip(names, session.run(names, feeds)))
    for name in ("logits", "cam", "cam_score"):
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), expected[name], rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(np.load(tmp_path / "cam_target.npy"), expected["cam_target"])  # targets arrived
    assert json.loads(done.stdout)["cam_target"] == expected["cam_target"].tolist()


def test_optional_target_inputs_are_refused_with_the_fix(node_modules, demo_model, batch_file, tmp_path):
    optional = tmp_path / "optional.cam.onnx"
    assert CliRunner().invoke(cli, ["-q", "export", str(demo_model), "-o", str(optional)]).exit_code == 0
    done = _node(node_modules, optional, batch_file)
    assert done.returncode == 1
    ours = [line for line in done.stderr.splitlines() if "onnxruntime:" not in line]  # not ORT's own warnings
    assert len(ours) == 1 and ours[0].startswith("Error: ") and "--target-inputs required" in ours[0]
