"""The CAM methods, one registry that the exporter, the API, the CLI and the docs all read.

A method's ``build(emit, A, G, ctx)`` turns the target layer's activations A and gradients G
(both NCHW tensors in the graph; G is ``None`` for gradient-free methods) into a raw class
activation map of shape (N, 1, h, w); :mod:`onnxcam.methods.head` then applies the shared ReLU,
normalisation and resize. ``ctx`` (:class:`onnxcam.methods.context.LayerContext`) tells what is
explained — the plan (layer, score) and the target's weighting — for methods that need more of
the model (CAM reads the classifier's weights and the class's one-hot row).

Methods of other kinds:

* ``kind="graph"``: ``build(emit, ctx)`` returns the final (N, H, W) map itself, from a
  :class:`onnxcam.methods.context.GraphContext` (guided backpropagation differentiates down to the image);
* ``kind="runtime"``: several passes, driven by :class:`onnxcam.Explainer` rather than computed
  in one graph; ``build(ctx)`` takes a :class:`onnxcam.methods.multipass.RunContext` and returns the raw
  (N, h, w) maps (``passes`` then says how many model runs, in words).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnxcam.errors import OnnxCamError
from onnxcam.methods import (ablationcam, cam, eigencam, eigengradcam, gradcam, gradcam_elementwise, gradcampp,
                             guided, hirescam, integrated_gradcam, layercam, scorecam, smoothgradcampp, xgradcam)

__all__ = ["Method", "METHODS", "AUTO", "get_method", "method_names", "resolve_method"]

AUTO = "auto"  # the task's default method: Grad-CAM, HiResCAM for detectors, gradient-free without gradients


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    paper: str
    build: Callable  # kind "layer": (emitter, A, G, ctx) -> raw cam (N, 1, h, w); see the module doc for others
    needs_gradients: bool = True
    passes: int | str = 1  # model runs per batch: 1, or in words for multi-pass methods
    kind: str = "layer"  # "layer", "graph" or "runtime"

    @property
    def in_graph(self) -> bool:
        return self.kind != "runtime"

    @property
    def formula(self) -> str:
        return (self.build.__doc__ or "").strip().splitlines()[0]


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("gradcam", "Grad-CAM", "Selvaraju et al., ICCV 2017, arXiv:1610.02391", gradcam.build),
        Method("gradcampp", "Grad-CAM++", "Chattopadhyay et al., WACV 2018, arXiv:1710.11063", gradcampp.build),
        Method("xgradcam", "XGrad-CAM", "Fu et al., BMVC 2020, arXiv:2008.02312", xgradcam.build),
        Method("layercam", "LayerCAM", "Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943", layercam.build),
        Method("hirescam", "HiResCAM", "Draelos & Carin, 2020, arXiv:2011.08891", hirescam.build),
        Method("gradcam-elementwise", "Element-wise Grad-CAM", "variant of Grad-CAM/HiResCAM (pytorch-grad-cam)",
               gradcam_elementwise.build),
        Method("eigencam", "Eigen-CAM", "Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299", eigencam.build,
               needs_gradients=False),
        Method("eigengradcam", "Eigen-Grad-CAM", "Eigen-CAM on G⊙A (Muhammad & Yeasin, arXiv:2008.00299)",
               eigengradcam.build),
        Method("cam", "CAM", "Zhou et al., CVPR 2016, arXiv:1512.04150", cam.build, needs_gradients=False),
        Method("guided-backprop", "Guided backpropagation", "Springenberg et al., ICLR-W 2015, arXiv:1412.6806",
               guided.build_guided_backprop, kind="graph"),
        Method("guided-gradcam", "Guided Grad-CAM", "Selvaraju et al., ICCV 2017, arXiv:1610.02391",
               guided.build_guided_gradcam, kind="graph"),
        Method("ablationcam", "Ablation-CAM", "Desai & Ramaswamy, WACV 2020, doi:10.1109/WACV45572.2020.9093360",
               ablationcam.build, needs_gradients=False, passes="1 + C head passes (C = the layer's channels)",
               kind="runtime"),
        Method("scorecam", "Score-CAM", "Wang et al., CVPR-W 2020, arXiv:1910.01279", scorecam.build,
               needs_gradients=False, passes="1 + C forward passes (K with scorecam_topk)", kind="runtime"),
        Method("smoothgradcampp", "Smooth Grad-CAM++", "Omeiza et al., 2019, arXiv:1908.01224", smoothgradcampp.build,
               passes="1 + n explain passes (n = samples)", kind="runtime"),
        Method("integrated-gradcam", "Integrated Grad-CAM", "Sattarzadeh et al., ICASSP 2021, arXiv:2102.07805",
               integrated_gradcam.build, passes="M explain passes (M = steps)", kind="runtime"),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise OnnxCamError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}") from None


def resolve_method(name: str, task: str, gradients_reach: bool = True, runs_passes: bool = False) -> str:
    """``auto`` → ``hirescam`` for detectors (Grad-CAM's spatially pooled gradients light up every object of
    the box's class; the element-wise map keeps to the box: pointing game 0.97 vs 0.80 on the demo
    detector), else ``gradcam``; any other name as it is.

    Where gradients reach no target layer (an op without a gradient rule on the way), ``auto`` is a
    method that needs none: ``ablationcam`` where the caller runs multi-pass methods (``runs_passes``),
    since it explains the target and its ablations are head passes (2.0 ms/image against Score-CAM's
    29.1 on the demo; scripts/fallback_methods.py on an LSTM recogniser), else ``eigencam``, the one
    in-graph method that needs neither gradients nor a linear classifier (it ignores the target)."""
    if name != AUTO:
        return name
    if not gradients_reach:
        return "ablationcam" if runs_passes else "eigencam"
    return "hirescam" if task == "detection" else "gradcam"


def method_names() -> list[str]:
    return list(METHODS)
