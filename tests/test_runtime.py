"""Provider choice is tested in test_explainer.py (the CUDA fallback); here, the memory budget and spin waits."""

from onnxcam.runtime import GIB, memory_budget


def test_memory_budget():
    assert memory_budget("cuda") == 2 * GIB
    assert 0 < memory_budget("cpu") <= 4 * GIB


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
