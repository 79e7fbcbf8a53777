"""Fixtures for the method tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """torch and ONNX Runtime's spinning threads fight over 2 cores otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
