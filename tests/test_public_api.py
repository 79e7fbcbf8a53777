"""The public API changes only on purpose: update this list when it does."""

import onnxcam


def test_public_names():
    assert sorted(onnxcam.__all__) == sorted([
        "__version__", "Explainer", "Explanation", "ExplainModel", "export", "load_explain_model", "overlay",
        "OnnxCamError", "ModelError", "UnsupportedOpError", "NotDifferentiableError", "LayerError", "TargetError",
        "InputError", "OutputError", "CancelledError",
    ])
    for name in onnxcam.__all__:
        assert hasattr(onnxcam, name), name


def test_errors_share_one_base():
    for name in ("ModelError", "UnsupportedOpError", "NotDifferentiableError", "LayerError", "TargetError",
                 "InputError", "OutputError", "CancelledError"):
        assert issubclass(getattr(onnxcam, name), onnxcam.OnnxCamError)
