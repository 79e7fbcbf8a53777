"""Finite-difference cases for onnxcam/autodiff/rules/linalg.py."""

import numpy as np

from tests.autodiff.harness import C, Case, X

F = np.float32
_rng = np.random.default_rng(7)


def _const(*shape):
    return C(_rng.uniform(-1.0, 1.0, size=shape).astype(F))


def _gemm_operands(trans_a, trans_b, m=3, k=4, n=5):
    return (m, k)[:: -1 if trans_a else 1], (k, n)[:: -1 if trans_b else 1]


CASES = []
# All four transpose combinations, every input differentiable, α and β ≠ 1, C of shape (N,).
for _ta in (0, 1):
    for _tb in (0, 1):
        _a, _b = _gemm_operands(_ta, _tb)
        CASES.append(Case("Gemm", [X(_a), X(_b), X((5,))], attrs=dict(transA=_ta, transB=_tb, alpha=0.7, beta=1.3),
                          id=f"tA{_ta}-tB{_tb}", opsets=(9, 11, 13)))

CASES += [
    # The CNN head: Flatten output × constant weights (transB=1, as exporters write it) + bias.
    Case("Gemm", [X((2, 6)), _const(4, 6), _const(4)], attrs=dict(transB=1), id="head-const-weights",
         opsets=(11, 13)),
    Case("Gemm", [X((3, 4)), X((4, 5)), X((1, 5))], attrs=dict(beta=0.5), id="C-1xN"),
    Case("Gemm", [X((3, 4)), X((4, 5)), X((3, 5))], attrs=dict(alpha=2.0, beta=-0.5), id="C-MxN", opsets=(11, 13)),
    Case("Gemm", [X((3, 4)), X((4, 5)), X((3, 1))], id="C-Mx1"),
    Case("Gemm", [X((3, 4)), X((4, 5)), X(())], attrs=dict(beta=2.0), id="C-scalar"),
    Case("Gemm", [X((3, 4)), X((4, 5))], attrs=dict(alpha=0.5), id="no-C", opsets=(11, 13)),
    Case("Gemm", [X((3, 4)), X((5, 4)), C(None)], attrs=dict(transB=1), id="omitted-C", opsets=(11, 13)),
    Case("MatMul", [X((3, 4)), X((4, 5))], id="2d", opsets=(11, 13)),
    Case("MatMul", [X((3, 4)), _const(4, 5)], id="2d-const"),
    Case("MatMul", [X((2, 3, 4)), X((2, 4, 5))], id="batched", opsets=(11, 13)),
    Case("MatMul", [X((2, 3, 4, 5)), X((5, 6))], id="broadcast-rhs-2d", opsets=(11, 13)),
    Case("MatMul", [X((4, 5)), X((2, 3, 5, 6))], id="broadcast-lhs-2d"),
    Case("MatMul", [X((1, 3, 4, 5)), X((2, 1, 5, 6))], id="broadcast-both", opsets=(11, 13)),
    Case("MatMul", [X((3, 4, 5)), X((2, 1, 5, 6))], id="broadcast-rank"),
    Case("MatMul", [X((4,)), X((4, 5))], id="1d-2d", opsets=(11, 13)),
    Case("MatMul", [X((3, 4)), X((4,))], id="2d-1d", opsets=(11, 13)),
    Case("MatMul", [X((4,)), X((2, 3, 4, 5))], id="1d-4d"),
    Case("MatMul", [X((2, 3, 4, 5)), X((5,))], id="4d-1d"),
    Case("MatMul", [X((4,)), X((4,))], id="1d-1d", opsets=(11, 13)),
    Case("MatMul", [X((3, 1)), X((1, 4))], id="outer"),
]

# Einsum: attention's products, linear layers, transposes, reductions, ellipsis and implicit outputs.
_EINSUM_OPSETS = (12, 13, 17)
CASES += [
    Case("Einsum", [X((2, 2, 3, 4)), X((2, 2, 5, 4))], attrs=dict(equation="bhid,bhjd->bhij"), id="attention-scores",
         opsets=_EINSUM_OPSETS),
    Case("Einsum", [X((2, 2, 3, 5)), X((2, 2, 5, 4))], attrs=dict(equation="bhij,bhjd->bhid"), id="attention-values",
         opsets=_EINSUM_OPSETS),
    Case("Einsum", [X((2, 3, 4)), _const(4, 5)], attrs=dict(equation="bnd,de->bne"), id="linear"),
    Case("Einsum", [X((3, 4)), X((4, 5))], attrs=dict(equation="ij,jk"), id="implicit-matmul"),
    Case("Einsum", [X((3, 4))], attrs=dict(equation="ij->ji"), id="transpose"),
    Case("Einsum", [X((2, 3, 4))], attrs=dict(equation="bij->bj"), id="sum-one-axis"),
    Case("Einsum", [X((3, 4)), X((4,))], attrs=dict(equation="ij,j->i"), id="matrix-vector"),
    Case("Einsum", [X((4,)), X((4,))], attrs=dict(equation="i,i->"), id="dot"),
    Case("Einsum", [X((3, 4)), X((5,))], attrs=dict(equation="ij,k->ijk"), id="outer-product"),
    Case("Einsum", [X((2, 3, 4)), X((4, 5))], attrs=dict(equation="...ij,jk->...ik"), id="ellipsis"),
    Case("Einsum", [X((1, 3, 4)), X((2, 4, 5))], attrs=dict(equation="...ij,...jk->...ik"),
         id="ellipsis-broadcast"),
    Case("Einsum", [X((3, 4)), X((4, 5))], attrs=dict(equation="ij,jk->i"), id="index-only-in-one"),
]
