"""IO binding runs on the CPU: the same numbers as plain runs, outputs left as OrtValues when asked,
large feeds staged through a host-memory allocator (pinned memory on CUDA; a stand-in here)."""

import ctypes

import numpy as np
import onnxruntime as ort
import pytest

from onnxcam import Explainer
from onnxcam.iobinding import PINNED_MIN_BYTES, BoundRunner, PinnedBuffer, cuda_runtime
from onnxcam.runtime import cuda_problem

NAMES = ["cam", "cam_target", "cam_score", "logits"]


@pytest.fixture(scope="module")
def explain_session(demo_model):
    return Explainer(demo_model, provider="cpu")._session.session


def _feeds(n=3, target=(0, 1, 2)):
    image = np.random.default_rng(0).standard_normal((n, 3, 64, 64)).astype(np.float32)
    return {"image": image, "target": np.array(target[:n], np.int64)}


class HostMemory:
    """Plain (pageable) memory with the pinned allocator's interface; counts what it was asked for."""

    def __init__(self, refuse: bool = False):
        self.refuse, self.asked, self.freed, self._blocks = refuse, [], 0, {}

    def host_alloc(self, nbytes):
        self.asked.append(nbytes)
        if self.refuse:
            return None
        block = ctypes.create_string_buffer(nbytes)
        self._blocks[ctypes.addressof(block)] = block
        return ctypes.addressof(block)

    def free_host(self, pointer):
        self.freed += 1
        del self._blocks[pointer]


def test_bound_runs_equal_plain_runs_with_target_inputs_that_have_defaults(explain_session):
    feeds = _feeds()
    expected = explain_session.run(NAMES, feeds)
    got = BoundRunner(explain_session).run(NAMES, feeds)
    assert [type(g) for g in got] == [np.ndarray] * 4
    np.testing.assert_array_equal(got[1], [0, 1, 2])  # the fed targets, not the default top-1
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)


def test_device_outputs_are_ortvalues_the_rest_arrays(explain_session):
    feeds = _feeds()
    expected = explain_session.run(NAMES, feeds)
    got = BoundRunner(explain_session).run(NAMES, feeds, device_outputs={"cam", "logits"})
    assert isinstance(got[0], ort.OrtValue) and isinstance(got[3], ort.OrtValue)
    assert isinstance(got[1], np.ndarray) and isinstance(got[2], np.ndarray)
    assert got[0].device_name() == "cpu" and got[0].shape() == [3, 64, 64]
    np.testing.assert_array_equal(got[0].numpy(), expected[0])
    np.testing.assert_array_equal(np.from_dlpack(got[3]), expected[3])


def test_large_feeds_are_staged_in_one_growing_buffer_per_input(explain_session):
    memory = HostMemory()
    runner = BoundRunner(explain_session, host_memory=memory)
    for n in (1, 3, 2):
        feeds = _feeds(n)
        np.testing.assert_allclose(runner.run(NAMES, feeds)[0], explain_session.run(["cam"], feeds)[0], atol=1e-6)
    image_bytes = 3 * 64 * 64 * 4
    assert image_bytes >= PINNED_MIN_BYTES
    assert memory.asked == [image_bytes, 3 * image_bytes]  # grown once for 3 images, reused for 2; target not staged
    assert memory.freed == 1


def test_a_refused_allocation_binds_ordinary_memory_and_is_not_asked_again(explain_session):
    memory = HostMemory(refuse=True)
    runner = BoundRunner(explain_session, host_memory=memory)
    for _ in range(2):
        feeds = _feeds()
        np.testing.assert_allclose(runner.run(NAMES, feeds)[0], explain_session.run(["cam"], feeds)[0], atol=1e-6)
    assert len(memory.asked) == 1


def test_a_staged_array_is_a_copy_in_the_buffer():
    buffer = PinnedBuffer(HostMemory())
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    staged = buffer.stage(array)
    np.testing.assert_array_equal(staged, array)
    array[0, 0] = 99
    assert staged[0, 0] == 0 and staged.dtype == np.float32


def test_cuda_runtime_calls_fail_softly_without_a_device():
    runtime = cuda_runtime()
    if runtime is None:
        pytest.skip("no libcudart here")
    if cuda_problem() is None:
        pytest.skip("a CUDA driver is present: the calls may succeed")
    assert runtime.create_stream() is None and runtime.host_alloc(1024) is None
