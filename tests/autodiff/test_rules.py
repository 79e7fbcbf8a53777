"""Every gradient rule checked against finite differences over its case table.

``ONNXCAM_OLD_OPSETS=1`` also runs every case at each of opsets 7–10 where ONNX Runtime accepts
its forward graph (about 750 more checks; the default run has the old forms' own table)."""

import os

import numpy as np
import onnx
import pytest

from onnxcam.autodiff import RULES
from tests.autodiff.cases import (activation, attention, control, conv, elementwise, linalg, norm, old_opsets, pool,
                                  quantize, recurrent, reduce, resize, shape)
from tests.autodiff.harness import X, build_forward, check_case, session

CASES = [
    case
    for module in (activation, attention, control, conv, elementwise, linalg, norm, old_opsets, pool, quantize, recurrent,
                   reduce,
                   resize, shape)
    for case in module.CASES
]
PARAMS = [pytest.param(case, opset, id=f"{case.label()}-opset{opset}") for case in CASES for opset in case.opsets]


def _runs_at(case, opset: int) -> bool:
    """Whether the case's forward graph is valid at ``opset``: the op exists there, and ONNX
    Runtime runs it to the shapes ONNX infers (Squeeze-1 takes no negative axes, Sum-6 does not
    broadcast, ...)."""
    try:
        onnx.defs.get_schema(case.op, opset)
        model = onnx.shape_inference.infer_shapes(build_forward(case, opset), strict_mode=True)
        inferred = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output}
        rng = np.random.default_rng(0)
        feeds = {f"x{i}": spec.sample(rng) for i, spec in enumerate(case.inputs) if isinstance(spec, X)}
        outputs = session(model).run([f"y{k}" for k in range(case.outputs)], feeds)
        return all(list(y.shape) == inferred[f"y{k}"] for k, y in enumerate(outputs))
    except Exception:  # the op or this form of it is not in that opset
        return False


if os.environ.get("ONNXCAM_OLD_OPSETS"):
    PARAMS += [pytest.param(case, opset, id=f"{case.label()}-old-opset{opset}") for case in CASES
               for opset in (7, 8, 9, 10) if opset not in case.opsets and _runs_at(case, opset)]


@pytest.mark.parametrize("case, opset", PARAMS)
def test_gradient_matches_finite_differences(case, opset):
    check_case(case, opset)


def test_every_rule_has_cases():
    covered = {op for case in CASES for op in (case.op, *case.covers)}
    missing = sorted(set(RULES) - covered)
    assert not missing, f"gradient rules without finite-difference cases: {missing}"


def test_every_rule_is_tested_from_its_first_opset():
    for op_type, rules in RULES.items():
        for rule in rules:
            opsets = {opset for case in CASES if op_type in (case.op, *case.covers) for opset in case.opsets}
            assert any(o >= rule.since and not any(r.since > rule.since and r.since <= o for r in rules) for o in opsets), (
                f"{op_type}: the rule from opset {rule.since} has no case at an opset where it applies"
            )
