"""What a task is: how it is recognised and how it builds its default weighting in the graph."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Task"]


@dataclass(frozen=True)
class Task:
    """One kind of output. Adding a task is one module defining a ``Task`` and one registry entry.

    ``weights(ctx)`` returns the default weighting w of the batch-first score tensor (and the
    index explained per sample); the score is Σ w ⊙ S. A task whose score is not linear in S
    (the embedding's cosine similarity) gives ``score(ctx, w)`` → (seed, score) instead.
    """

    name: str
    shapes: str  # the score tensor's shape, for the docs
    default: str  # the default target, in words
    target_means: str  # what the ``target`` input selects ("" when nothing)
    detect: Callable  # (view, ScoreTensor) -> bool: does this output look like the task?
    weights: Callable  # (SeedContext) -> Seed
    score: Callable | None = None  # (SeedContext, w) -> (seed, score (N,)) when not Σ w ⊙ S
    locate: Callable | None = None  # (view, ScoreTensor) -> ScoreTensor: a task-specific S (detectors' logits)
    fits_when_asked: Callable | None = None  # (view, ScoreTensor) -> bool: the outputs it takes when named (--task)

    def fits(self, view, score) -> bool:
        """Whether the task explains ``score`` when the user names it: what it detects, or more."""
        return self.detect(view, score) or (self.fits_when_asked is not None and self.fits_when_asked(view, score))

    @property
    def formula(self) -> str:
        return (self.weights.__doc__ or "").strip().splitlines()[0]
