"""Seeded fuzzing: corrupted models and images make onnxcam raise OnnxCamError, never anything else.

The cases and the runner are scripts/fuzz.py (run it with more cases: ``python scripts/fuzz.py
--cases 10000``). Each case runs in a worker process under a time limit, so a hang or a hard crash
(segfault, abort) of a native library shows up as a "timeout" or "killed" outcome, not as a hung test.
"""

import os
import sys
from collections import Counter

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fuzz  # noqa: E402

SEED = 0
CASES = 1000
TIMEOUT_S = 10.0


def test_corrupted_inputs_only_raise_onnxcam_errors():
    results = fuzz.run_cases(fuzz.cases(SEED, CASES), timeout_s=TIMEOUT_S, workers=min(os.cpu_count() or 1, 4))
    assert len(results) == CASES
    outcomes = Counter(r.outcome for r in results)
    failures = fuzz.distinct_failures(results)
    assert not failures, (
        f"{sum(outcomes[o] for o in fuzz.FAILURES)} of {CASES} fuzz cases (seed {SEED}) raised something other "
        f"than OnnxCamError, hung or killed the process ({dict(outcomes)}); distinct failures:\n"
        + fuzz.format_failures(failures, SEED))


def test_cases_are_reproducible_and_cover_every_mutation():
    first = list(fuzz.cases(SEED, 300))
    again = list(fuzz.cases(SEED, 300))
    assert [(c.mutation, c.detail, c.data) for c in first] == [(c.mutation, c.detail, c.data) for c in again]
    assert fuzz.make_case(SEED, 123).data == first[123].data  # one case replays on its own
    seen = {(c.kind, c.mutation) for c in fuzz.cases(SEED, CASES)}
    expected = {("model", m) for m in fuzz.MODEL_MUTATIONS} | {("image", m) for m in fuzz.IMAGE_MUTATIONS}
    assert expected <= seen, f"mutations never drawn: {sorted(expected - seen)}"


def test_valid_inputs_pass():
    """The harness explains unmutated inputs (else every case would be refused for the same reason)."""
    valid = [fuzz.Case(-1, SEED, "model", "none", "tiny", fuzz.model_bases()["tiny"]),
             fuzz.Case(-2, SEED, "model", "none", "shapes", fuzz.model_bases()["shapes"]),
             fuzz.Case(-3, SEED, "image", "none", "small.png", fuzz.image_bases()["small.png"])]
    results = fuzz.run_cases(valid, timeout_s=TIMEOUT_S, workers=1)
    assert [r.outcome for r in results] == ["ok"] * 3, [(r.case.detail, r.outcome, r.error_type, r.message) for r in results]


def test_a_layer_declared_with_a_zero_size_side_is_refused():
    """Found with seed 20261201: a value_info giving the layer a zero dim ended in a ZeroDivisionError in the
    map's resize; the layer is now not eligible ("a side of size 0")."""
    case = fuzz.make_case(20261201, 99)
    assert (case.mutation, case.detail) == ("odd_dim", "tiny: value_info 'r1': zero dim 2")
    [result] = fuzz.run_cases([case], timeout_s=TIMEOUT_S, workers=1)
    assert result.outcome == "refused", (result.outcome, result.error_type, result.message)
