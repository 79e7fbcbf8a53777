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


@register("Einsum", since=12)
def einsum(ctx: RuleContext):
    """dXᵢ = Einsum(dY, the other operands) back to Xᵢ's subscripts; indices only Xᵢ has are broadcast"""
    e = ctx.emit
    terms, output = _einsum_terms(ctx)
    grads = []
    for i, (operand, subscripts) in enumerate(zip(ctx.inputs, terms)):
        if not ctx.needs[i]:
            grads.append(None)
            continue
        if len(set(subscripts)) != len(subscripts):
            ctx.fail(f"operand {i}'s subscripts '{subscripts}' repeat an index (a diagonal)")
        others = [(name, term) for j, (name, term) in enumerate(zip(ctx.inputs, terms)) if j != i]
        present = set(output).union(*(set(term) for _, term in others))
        kept = "".join(c for c in subscripts if c in present)
        if kept:
            equation = ",".join([output, *[term for _, term in others]]) + "->" + kept
            grad = e.op("Einsum", ctx.dy, *[name for name, _ in others], equation=equation, dtype_of=ctx.dy)
        else:
            grad = ctx.dy
        missing = [axis for axis, c in enumerate(subscripts) if c not in present]
        if missing:  # indices summed inside this operand alone: their gradient is the same along them
            grad = e.expand_like(e.unsqueeze(grad, missing) if kept else e.reshape(grad, e.ints([1] * len(subscripts))),
                                 operand)
        grads.append(_unbroadcast_einsum(ctx, grad, operand, subscripts, terms, output))
    return grads


def _unbroadcast_einsum(ctx: RuleContext, grad: str, operand: str, subscripts: str, terms, output) -> str:
    """Sum the axes where ``operand`` has size 1 but the index is larger elsewhere (broadcast ellipsis dims)."""
    shape = ctx.shape(operand)
    sizes = {}
    for name, term in zip(ctx.inputs, terms):
        for c, d in zip(term, ctx.shape(name) or ()):
            if d is not None and d != 1:
                sizes[c] = d
    axes = [a for a, (c, d) in enumerate(zip(subscripts, shape or ())) if d == 1 and sizes.get(c, 1) != 1]
    return ctx.emit.reduce_sum(grad, axes, keepdims=True) if axes else grad


def _einsum_terms(ctx: RuleContext) -> tuple[list[str], str]:
    """The operands' and the output's subscripts, with '...' spelled out as letters of their own."""
    equation = ctx.attr("equation").replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    used = set(equation) - set(".,->")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in used]
    widths = [ctx.rank(name) - (len(term) - 3) if "..." in term else 0 for name, term in zip(ctx.inputs, terms)]
    ellipsis = "".join(spare[:max(widths, default=0)])
    terms = [term.replace("...", ellipsis[len(ellipsis) - w:] if w else "") for term, w in zip(terms, widths)]
    if not arrow:  # implicit output: the indices that appear once, sorted, after the ellipsis ones
        letters = "".join(terms)
        output = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ellipsis))
    else:
        output = output.replace("...", ellipsis)
    return terms, output
