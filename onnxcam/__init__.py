"""onnxcam: Grad-CAM-family heatmaps for deployed ONNX models, computed inside the ONNX graph.

Public API: :class:`Explainer`, :func:`export`, :func:`load_explain_model`, :func:`overlay`,
and the errors in :mod:`onnxcam.errors`.
"""

__version__ = "0.1.0"

from onnxcam.errors import (  # noqa: E402
    InputError,
    LayerError,
    ModelError,
    NotDifferentiableError,
    OnnxCamError,
    OutputError,
    TargetError,
    UnsupportedOpError,
)
from onnxcam.explainer import Explainer, Explanation, load_explain_model  # noqa: E402
from onnxcam.export import ExplainModel, export  # noqa: E402
from onnxcam.render import overlay  # noqa: E402

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
]
