"""The runtime methods' shared machinery (the methods themselves: tests/methods/test_multipass.py)."""

import pytest

from onnxcam import Explainer, OnnxCamError
from onnxcam.methods.multipass import FALLBACK_PASSES_BATCH, MAX_PASSES_BATCH, auto_passes_batch
from onnxcam.runtime import memory_budget

MIB = 1 << 20


@pytest.mark.parametrize("per_image, budget, expected", [
    (100 * MIB, 1024 * MIB, 10),
    (1 * MIB, 4096 * MIB, MAX_PASSES_BATCH),
    (2048 * MIB, 1024 * MIB, 1),
    (0, 1024 * MIB, FALLBACK_PASSES_BATCH),  # sizes unknown
])
def test_auto_passes_batch(per_image, budget, expected):
    assert auto_passes_batch(per_image, budget) == expected


def test_explainer_sizes_passes_from_the_explain_model(demo_model):
    explainer = Explainer(demo_model, method="scorecam", provider="cpu")
    per_image = explainer._view.bytes_per_sample()
    assert per_image > 64 * 64 * 3 * 4  # at least the image itself
    assert explainer.run_options.passes_batch == auto_passes_batch(per_image, memory_budget("cpu"))
    assert Explainer(demo_model, method="scorecam", provider="cpu", passes_batch=3).run_options.passes_batch == 3


@pytest.mark.parametrize("passes_batch, message", [
    ("many", "passes_batch must be a number of images or 'auto', got 'many'"),
    (0, "passes_batch must be at least 1, got 0"),
])
def test_bad_passes_batch(demo_model, passes_batch, message):
    with pytest.raises(OnnxCamError, match=message):
        Explainer(demo_model, method="ablationcam", passes_batch=passes_batch)
