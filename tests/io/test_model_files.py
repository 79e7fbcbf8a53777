"""Models with external data: an explain model keeps its weights beside itself, never in the
input's folder, and one over 2 GB is written with external data without being asked.

The real >2 GB case writes and reads ~5 GB: it runs only with ONNXCAM_LARGE_TESTS=1.
"""

import hashlib
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxcam import Explainer, export
from onnxcam.cli import cli
from onnxcam.io import model_files
from tests import nets

INPUT = (1, 3, 32, 32)


def _image() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, INPUT).astype(np.float32)


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    module, _ = nets.vgg()
    return nets.export_onnx(module, torch.randn(*INPUT))


@pytest.fixture
def external_model(float_model, tmp_path):
    """The model saved as model.onnx + model.onnx.data in its own folder; returns (path, folder digest)."""
    folder = tmp_path / "source"
    folder.mkdir()
    copy = onnx.ModelProto()
    copy.CopyFrom(float_model)  # onnx.save moves the weights of the proto it writes out of it
    onnx.save(copy, folder / "model.onnx", save_as_external_data=True, location="model.onnx.data")
    return folder / "model.onnx", _digest(folder)


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _cam(path) -> np.ndarray:
    """The explain model at ``path`` run by ONNX Runtime from the file (so its data file is read)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["cam"], {"input": _image()})[0]


def test_export_writes_the_data_beside_the_output(external_model, float_model, tmp_path):
    source, before = external_model
    out = tmp_path / "out" / "model.cam.onnx"
    for _ in range(2):  # the second export replaces the first pair
        result = CliRunner().invoke(cli, ["-q", "export", str(source), "-o", str(out), "--overwrite"])
        assert result.exit_code == 0, result.output
    data = sorted(p.name for p in out.parent.iterdir() if p.name != out.name)
    assert len(data) == 1 and data[0].startswith("model.cam.onnx.") and data[0].endswith(".data"), data
    assert _digest(source.parent) == before  # the input's folder is untouched: nothing appended, nothing added
    graph = onnx.load(str(out), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in graph.graph.initializer)
    expected = ort.InferenceSession(export(float_model).model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(_cam(out), expected.run(["cam"], {"input": _image()})[0], atol=1e-6)


def test_run_explains_an_external_data_model(external_model, tmp_path, demo_images):
    source, before = external_model
    result = CliRunner().invoke(cli, ["-q", "run", str(source), str(demo_images[0]), "-o", str(tmp_path / "run"),
                                      "--preset", "unit", "--size", "32x32"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "results.jsonl").is_file()
    assert _digest(source.parent) == before


def test_model_too_large_for_one_protobuf_gets_external_data(float_model, tmp_path, monkeypatch):
    explain = export(float_model)  # its source kept the weights inside
    monkeypatch.setattr(model_files, "INLINE_LIMIT", 1 << 16)  # this explain model now counts as over the limit
    path = explain.save(tmp_path / "big.cam.onnx")
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".data"]
    np.testing.assert_allclose(_cam(path), Explainer(explain.model, provider="cpu")._session.run(
        ["cam"], {"input": _image()})[0], atol=1e-6)  # the Explainer's session came through a temporary pair too


def _large_model() -> onnx.ModelProto:
    """Conv → ReLU → GAP → Gemm, plus three 0.8 GB initializers (one protobuf message cannot hold a
    tensor over 2 GB either) whose means are added to the logits."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]), helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"])]
    for k in range(3):
        weights.append(numpy_helper.from_array(np.full(200_000_000, 1e-3, np.float32), f"big{k}"))
        nodes.append(helper.make_node("ReduceMean", [f"big{k}"], [f"offset{k}"], keepdims=0))
    nodes += [helper.make_node("Sum", ["offset0", "offset1", "offset2"], ["offset"]),
              helper.make_node("Gemm", ["flat", "fc", "offset"], ["logits"])]
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5])], initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.skipif(os.environ.get("ONNXCAM_LARGE_TESTS") != "1", reason="writes ~5 GB; set ONNXCAM_LARGE_TESTS=1")
def test_model_over_2_gb_exports_and_runs(tmp_path, demo_images):
    source = tmp_path / "source" / "large.onnx"
    source.parent.mkdir()
    onnx.save(_large_model(), source, save_as_external_data=True, location="large.onnx.data")
    out = tmp_path / "out" / "large.cam.onnx"
    result = CliRunner().invoke(cli, ["-q", "export", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sum(p.stat().st_size for p in out.parent.iterdir()) > 2**31
    assert _cam(out).shape == (1, 32, 32)
    result = CliRunner().invoke(cli, ["-q", "run", str(source), str(demo_images[0]), "-o", str(tmp_path / "run"),
                                      "--preset", "unit", "--size", "32x32"])
    assert result.exit_code == 0, result.output
