"""Ops through which no gradient flows: shape computations, integer and boolean logic, indices."""

from onnxcam.autodiff.registry import register_zero

register_zero(
    "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "OneHot", "Range", "EyeLike",
    "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor",
    "IsNaN", "IsInf", "Sign", "Floor", "Ceil", "Round",
    "Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
)
