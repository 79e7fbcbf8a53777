"""The CAM methods, one registry that the exporter, the API, the CLI and the docs all read.

A method's ``build(emit, A, G, plan)`` turns the target layer's activations A and gradients G
(both NCHW tensors in the graph; G is ``None`` for gradient-free methods) into a raw class
activation map of shape (N, 1, h, w); :mod:`onnxcam.methods.head` then applies the shared ReLU,
normalisation and resize. ``plan`` tells what is explained (layer, score), for methods that
need more of the model (CAM reads the classifier's weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnxcam.autodiff.emitter import Emitter
from onnxcam.errors import OnnxCamError
from onnxcam.methods import gradcam
from onnxcam.plan import Plan

__all__ = ["Method", "METHODS", "get_method", "method_names"]


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    paper: str
    build: Callable[[Emitter, str, str | None, Plan], str]  # (emitter, A, G, plan) -> raw cam (N, 1, h, w)
    needs_gradients: bool = True
    passes: int = 1

    @property
    def formula(self) -> str:
        return (self.build.__doc__ or "").strip().splitlines()[0]


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("gradcam", "Grad-CAM", "Selvaraju et al., ICCV 2017, arXiv:1610.02391", gradcam.build),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise OnnxCamError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}") from None


def method_names() -> list[str]:
    return list(METHODS)
