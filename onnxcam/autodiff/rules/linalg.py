"""Gradient rules: matrix products (Gemm, MatMul)."""

from onnxcam.autodiff.registry import RuleContext, register


@register("Gemm")
def gemm(ctx: RuleContext):
    """dA = α·dY·op(B)ᵀ, dB = α·op(A)ᵀ·dY (transposed back where trans is set), dC = β·dY"""
    e, a, b, y = ctx.emit, ctx.inputs[0], ctx.inputs[1], ctx.outputs[0]
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    da = db = dc = None
    # Gemm's C became optional at opset 11; before, pass a zero scalar (broadcast) with β = 0.
    zero = [] if ctx.opset >= 11 else [e.scalar(0.0, ctx.dy)]
    if ctx.needs[0]:  # with op(A) = Aᵀ the product is transposed: dA = α·op(B)·dYᵀ
        da = e.op("Gemm", ctx.dy, b, *zero, alpha=alpha, transB=1 - tb) if not ta else e.op(
            "Gemm", b, ctx.dy, *zero, alpha=alpha, transA=tb, transB=1)
    if ctx.needs[1]:  # likewise dB = α·dYᵀ·op(A) when op(B) = Bᵀ
        db = e.op("Gemm", a, ctx.dy, *zero, alpha=alpha, transA=1 - ta) if not tb else e.op(
            "Gemm", ctx.dy, a, *zero, alpha=alpha, transA=1, transB=ta)
    if ctx.input(2) is not None and ctx.needs[2]:
        dc = e.unbroadcast(e.mul_scalar(ctx.dy, beta), ctx.inputs[2], y)
    return [da, db, dc][: len(ctx.inputs)]


@register("MatMul")
def matmul(ctx: RuleContext):
    """dA = dY·Bᵀ, dB = Aᵀ·dY (1-D operands promoted as in numpy, broadcast batch axes summed)"""
    e, (a, b) = ctx.emit, ctx.inputs
    rank_a, rank_b = ctx.rank(a), ctx.rank(b)
    # Promote 1-D operands to matrices (A: (1, K), B: (K, 1)) and dY to the promoted product's rank.
    a2 = e.unsqueeze(a, [0]) if rank_a == 1 else a
    b2 = e.unsqueeze(b, [1]) if rank_b == 1 else b
    rank = max(rank_a, rank_b, 2)
    dy = e.unsqueeze(ctx.dy, [rank - 2] * (rank_a == 1) + [rank - 1] * (rank_b == 1))
    da = _sum_to(ctx, e.op("MatMul", dy, _swap_last(ctx, b2, max(rank_b, 2))), a, rank) if ctx.needs[0] else None
    db = _sum_to(ctx, e.op("MatMul", _swap_last(ctx, a2, max(rank_a, 2)), dy), b, rank) if ctx.needs[1] else None
    return [da, db]


def _swap_last(ctx: RuleContext, x: str, rank: int) -> str:
    """``x`` with its last two axes swapped."""
    return ctx.emit.transpose(x, [*range(rank - 2), rank - 1, rank - 2])


def _sum_to(ctx: RuleContext, grad: str, operand: str, rank: int) -> str:
    """Sum the batch axes of ``grad`` (of rank ``rank``) that ``operand`` was broadcast along.

    The leading axes ``operand`` lacks are summed, and its batch axes of size 1; its matrix axes
    already match ``grad``'s. A final Reshape restores the operand's shape (dropping promoted axes).
    """
    shape = ctx.shape(operand)
    own = max(len(shape), 2)
    lead = rank - own
    axes = list(range(lead)) + [lead + i for i, dim in enumerate(shape[:-2]) if dim == 1]
    summed = ctx.emit.reduce_sum(grad, axes, keepdims=True)
    return ctx.emit.reshape_like(summed, operand) if axes or len(shape) < 2 else summed
