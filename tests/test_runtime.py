"""Provider choice is tested in test_explainer.py (the CUDA fallback); here, the memory budget."""

from onnxcam.runtime import GIB, memory_budget


def test_memory_budget():
    assert memory_budget("cuda") == 2 * GIB
    assert 0 < memory_budget("cpu") <= 4 * GIB
