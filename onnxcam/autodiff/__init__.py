"""Reverse-mode autodiff of ONNX graphs that emits standard ONNX ops only.

``backward(model, seeds, wrt)`` appends the backward pass of the nodes between ``wrt`` and the
seeded tensors; rules live in ``onnxcam.autodiff.rules``, one small function per op type.
"""

from onnxcam.autodiff.engine import Gradients, backward, emit_backward
from onnxcam.autodiff.registry import RULES, ZERO_OPS, carries_gradient, lookup

__all__ = ["backward", "emit_backward", "Gradients", "RULES", "ZERO_OPS", "carries_gradient", "lookup", "supported_ops_markdown"]


def supported_ops_markdown() -> str:
    """The table of differentiable and non-differentiable ops, as the README shows it."""
    lines = ["| op | from opset | gradient |", "|---|---|---|"]
    for op_type in sorted(RULES):
        for rule in RULES[op_type]:
            lines.append(f"| {op_type} | {rule.since} | {rule.doc} |")
    lines.append("")
    lines.append("Non-differentiable (gradient paths are cut here): " + ", ".join(sorted(ZERO_OPS)) + ".")
    return "\n".join(lines)
