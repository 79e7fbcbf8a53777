"""What an in-graph method is given besides the activations and gradients.

The exporter builds these; methods read them and never search the exporter's nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnxcam.autodiff.emitter import Emitter
from onnxcam.layers import Layer
from onnxcam.plan import Plan

__all__ = ["LayerContext", "GraphContext"]


@dataclass(frozen=True)
class LayerContext:
    """One target layer, as a ``kind="layer"`` method sees it."""

    plan: Plan
    weights: str  # the target's weighting of the score tensor, batch first (a one-hot row for a class)

    @property
    def layer(self) -> Layer:
        return self.plan.layer


@dataclass
class GraphContext:
    """What a ``kind="graph"`` method sees: the plans, the backward pass's seeds, A and G (NCHW)."""

    plan: Plan
    plans: tuple[Plan, ...]
    seeds: dict[str, str]
    activations: list[str]
    gradients: list[str]
    gradcam: Callable[[], str]  # the finished (fused) Grad-CAM map (N, H, W), built on first call
    emit: Emitter | None = None
