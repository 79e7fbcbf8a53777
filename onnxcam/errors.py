"""Every failure a user can cause is an ``OnnxCamError``; the CLI prints its message on one line.

Messages name the problem and what to do about it.
"""

__all__ = [
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


class OnnxCamError(Exception):
    """Base class of all onnxcam errors that a user can cause and fix."""


class ModelError(OnnxCamError):
    """The model cannot be read, is invalid, or lacks something onnxcam needs (say, a static shape)."""


class UnsupportedOpError(OnnxCamError):
    """The gradient path goes through an op that has no gradient rule."""


class NotDifferentiableError(OnnxCamError):
    """The score does not depend on the tensor it is differentiated with respect to."""


class LayerError(OnnxCamError):
    """The target layer is unknown or unusable (no spatial extent, not on the score's path)."""


class TargetError(OnnxCamError):
    """A target class index is out of range or malformed."""


class InputError(OnnxCamError):
    """An input image or array cannot be read or does not fit the model."""


class OutputError(OnnxCamError):
    """Outputs cannot be written (folder not writable, files exist and overwriting was not asked)."""


class CancelledError(OnnxCamError):
    """The run was cancelled (``Explainer.cancel()``, or SIGINT/SIGTERM on the command line)."""
