"""An explain model's weights moved out of memory into a temporary data file that its sessions read.

The :class:`~onnxcam.Explainer` keeps the explain model's graph for ``save()`` and for the cuts
of the multi-pass methods and detectors; holding its weights as well cost about one more copy
of them (ResNet-50: ~100 MB). :func:`hold_weights` writes them once into a temporary folder,
as ONNX external data, and leaves the ModelProto referring to that file. Every session is built
from a small graph file beside it — the whole model's, or a cut's, whose initializers carry the
same references — so ONNX Runtime reads the weights tensor by tensor, and no copy of them is
made in Python again (scripts/bench_overheads.py). :meth:`HeldWeights.restored` reads them
back into a copy of a model, for a complete model file.

The folder is a :class:`~onnxcam.io.scratch.ScratchFolder`: one left by a process that died is
removed by the next explainer made on the machine.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import onnx
from onnx.external_data_helper import set_external_data

from onnxcam.io.model_files import EXTERNAL_THRESHOLD
from onnxcam.io.scratch import ScratchFolder
from onnxcam.runtime import Session, make_session

__all__ = ["HeldWeights", "hold_weights"]

log = logging.getLogger(__name__)

DATA_FILE = "weights.data"
PREFIX = "onnxcam-weights-"


class HeldWeights:
    """The temporary folder holding a model's weights; it is removed when this object goes."""

    def __init__(self, folder: ScratchFolder):
        self._folder = folder
        self.path = folder.path

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
    folder = None
    try:
        folder = ScratchFolder(PREFIX)
        spans = _write_data(moved, folder.path / DATA_FILE)
    except OSError as exc:  # no room or no writable temporary folder: the weights stay in memory
        log.debug("keeping the weights in memory: %s", exc)
        if folder is not None:
            folder.cleanup()
        return None
    for tensor, (offset, length) in zip(moved, spans):  # only once all of them are on disk
        set_external_data(tensor, DATA_FILE, offset, length)
        tensor.ClearField("raw_data")
    return HeldWeights(folder)


def _write_data(tensors: list[onnx.TensorProto], path: Path) -> list[tuple[int, int]]:
    """Write the tensors' raw data one after another; their (offset, length) in the file."""
    spans = []
    with open(path, "wb") as file:
        for tensor in tensors:
            data = tensor.raw_data
            spans.append((file.tell(), len(data)))
            file.write(data)
    return spans
