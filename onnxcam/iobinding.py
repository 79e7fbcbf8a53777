"""ONNX Runtime runs through IO binding: how CUDA sessions run, and CPU ones when asked.

Inputs are bound before the run; outputs are bound to the session's device and either read back
as NumPy arrays or, for the names the caller lists, handed over as ``onnxruntime.OrtValue``s that
stay where the session computed them (GPU memory on CUDA; host memory on the CPU).

On CUDA the large feeds (the image batch) are first copied into a page-locked ("pinned") host
buffer, one per thread and input, kept and grown across calls: the GPU reads pinned memory by DMA,
where ordinary memory goes through the driver's own staging copy. The CUDA runtime calls (pinned
allocations, the session's own stream) go through ctypes to libcudart, the library the CUDA
execution provider loads itself; where it cannot be loaded or refuses (no driver, no device), the
feeds are bound from ordinary memory and the session keeps ONNX Runtime's default stream.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
from collections.abc import Collection, Sequence

import numpy as np
import onnxruntime as ort

__all__ = ["BoundRunner", "CudaRuntime", "cuda_runtime", "CudaStream", "PinnedBuffer"]

log = logging.getLogger(__name__)

_CUDART_NAMES = ("cudart64_13.dll", "cudart64_12.dll") if sys.platform == "win32" else \
    ("libcudart.so.13", "libcudart.so.12", "libcudart.so")
_STREAM_NON_BLOCKING = 1  # cudaStreamNonBlocking: no implicit sync with the legacy default stream
PINNED_MIN_BYTES = 16 << 10  # smaller feeds (target, target_weights) are bound as they are


class CudaRuntime:
    """The few libcudart calls IO binding needs; each returns ``None`` (and logs why) when CUDA refuses."""

    def __init__(self, library: ctypes.CDLL):
        self._lib = library
        library.cudaGetErrorString.restype = ctypes.c_char_p

    def _call(self, what: str, function, *args) -> bool:
        code = function(*args)
        if code != 0:
            log.debug("CUDA %s failed: %s", what, self._lib.cudaGetErrorString(code).decode(errors="replace"))
        return code == 0

    def create_stream(self) -> int | None:
        stream = ctypes.c_void_p()
        ok = self._call("stream creation", self._lib.cudaStreamCreateWithFlags, ctypes.byref(stream),
                        ctypes.c_uint(_STREAM_NON_BLOCKING))
        return stream.value if ok and stream.value else None

    def destroy_stream(self, stream: int) -> None:
        self._call("stream destruction", self._lib.cudaStreamDestroy, ctypes.c_void_p(stream))

    def host_alloc(self, nbytes: int) -> int | None:
        pointer = ctypes.c_void_p()
        ok = self._call("pinned allocation", self._lib.cudaHostAlloc, ctypes.byref(pointer), ctypes.c_size_t(nbytes),
                        ctypes.c_uint(0))
        return pointer.value if ok and pointer.value else None

    def free_host(self, pointer: int) -> None:
        self._call("pinned free", self._lib.cudaFreeHost, ctypes.c_void_p(pointer))


@functools.cache
def cuda_runtime() -> CudaRuntime | None:
    """libcudart — the one already loaded (by ``onnxruntime.preload_dlls``) where there is one — or ``None``."""
    no_load = getattr(os, "RTLD_NOLOAD", None)
    modes = ([ctypes.DEFAULT_MODE | no_load] if no_load else []) + [ctypes.DEFAULT_MODE]
    for mode in modes:
        for name in _CUDART_NAMES:
            try:
                return CudaRuntime(ctypes.CDLL(name, mode=mode))
            except (OSError, AttributeError):
                continue
    return None


class CudaStream:
    """A CUDA stream a session computes on (its ``user_compute_stream``), destroyed with its owner."""

    def __init__(self, runtime: CudaRuntime, handle: int):
        self.runtime, self.handle = runtime, handle

    @classmethod
    def create(cls) -> CudaStream | None:
        runtime = cuda_runtime()
        handle = runtime.create_stream() if runtime else None
        return cls(runtime, handle) if handle else None

    def __del__(self):
        self.runtime.destroy_stream(self.handle)  # CUDA lets work already queued on it finish first


class PinnedBuffer:
    """A page-locked host buffer that grows to the largest array staged in it."""

    def __init__(self, runtime: CudaRuntime):
        self._runtime, self._pointer, self._nbytes = runtime, None, 0
        self.refused = False  # CUDA refused an allocation once: not asked again

    def stage(self, array: np.ndarray) -> np.ndarray | None:
        """``array`` copied into pinned memory (a view of this buffer), or ``None`` if CUDA refuses it."""
        if array.nbytes > self._nbytes and not self.refused:
            self._release()
            self._pointer = self._runtime.host_alloc(array.nbytes)
            self._nbytes = array.nbytes if self._pointer else 0
            self.refused = not self._pointer
        if not self._pointer or array.nbytes > self._nbytes:
            return None
        raw = (ctypes.c_uint8 * array.nbytes).from_address(self._pointer)
        staged = np.frombuffer(raw, dtype=array.dtype).reshape(array.shape)
        np.copyto(staged, array)
        return staged

    def _release(self) -> None:
        if self._pointer:
            self._runtime.free_host(self._pointer)
        self._pointer, self._nbytes = None, 0

    def __del__(self):
        self._release()


class BoundRunner:
    """Runs one session through IO binding on ``device`` ("cuda" or "cpu"). ``host_memory`` allocates the
    staging buffers (by default libcudart's pinned memory on CUDA, none on the CPU)."""

    def __init__(self, session: ort.InferenceSession, device: str = "cpu", device_id: int = 0,
                 host_memory: CudaRuntime | None = None):
        self.session, self.device, self.device_id = session, device, device_id
        self._runtime = host_memory if host_memory is not None else cuda_runtime() if device == "cuda" else None
        self._pinned = threading.local()  # a buffer serves one run at a time: one per thread and input

    @property
    def pinned(self) -> bool:
        """Whether large feeds are staged in pinned memory (CUDA, with a usable libcudart)."""
        return self._runtime is not None

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray], run_options: ort.RunOptions | None = None,
            device_outputs: Collection[str] = ()) -> list:
        """The outputs: NumPy arrays, and for the names in ``device_outputs`` OrtValues on the device."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            self._bind_input(binding, name, np.ascontiguousarray(array))
        for name in output_names:
            binding.bind_output(name, self.device if name in device_outputs else "cpu", self.device_id)
        self.session.run_with_iobinding(binding, run_options)
        values = binding.get_outputs()
        return [value if name in device_outputs else value.numpy() for name, value in zip(output_names, values)]

    def _bind_input(self, binding, name: str, array: np.ndarray) -> None:
        """Bound as an OrtValue over host memory, which also reaches inputs that have default initializers
        (``target``, ``target_weights``; ``bind_cpu_input`` cannot find those). ORT copies it to the device
        while binding, so a pinned buffer is free again once the run returns."""
        staged = self._staged(name, array) if self.pinned and array.nbytes >= PINNED_MIN_BYTES else None
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array if staged is None else staged))

    def _staged(self, name: str, array: np.ndarray) -> np.ndarray | None:
        buffers = getattr(self._pinned, "buffers", None)
        if buffers is None:
            buffers = self._pinned.buffers = {}
        if name not in buffers:
            buffers[name] = PinnedBuffer(self._runtime)
        return buffers[name].stage(array)
