"""Writing ONNX models, with their weights in an external data file where they must or should be.

A protobuf message cannot exceed 2 GB, so a larger model is written as ``NAME`` (the graph) plus
``NAME.<token>.data`` beside it (the weights); so is a model whose source kept its weights outside.
The data file gets a new name each time and is renamed into place before the graph file, so a kill
at any instant leaves the old complete pair or the new one; the data file an earlier explain model
at ``NAME`` used is removed afterwards. ``onnx.save`` would append to an existing data file: the
pair is written into a fresh staging folder instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import EncodeError
from onnx.external_data_helper import convert_model_to_external_data

from onnxcam.contract import is_explain_model
from onnxcam.errors import OutputError
from onnxcam.io.files import file_mode, write_atomically

__all__ = ["save_model", "needs_external_data", "INLINE_LIMIT", "EXTERNAL_THRESHOLD"]

INLINE_LIMIT = 2**31 - 2**24  # protobuf's 2 GB, less room for the graph around the weights
EXTERNAL_THRESHOLD = 1024  # tensors of at least this many bytes go to the data file


def needs_external_data(model: onnx.ModelProto) -> bool:
    try:
        return model.ByteSize() > INLINE_LIMIT
    except EncodeError:  # protobuf cannot even measure a message over 2 GB
        return True


def save_model(model: onnx.ModelProto, path: str | Path, external: bool = False) -> Path:
    """Write ``model`` (not modified) to ``path``: one file, or the graph and its data file beside it
    when ``external`` or when the model is too large for one protobuf."""
    path = Path(path)
    inline = None if external else _serialized_inline(model)
    if inline is not None:
        write_atomically(path, inline)
        return path
    try:
        _save_with_data(model, path)
    except OSError as exc:
        raise OutputError(f"cannot write '{path}' and its data file: {exc.strerror or exc}; choose a writable "
                          "folder with room for the model") from None
    return path


def _serialized_inline(model: onnx.ModelProto) -> bytes | None:
    """The model's bytes when they fit one file, else ``None``: serialized once (measuring the size
    first would serialize it twice; on ConvNeXt-T that was a third of the save's time)."""
    try:
        data = model.SerializeToString()
    except (EncodeError, ValueError):  # over protobuf's 2 GB
        return None
    return data if len(data) <= INLINE_LIMIT else None


def _save_with_data(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    location = f"{path.name}.{secrets.token_hex(4)}.data"
    stale = _own_data_files(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        outside = onnx.ModelProto()
        outside.CopyFrom(model)
        convert_model_to_external_data(outside, all_tensors_to_one_file=True, location=location,
                                       size_threshold=EXTERNAL_THRESHOLD)
        onnx.save_model(outside, str(staging / path.name))
        for name in (location, path.name):
            if (staging / name).exists():  # no data file when every tensor is small
                os.chmod(staging / name, file_mode())
        if (staging / location).exists():
            os.replace(staging / location, path.parent / location)
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name in stale - {location}:
        (path.parent / name).unlink(missing_ok=True)


def _own_data_files(path: Path) -> set[str]:
    """The data files that an explain model already at ``path`` reads (its own, named after it)."""
    if not path.is_file():
        return set()
    try:
        previous = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a model we wrote: leave whatever is beside it alone
        return set()
    if not is_explain_model(previous):
        return set()
    names = {entry.value for tensor in previous.graph.initializer for entry in tensor.external_data
             if entry.key == "location"}
    return {name for name in names if name.startswith(f"{path.name}.") and name.endswith(".data") and "/" not in name}
