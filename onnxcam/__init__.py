"""onnxcam: Grad-CAM-family heatmaps for deployed ONNX models, computed inside the ONNX graph.

Public API: :class:`Explainer`, :func:`export`, :func:`load_explain_model`, :func:`overlay`,
and the errors in :mod:`onnxcam.errors`. Names are imported on first use, so that ``import
onnxcam`` (and ``onnxcam --version``) loads neither ONNX Runtime nor OpenCV.
"""

from importlib import import_module

from onnxcam.errors import (
    CancelledError,
    InputError,
    LayerError,
    ModelError,
    NotDifferentiableError,
    OnnxCamError,
    OutputError,
    TargetError,
    UnsupportedOpError,
)
from onnxcam.version import __version__

_LAZY = {
    "Explainer": "onnxcam.explainer",
    "Explanation": "onnxcam.explainer",
    "load_explain_model": "onnxcam.explainer",
    "ExplainModel": "onnxcam.exporter",
    "export": "onnxcam.exporter",
    "overlay": "onnxcam.io.render",
}

__all__ = [
    "__version__",
    "Explainer",
    "Explanation",
    "ExplainModel",
    "export",
    "load_explain_model",
    "overlay",
    "OnnxCamError",
    "ModelError",
    "UnsupportedOpError",
    "NotDifferentiableError",
    "LayerError",
    "TargetError",
    "InputError",
    "OutputError",
    "CancelledError",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'onnxcam' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
