"""An explain model's weights moved out of memory into a temporary data file that its sessions read.

The :class:`~onnxcam.Explainer` keeps the explain model's graph for ``save()`` and for the cuts
of the multi-pass methods and detectors; holding its weights as well cost about one more copy
of them (ResNet-50: ~100 MB). :func:`hold_weights` writes them once into a temporary folder,
as ONNX external data, and leaves the ModelProto referring to that file. Every session is built
from a small graph file beside it — the whole model's, or a cut's, whose initializers carry the
same references — so ONNX Runtime reads the weights tensor by tensor, and no copy of them is
made in Python again (scripts/bench_overheads.py). :meth:`HeldWeights.restored` reads them
back into a copy of a model, for a complete model file.

A process that dies without running its finalisers (SIGKILL, ``os._exit``, a Ray worker stopped
at shutdown) cannot remove its folder, so each folder holds a lock file that its process keeps
locked (``flock``; the kernel releases it when the process dies, however it dies), and
:func:`hold_weights` first removes the folders whose lock nobody holds any more.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import onnx
from onnx.external_data_helper import set_external_data

from onnxcam.io.model_files import EXTERNAL_THRESHOLD
from onnxcam.runtime import Session, make_session

__all__ = ["HeldWeights", "hold_weights"]

log = logging.getLogger(__name__)

DATA_FILE = "weights.data"
PREFIX = "onnxcam-weights-"
LOCK_FILE = "owner.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so no sweep; folders go when their process exits
    fcntl = None


class HeldWeights:
    """The temporary folder holding a model's weights; it is removed when this object goes."""

    def __init__(self, folder: tempfile.TemporaryDirectory, lock):
        self._folder = folder
        self._lock = lock  # the open, locked lock file: closed (unlocked) with this object, or by the kernel
        self.path = Path(folder.name)

    def session(self, model: onnx.ModelProto, provider: str, threads: int | None, announce: bool,
                **binding) -> Session:
        """A session for ``model``, the held model or a part of it, read from a graph file in the folder
        (``binding``: :func:`~onnxcam.runtime.make_session`'s IO-binding options)."""
        graph_file = self.path / f"graph-{secrets.token_hex(4)}.onnx"
        try:
            graph_file.write_bytes(model.SerializeToString())
        except OSError:  # the folder went or filled up: hand ONNX Runtime the whole model instead
            return make_session(self.restored(model).SerializeToString(), provider, threads, announce, **binding)
        try:
            return make_session(str(graph_file), provider, threads, announce, **binding)
        finally:
            graph_file.unlink(missing_ok=True)

    def restored(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of ``model`` with its weights read back from the data file (a complete model)."""
        full = onnx.ModelProto()
        full.CopyFrom(model)
        moved = [t for t in full.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        onnx.load_external_data_for_model(full, str(self.path))
        for tensor in moved:  # unset, as before the weights moved
            tensor.ClearField("data_location")
        return full


def hold_weights(model: onnx.ModelProto) -> HeldWeights | None:
    """Move the large initializers of ``model``'s main graph into a temporary data file (in place: the
    model keeps references to them), or return ``None`` and leave the model whole where no temporary
    file can be written."""
    moved = [t for t in model.graph.initializer if t.HasField("raw_data") and len(t.raw_data) >= EXTERNAL_THRESHOLD]
    remove_abandoned_folders()
    folder = lock = None
    try:
        folder = tempfile.TemporaryDirectory(prefix=PREFIX, ignore_cleanup_errors=True)
        lock = _locked(Path(folder.name))
        spans = _write_data(moved, Path(folder.name) / DATA_FILE)
    except OSError as exc:  # no room or no writable temporary folder: the weights stay in memory
        log.debug("keeping the weights in memory: %s", exc)
        if lock is not None:
            lock.close()
        if folder is not None:
            folder.cleanup()
        return None
    for tensor, (offset, length) in zip(moved, spans):  # only once all of them are on disk
        set_external_data(tensor, DATA_FILE, offset, length)
        tensor.ClearField("raw_data")
    return HeldWeights(folder, lock)


def remove_abandoned_folders(parent: str | None = None) -> int:
    """Remove the weight folders in ``parent`` (the temporary folder) whose process has died, that is
    whose lock file can be locked; the number removed. Folders without a lock file (being made, or
    left by versions before the locks) are left alone."""
    if fcntl is None:
        return 0
    removed = 0
    try:
        entries = [e for e in os.scandir(parent or tempfile.gettempdir()) if e.name.startswith(PREFIX)]
    except OSError:
        return 0
    for entry in entries:
        try:
            with open(Path(entry.path) / LOCK_FILE, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no lock file, not ours to open, or its process holds it
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    if removed:
        log.debug("removed %d weight folder(s) left by processes that died", removed)
    return removed


def _locked(folder: Path):
    """The folder's lock file, open and locked. Locked under another name first, then renamed, so that a
    sweep never finds the lock file before it is locked."""
    if fcntl is None:
        return None
    pending = folder / f".{LOCK_FILE}"
    lock = open(pending, "wb")  # noqa: SIM115  (kept open, and locked, for the folder's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pending.rename(folder / LOCK_FILE)
    except OSError:
        lock.close()
        raise
    return lock


def _write_data(tensors: list[onnx.TensorProto], path: Path) -> list[tuple[int, int]]:
    """Write the tensors' raw data one after another; their (offset, length) in the file."""
    spans = []
    with open(path, "wb") as file:
        for tensor in tensors:
            data = tensor.raw_data
            spans.append((file.tell(), len(data)))
            file.write(data)
    return spans

