"""Provider choice is tested in test_explainer.py (the CUDA fallback); here, the memory budget, the
IO-binding switch, the CUDA provider's options and spin waits."""

import numpy as np
import pytest

from onnxcam.errors import CancelledError, OnnxCamError
from onnxcam.runtime import GIB, _checked_cuda_options, _cuda_provider, make_session, memory_budget


def test_memory_budget():
    assert memory_budget("cuda") == 2 * GIB
    assert 0 < memory_budget("cpu") <= 4 * GIB


def test_io_binding_is_on_for_cuda_by_default_and_on_the_cpu_when_asked(demo_model):
    assert not make_session(str(demo_model), "cpu").io_binding
    assert make_session(str(demo_model), "cpu", io_binding=True).io_binding
    with pytest.raises(OnnxCamError, match="io_binding must be 'auto', True or False"):
        make_session(str(demo_model), "cpu", io_binding="yes")


def test_a_bound_run_can_be_cancelled(demo_model):
    session = make_session(str(demo_model), "cpu", io_binding=True)
    session.cancel()
    with pytest.raises(CancelledError):
        session.run(None, {"image": np.zeros((1, 3, 64, 64), np.float32)})


def test_cuda_options_become_strings_and_bad_ones_are_refused():
    assert _checked_cuda_options({"use_tf32": False, "device_id": 1}) == {"use_tf32": "0", "device_id": "1"}
    assert _checked_cuda_options(None) == {}
    for bad in ("use_tf32=0", {"device_id": [0]}, {1: "x"}):
        with pytest.raises(OnnxCamError, match="cuda_options must map option names"):
            _checked_cuda_options(bad)


def test_cuda_provider_gets_its_own_stream_copies_on_it_and_the_callers_options(monkeypatch):
    class FakeStream:
        handle = 1234

    created = []
    monkeypatch.setattr("onnxcam.runtime.CudaStream.create", lambda: created.append(1) or FakeStream())
    (name, options), stream = _cuda_provider({"use_tf32": "0"})
    assert name == "CUDAExecutionProvider" and isinstance(stream, FakeStream)
    assert options == {"do_copy_in_default_stream": "1", "user_compute_stream": "1234", "use_tf32": "0"}
    (_, options), stream = _cuda_provider({"user_compute_stream": "99", "do_copy_in_default_stream": "0"})
    assert stream is None and len(created) == 1  # the caller's stream: none made
    assert options == {"do_copy_in_default_stream": "0", "user_compute_stream": "99"}


def test_without_a_stream_the_cuda_provider_keeps_its_default(monkeypatch):
    monkeypatch.setattr("onnxcam.runtime.CudaStream.create", lambda: None)
    (_, options), stream = _cuda_provider({})
    assert stream is None and options == {"do_copy_in_default_stream": "1"}


def _spinning_setting(session) -> str | None:
    try:
        return session.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: ONNX Runtime's default, spinning
        return None


def test_sessions_made_inside_spin_waits_false_do_not_spin(demo_model):
    from onnxcam.runtime import make_session, spin_waits

    model = demo_model.read_bytes()
    with spin_waits(False):
        quiet = make_session(model, "cpu", announce=False)
    assert _spinning_setting(quiet) == "0"
    assert _spinning_setting(make_session(model, "cpu", announce=False)) is None  # restored after the block


def test_ort_does_not_print_the_errors_onnxcam_reports(capfd):
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = make_session(model.SerializeToString(), "cpu")
    with pytest.raises(Exception, match="kernel channels"):  # 5 channels into a 3-channel Conv fails in the kernel
        session.run(None, {"x": np.zeros((1, 5, 8, 8), np.float32)})
    assert "onnxruntime" not in capfd.readouterr().err  # ORT logs it at error level to the process's stderr
