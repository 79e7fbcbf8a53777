"""Every gradient rule checked against finite differences over its case table."""

import pytest

from onnxcam.autodiff import RULES
from tests.autodiff.cases import (activation, attention, control, conv, elementwise, linalg, norm, pool, quantize,
                                  recurrent, reduce, resize, shape)
from tests.autodiff.harness import check_case

CASES = [
    case
    for module in (activation, attention, control, conv, elementwise, linalg, norm, pool, quantize, recurrent, reduce,
                   resize, shape)
    for case in module.CASES
]
PARAMS = [pytest.param(case, opset, id=f"{case.label()}-opset{opset}") for case in CASES for opset in case.opsets]


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
