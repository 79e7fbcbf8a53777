"""Embeddings, ``(N, D)`` feature vectors (face recognition, re-identification): similarity to a reference.

The score is the cosine similarity cos(e, r) = ⟨e, r⟩ / (‖e‖·‖r‖) between the sample's
embedding e and a reference r fed as ``target_weights`` (the reference image's embedding, or a
vector): *why does the model think these two are the same?* It is not linear in e, so the seed
is its gradient, r/(‖e‖‖r‖) − cos·e/‖e‖². With no reference fed the weighting is 0 (a zero map).
Detected when the output is L2-normalised in the graph; ``--task embedding`` otherwise.
"""

from __future__ import annotations

from onnxcam.targets.base import Task
from onnxcam.targets.ops import no_index
from onnxcam.targets.score import Seed, SeedContext

_EPSILON = 1e-12
_NORMALISERS = {"LpNormalization", "ReduceL2"}


def weights(ctx: SeedContext) -> Seed:
    """r = the reference embedding fed as target_weights (0 when none)"""
    return Seed(ctx.emit.zeros_like(ctx.s), no_index(ctx))


def cosine(ctx: SeedContext, reference: str) -> tuple[str, str]:
    """(seed, score): the cosine similarity of S and the reference, and its gradient."""
    e, s = ctx.emit, ctx.s
    s_norm = _norm(e, s)
    r_norm = _norm(e, reference)
    both = e.mul(s_norm, r_norm)  # (N, 1)
    similarity = e.div(e.reduce_sum(e.mul(s, reference), [1]), both)  # (N, 1)
    seed = e.sub(e.div(reference, both), e.div(e.mul(similarity, s), e.mul(s_norm, s_norm)))
    return seed, e.squeeze(similarity, [1])


def _norm(e, x: str) -> str:
    return e.op("Sqrt", e.add(e.reduce_sum(e.mul(x, x), [1]), e.scalar(_EPSILON, x)))


def detect(view, score) -> bool:
    """An output divided by its own L2 norm (LpNormalization, or Div by a ReduceL2 / √ΣX²)."""
    if score.rank != 2:
        return False
    node = view.producers.get(score.tensor)
    while node is not None and node.op_type == "Identity":
        node = view.producers.get(node.input[0])
    if node is None:
        return False
    if node.op_type == "LpNormalization":
        return True
    if node.op_type != "Div" or len(node.input) < 2:
        return False
    near = _nearby_ops(view, node.input[1], depth=4)
    return bool(near & _NORMALISERS) or {"Sqrt", "ReduceSum"} <= near or {"Sqrt", "ReduceSumSquare"} <= near


def _nearby_ops(view, tensor: str, depth: int) -> set[str]:
    ops, frontier = set(), [tensor]
    for _ in range(depth):
        nodes = [view.producers[t] for t in frontier if t in view.producers]
        ops.update(n.op_type for n in nodes)
        frontier = [i for n in nodes for i in n.input if i]
    return ops


TASK = Task(
    name="embedding",
    shapes="(N, D)",
    default="cosine similarity to the reference fed as target_weights (none: a zero map)",
    target_means="",
    detect=detect,
    fits_when_asked=lambda view, score: score.rank == 2,
    weights=weights,
    score=cosine,
)
