"""Gradient rules: broadcasting arithmetic, unary math, and ops that pass values through."""

import math

from onnxcam.autodiff.registry import RuleContext, register


def _unbroadcast(ctx: RuleContext, grad: str, i: int):
    """The gradient for input ``i`` reduced to its shape, or ``None`` if it needs none."""
    if not ctx.needs[i]:
        return None
    return ctx.emit.unbroadcast(grad, ctx.inputs[i], ctx.outputs[0])


@register("Add")
def add(ctx: RuleContext):
    """dA = dY, dB = dY (each summed over its broadcast axes)"""
    return [_unbroadcast(ctx, ctx.dy, 0), _unbroadcast(ctx, ctx.dy, 1)]


@register("Sub")
def sub(ctx: RuleContext):
    """dA = dY, dB = −dY"""
    e = ctx.emit
    return [_unbroadcast(ctx, ctx.dy, 0), _unbroadcast(ctx, e.neg(ctx.dy), 1) if ctx.needs[1] else None]


@register("Mul")
def mul(ctx: RuleContext):
    """dA = dY·B, dB = dY·A; SiLU, Y = X·S with S = Sigmoid(X): dX = dY·S·(1 + X − Y) at once"""
    e, (a, b) = ctx.emit, ctx.inputs
    silu = silu_input_grad(ctx)
    if silu is not None:
        return [silu[1] if name == silu[0] else None for name in (a, b)]
    return [
        _unbroadcast(ctx, e.mul(ctx.dy, b), 0) if ctx.needs[0] else None,
        _unbroadcast(ctx, e.mul(ctx.dy, a), 1) if ctx.needs[1] else None,
    ]


def silu_input_grad(ctx: RuleContext) -> tuple[str, str] | None:
    """(X, dX) where this Mul is Y = X·S with S = Sigmoid(X) (SiLU, Swish), else ``None``.

    dX = dY·S·(1 + X − Y), the derivative through both of the Mul's inputs: four element-wise ops
    where the Mul's and the Sigmoid's own rules and the Sum of their terms take six (EfficientNet's
    and YOLO's backward passes are mostly these). S then gets no gradient from this Mul, so the
    form is only used where S's own gradient is not asked for.
    """
    a, b = ctx.inputs
    for x, s in ((a, b), (b, a)):
        producer = ctx.view.producers.get(s)
        if producer is not None and producer.op_type == "Sigmoid" and producer.input[0] == x and x != s \
                and s not in ctx.wrt and ctx.needs[ctx.inputs.index(x)]:
            e, y = ctx.emit, ctx.outputs[0]
            slope = e.mul(s, e.add(e.sub(x, y), e.scalar(1.0, y)))
            return x, e.mul(ctx.dy, slope)
    return None


@register("Div")
def div(ctx: RuleContext):
    """dA = dY/B, dB = −dY·Y/B"""
    e, (_, b), y = ctx.emit, ctx.inputs, ctx.outputs[0]
    da = e.div(ctx.dy, b) if ctx.needs[0] else None
    db = e.neg(e.div(e.mul(ctx.dy, y), b)) if ctx.needs[1] else None
    return [_unbroadcast(ctx, da, 0) if da else None, _unbroadcast(ctx, db, 1) if db else None]


@register("Sum")
def sum_(ctx: RuleContext):
    """dXᵢ = dY for every input"""
    return [_unbroadcast(ctx, ctx.dy, i) for i in range(len(ctx.inputs))]


@register("Neg")
def neg(ctx: RuleContext):
    """dX = −dY"""
    return [ctx.emit.neg(ctx.dy)]


@register("Abs")
def abs_(ctx: RuleContext):
    """dX = dY·sign(X)"""
    e = ctx.emit
    return [e.mul(ctx.dy, e.op("Sign", ctx.inputs[0]))]


@register("Pow")
def pow_(ctx: RuleContext):
    """dA = dY·B·A^(B−1), dB = dY·Y·ln A"""
    e, (a, b), y = ctx.emit, ctx.inputs, ctx.outputs[0]
    da = db = None
    if ctx.needs[0]:
        exponent = e.cast_like(b, a) if e.dtype(b) != e.dtype(a) else b
        power = e.op("Pow", a, e.sub(exponent, e.scalar(1.0, exponent)))
        da = _unbroadcast(ctx, e.mul(e.mul(ctx.dy, exponent), power), 0)
    if ctx.needs[1]:
        db = _unbroadcast(ctx, e.mul(e.mul(ctx.dy, y), e.op("Log", a)), 1)
    return [da, db]


@register("Sqrt")
def sqrt(ctx: RuleContext):
    """dX = dY / (2·Y)"""
    e, y = ctx.emit, ctx.outputs[0]
    return [e.div(ctx.dy, e.mul_scalar(y, 2.0))]


@register("Reciprocal")
def reciprocal(ctx: RuleContext):
    """dX = −dY·Y²"""
    e, y = ctx.emit, ctx.outputs[0]
    return [e.neg(e.mul(ctx.dy, e.mul(y, y)))]


@register("Exp")
def exp(ctx: RuleContext):
    """dX = dY·Y"""
    return [ctx.emit.mul(ctx.dy, ctx.outputs[0])]


@register("Log")
def log(ctx: RuleContext):
    """dX = dY / X"""
    return [ctx.emit.div(ctx.dy, ctx.inputs[0])]


@register("Erf")
def erf(ctx: RuleContext):
    """dX = dY·2/√π·exp(−X²)"""
    e, x = ctx.emit, ctx.inputs[0]
    gauss = e.op("Exp", e.neg(e.mul(x, x)))
    return [e.mul(ctx.dy, e.mul_scalar(gauss, 2.0 / math.sqrt(math.pi)))]


@register("Identity")
def identity(ctx: RuleContext):
    """dX = dY"""
    return [ctx.dy]


@register("Dropout")
def dropout(ctx: RuleContext):
    """dX = dY (inference: Dropout is the identity; ratio and training_mode get none)"""
    if ctx.input(2) is not None:
        mode = ctx.const(2)
        if mode is None or bool(mode):
            ctx.fail("training_mode must be a constant false (explanations run in inference mode)")
    return [ctx.dy] + [None] * (len(ctx.inputs) - 1)


@register("Cast")
def cast(ctx: RuleContext):
    """dX = Cast(dY) back to X's float type"""
    e, x = ctx.emit, ctx.inputs[0]
    return [e.cast_like(ctx.dy, x) if e.dtype(x) != e.dtype(ctx.dy) else ctx.dy]


@register("Where")
def where(ctx: RuleContext):
    """dA = dY where C, dB = dY where not C (C gets none)"""
    e, (cond, _, _) = ctx.emit, ctx.inputs
    zero = e.scalar(0.0, ctx.dy)
    da = _unbroadcast(ctx, e.where(cond, ctx.dy, zero), 1) if ctx.needs[1] else None
    db = _unbroadcast(ctx, e.where(cond, zero, ctx.dy), 2) if ctx.needs[2] else None
    return [None, da, db]


@register("Mod")
def mod(ctx: RuleContext):
    """dA = dY, dB = −dY·(A − Y)/B (Y = A − B·q with q the integer quotient, constant almost everywhere)"""
    e, (a, b), y = ctx.emit, ctx.inputs, ctx.outputs[0]
    db = _unbroadcast(ctx, e.neg(e.mul(ctx.dy, e.div(e.sub(a, y), b))), 1) if ctx.needs[1] else None
    return [_unbroadcast(ctx, ctx.dy, 0), db]
