"""ONNX Runtime sessions: choosing the execution provider, with a CUDA → CPU fallback that says why.

``auto`` takes CUDA when it really works (a driver is present and the CUDA execution provider
loads), else the CPU; asking for ``cuda`` where it cannot work falls back to the CPU with a
warning. Either way one log line says which provider runs and why.

CUDA sessions run through IO binding (:mod:`onnxcam.iobinding`: pinned uploads, outputs left on
the GPU when asked) on a stream of their own, passed as the CUDA execution provider's
``user_compute_stream``, with copies on that same stream (``do_copy_in_default_stream``), so a
session's uploads, kernels and downloads are ordered on one stream and no two sessions share one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import onnxruntime as ort

from onnxcam.iobinding import BoundRunner, CudaStream

__all__ = ["Session", "make_session", "model_session", "PROVIDER_CHOICES", "check_single_runtime", "memory_budget",
           "cuda_problem", "spin_waits"]

log = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "cpu", "cuda", "openvino")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-training", "onnxruntime-directml", "onnxruntime-openvino")


@dataclass
class Session:
    """An inference session and the provider it actually runs on; :meth:`cancel` stops its runs."""

    session: ort.InferenceSession
    provider: str  # "cuda" or "cpu"
    reason: str
    run_options: ort.RunOptions = field(default_factory=ort.RunOptions)
    keep: object = None  # what the session reads while it lives (the folder of a large model's data)
    io_binding: bool = False  # every run through IO binding (CUDA's default); runs with device outputs always are
    device_id: int = 0
    _runner: BoundRunner | None = field(default=None, repr=False)
    stream: CudaStream | None = None  # last: it outlives the session that computes on it

    def run(self, output_names, feeds, device_outputs=()):
        """The outputs as NumPy arrays; those named in ``device_outputs`` as ``onnxruntime.OrtValue``s left
        where the session computed them (GPU memory on CUDA, host memory on the CPU)."""
        try:
            if self.io_binding or device_outputs:
                return self.runner.run(output_names or [o.name for o in self.session.get_outputs()], feeds,
                                       self.run_options, device_outputs)
            return self.session.run(output_names, feeds, self.run_options)
        except Exception as exc:  # ORT raises its own types
            if self.run_options.terminate:
                from onnxcam.errors import CancelledError

                raise CancelledError("the run was cancelled") from None
            raise exc

    @property
    def runner(self) -> BoundRunner:
        if self._runner is None:
            self._runner = BoundRunner(self.session, self.provider, self.device_id)
        return self._runner

    def cancel(self) -> None:
        """Make the runs in flight stop (ORT checks the flag between nodes) and later ones fail at once."""
        self.run_options.log_severity_level = 4  # ORT would log each stopped run as an error
        self.run_options.terminate = True


_spin_waits = True


@contextmanager
def spin_waits(allowed: bool):
    """Whether the CPU sessions made inside let ONNX Runtime's intra-op threads spin while they wait for
    work (its default). ``onnxcam run`` turns it off: its decoding and rendering threads need the
    cycles the spinning takes (python scripts/bench_run.py)."""
    global _spin_waits
    before, _spin_waits = _spin_waits, allowed
    try:
        yield
    finally:
        _spin_waits = before


def make_session(model_bytes: bytes | str, provider: str = "auto", threads: int | None = None,
                 announce: bool = True, *, io_binding: bool | str = "auto", cuda_options: dict | None = None) -> Session:
    """Build a session on ``provider`` ("auto", "cpu" or "cuda"), falling back to the CPU; a model
    ONNX Runtime cannot load is a :class:`~onnxcam.errors.ModelError`. ``"openvino"`` runs the
    model in OpenVINO instead (:mod:`onnxcam.backends.openvino`); ``auto`` never picks it.
    ``announce=False`` logs the provider chosen at debug level only (sub-models of one explainer).
    ``io_binding``: "auto" (on CUDA), True (on the CPU too) or False; ``cuda_options`` are CUDA
    execution provider options laid over onnxcam's (e.g. ``{"device_id": 1, "use_tf32": 0}``)."""
    if provider == "openvino":
        from onnxcam.backends.openvino import OpenVinoSession

        return OpenVinoSession(model_bytes, threads, announce)
    _check_binding_choice(io_binding)
    try:
        session = _make_session(model_bytes, provider, threads, announce, _checked_cuda_options(cuda_options))
        session.io_binding = session.provider == "cuda" if io_binding == "auto" else io_binding
        return session
    except Exception as exc:  # ORT raises its own types (Fail, InvalidGraph, NotImplemented, ...)
        from onnxcam.errors import ModelError, OnnxCamError

        if isinstance(exc, OnnxCamError):
            raise
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise ModelError(f"ONNX Runtime cannot load the model: {reason[:400]}") from None


def runtime_message(exc: Exception) -> str:
    """The line of an ONNX Runtime exception that says what went wrong (its last), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def model_session(model, provider: str = "auto", threads: int | None = None, announce: bool = True,
                  **binding) -> Session:
    """:func:`make_session` for a ModelProto, which ONNX Runtime reads from a temporary file: from
    serialized bytes its peak memory is about two more copies of the weights (ResNet-50: ~220 MB
    more; scripts/bench_overheads.py). A model too large for one protobuf (over 2 GB) is written
    with external data, kept while the session is. ``binding``: ``io_binding``, ``cuda_options``."""
    from onnxcam.io.model_files import needs_external_data, save_model
    from onnxcam.io.scratch import ScratchFolder

    if provider == "openvino":
        return make_session(model.SerializeToString(), provider, threads, announce, **binding)
    large = needs_external_data(model)
    try:
        folder = ScratchFolder("onnxcam-session-")  # a large model's is kept with its session
        path = save_model(model, folder.path / "model.onnx", external=True) if large else \
            _write(folder.path / "model.onnx", model.SerializeToString())
    except OSError:  # no writable temporary folder: pay the memory
        if large:
            raise
        return make_session(model.SerializeToString(), provider, threads, announce, **binding)
    session = make_session(str(path), provider, threads, announce, **binding)
    if large:
        session.keep = folder
    else:
        folder.cleanup()
    return session


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _check_binding_choice(io_binding) -> None:
    if io_binding not in ("auto", True, False):
        from onnxcam.errors import OnnxCamError

        raise OnnxCamError(f"io_binding must be 'auto', True or False, got {io_binding!r}")


def _checked_cuda_options(options: dict | None) -> dict[str, str]:
    """``options`` as the strings ONNX Runtime takes (booleans as 1/0); refused unless a dict of scalars."""
    from onnxcam.errors import OnnxCamError

    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float, bool))
                                                for k, v in options.items()):
        raise OnnxCamError(f"cuda_options must map option names to numbers or strings, got {options!r}")
    return {key: str(int(value)) if isinstance(value, bool) else str(value) for key, value in options.items()}


def _cuda_provider(options: dict[str, str]) -> tuple[tuple[str, dict[str, str]], CudaStream | None]:
    """The CUDA execution provider entry: one stream of the session's own (unless the caller gave one),
    copies on it, and the caller's options over these."""
    stream = None if "user_compute_stream" in options else CudaStream.create()
    chosen = {"do_copy_in_default_stream": "1", **({"user_compute_stream": str(stream.handle)} if stream else {})}
    return (_CUDA, {**chosen, **options}), stream


def _make_session(model_bytes: bytes, provider: str, threads: int | None, announce: bool = True,
                  cuda_options: dict[str, str] | None = None) -> Session:
    if provider not in PROVIDER_CHOICES:
        from onnxcam.errors import OnnxCamError

        raise OnnxCamError(f"unknown provider '{provider}'; choose one of {', '.join(PROVIDER_CHOICES)}")
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a load or run that fails raises, and onnxcam reports it in one line
    if threads:
        options.intra_op_num_threads = threads
    if not _spin_waits:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if provider in ("auto", "cuda"):
        problem = cuda_problem()
        if problem is None:
            _preload_cuda_libraries()
            entry, stream = _cuda_provider(cuda_options or {})
            session = _quiet_session(model_bytes, options, [entry, _CPU])
            if session.get_providers()[0] == _CUDA:
                device_id = int(entry[1].get("device_id", 0))
                reason = "CUDA execution provider loaded" + ("" if stream else "; ONNX Runtime's own stream")
                return _chosen(Session(session, "cuda", reason, device_id=device_id, stream=stream), announce)
            problem = "the CUDA execution provider failed to load (CUDA 12/13 or cuDNN 9 libraries missing? try: pip install 'onnxcam[cuda]')"
        fallback = Session(ort.InferenceSession(model_bytes, options, providers=[_CPU]), "cpu", problem)
        if provider == "cuda":
            log.warning("CUDA was asked for but cannot be used: %s; running on the CPU", problem)
            return fallback
        return _chosen(fallback, announce)
    return _chosen(Session(ort.InferenceSession(model_bytes, options, providers=[_CPU]), "cpu", "CPU asked for"),
                   announce)


def _chosen(session: Session, announce: bool = True) -> Session:
    """``session``, its provider logged (at debug level for parts of a model already announced)."""
    log.log(logging.INFO if announce else logging.DEBUG, "ONNX Runtime provider: %s (%s)", session.provider.upper(),
            session.reason)
    return session


GIB = 1 << 30


def memory_budget(provider: str) -> int:
    """Bytes one batch of extra passes may take: a quarter of the free RAM on the CPU, at most 4 GiB;
    2 GiB on CUDA (ONNX Runtime does not report the free GPU memory)."""
    if provider == "cuda":
        return 2 * GIB
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not on Linux
        free = 8 * GIB
    return int(min(free // 4, 4 * GIB))


def cuda_problem() -> str | None:
    """Why CUDA cannot be used, or ``None`` when it is worth trying."""
    if _CUDA not in ort.get_available_providers():
        return f"this onnxruntime build ({_ort_distribution()}) has no CUDA execution provider"
    if not _has_nvidia_driver():
        return "no NVIDIA driver found (libcuda could not be loaded)"
    return None


def _has_nvidia_driver() -> bool:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    if found:
        names.append(found)
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels that 'onnxcam[cuda]' installs, if there are any (before
    onnxcam's own libcudart calls, so that they and ONNX Runtime use the same library)."""
    if hasattr(ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None:
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001  (best effort; the session reports the real state)
            pass


def _quiet_session(model_bytes: bytes, options, providers) -> ort.InferenceSession:
    """Create a session with ORT's own error spam about missing CUDA libraries silenced."""
    ort.set_default_logger_severity(4)
    try:
        return ort.InferenceSession(model_bytes, options, providers=providers)
    finally:
        ort.set_default_logger_severity(2)


def _installed_ort_packages() -> list[str]:
    found = []
    for name in _ORT_PACKAGES:
        try:
            metadata.version(name)
            found.append(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _ort_distribution() -> str:
    found = _installed_ort_packages()
    return found[0] if len(found) == 1 else "onnxruntime"


def check_single_runtime() -> str | None:
    """A warning when several ONNX Runtime packages are installed (they overwrite each other)."""
    found = _installed_ort_packages()
    if len(found) > 1:
        return (
            f"several ONNX Runtime packages are installed ({', '.join(found)}); they share one module and "
            f"break each other: keep one, e.g. pip uninstall {' '.join(n for n in found if n != 'onnxruntime-gpu')}"
        )
    return None
