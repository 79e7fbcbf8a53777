"""Seeded fuzzing of the public API: corrupted models and images must only raise ``OnnxCamError``.

Each case starts from a valid input (the demo model ``models/shapes.onnx`` or a tiny model built
here; the demo's example images or small images encoded here) and corrupts it once. A model case
runs ``Explainer(model_bytes, provider="cpu").explain([example image])``; an image case runs a
shared ``Explainer("models/shapes.onnx", provider="cpu").explain([image_bytes])``. Outcomes:

* ``ok``: it worked;  ``refused``: an ``OnnxCamError`` (subclass) was raised — both are fine;
* ``crash``: any other exception escaped (its type, message and frames are kept);
* ``timeout``: the case ran past its time limit;  ``killed``: the process died (segfault, abort).

Cases run in worker processes (fresh interpreters), one case at a time each, under a per-case time limit
and an address-space limit; a worker that hangs or dies is replaced.

    python scripts/fuzz.py --cases 10000 --seed 0 [--timeout 10] [--workers N] [--only 17,42]
                           [--dump DIR] [--memory-mb 4096]

Exit status 1 if any case crashed, timed out or killed its worker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "shapes.onnx"
DEMO_EXAMPLES = ROOT / "models" / "examples"
DEMO_IMAGE = DEMO_EXAMPLES / "circle_1.png"  # the image every model case explains
PACKAGE_DIR = ROOT / "onnxcam"

OUTCOMES = ("ok", "refused", "crash", "timeout", "killed")
FAILURES = ("crash", "timeout", "killed")

MODEL_MUTATIONS = ("bitflip", "truncate", "random_bytes", "shuffle_nodes", "attr_type", "attr_value", "huge_dim",
                   "odd_dim", "elem_type", "cycle", "remove_initializer", "rename_tensor", "opset", "ir_version",
                   "empty_graph", "duplicate_names")
IMAGE_MUTATIONS = ("bitflip", "truncate", "huge_ihdr", "ihdr_fields", "empty", "random_bytes", "png16", "gray",
                   "rgba", "formats")


@dataclass(frozen=True)
class Case:
    id: int  # the case's index: (seed, id) reproduces it
    seed: int
    kind: str  # "model" or "image"
    mutation: str
    detail: str  # what exactly was done, for reports
    data: bytes = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.mutation}"


@dataclass
class Result:
    case: Case
    outcome: str
    error_type: str = ""
    message: str = ""
    frame: str = ""  # the innermost traceback frame
    onnxcam_frame: str = ""  # the innermost frame inside onnxcam/ (where the error escaped from onnxcam's code)
    seconds: float = 0.0


# --- valid starting points -------------------------------------------------------------------

def tiny_model() -> onnx.ModelProto:
    """Conv → Relu → Conv → Add (residual) → GlobalAveragePool → Flatten → Gemm: 3 classes, 1x3x16x16."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[1, 1], group=1),
        helper.make_node("Add", ["c2", "r1"], ["a"], name="add"),
        helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1, alpha=1.0, beta=1.0),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [init("w1", 4, 3, 3, 3), init("b1", 4), init("w2", 4, 4, 3, 3), init("b2", 4), init("wf", 3, 4), init("bf", 3)],
        value_info=[helper.make_tensor_value_info("r1", TensorProto.FLOAT, [1, 4, 16, 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxcam-fuzz")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@lru_cache(maxsize=None)
def model_bases() -> dict[str, bytes]:
    return {"shapes": DEMO_MODEL.read_bytes(), "tiny": tiny_model().SerializeToString()}


@lru_cache(maxsize=None)
def _parsed_base(name: str) -> onnx.ModelProto:
    return onnx.load_from_string(model_bases()[name])


@lru_cache(maxsize=None)
def _structure_positions(name: str) -> tuple[tuple[int, int], ...]:
    """Byte ranges of a serialized base model outside its weights' raw data (where flips change structure)."""
    data = model_bases()[name]
    spans = []
    for tensor in _parsed_base(name).graph.initializer:
        if len(tensor.raw_data) >= 16:
            start = data.find(tensor.raw_data)
            if start >= 0:
                spans.append((start, start + len(tensor.raw_data)))
    ranges, position = [], 0
    for start, end in sorted(spans):
        if start > position:
            ranges.append((position, start))
        position = max(position, end)
    if position < len(data):
        ranges.append((position, len(data)))
    return tuple(ranges)


def _encode(ext: str, image: np.ndarray, params=()) -> bytes:
    ok, encoded = cv2.imencode(ext, image, list(params))
    if not ok:
        raise RuntimeError(f"cv2.imencode({ext}) failed for {image.shape} {image.dtype}")
    return encoded.tobytes()


@lru_cache(maxsize=None)
def image_bases() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    bases = {p.name: p.read_bytes() for p in sorted(DEMO_EXAMPLES.glob("*.png"))}
    bases.update({
        "small.png": _encode(".png", small),
        "small.jpg": _encode(".jpg", small),
        "small.bmp": _encode(".bmp", small),
        "small.tiff": _encode(".tiff", small),
        "small.webp": _encode(".webp", small),
        "small16.png": _encode(".png", small.astype(np.uint16) * 257),
    })
    return bases


# --- model mutations -------------------------------------------------------------------------
# Each takes (rng, model, base name) and changes the ModelProto in place, returning a detail string;
# byte-level mutations return (detail, bytes) instead.

def _flip_bits(rng: random.Random, data: bytes, ranges=None) -> tuple[str, bytes]:
    buffer = bytearray(data)
    flips = rng.choice((1, 1, 2, 4, 8, 32))
    if not buffer:
        return "flips 0 (empty)", bytes(buffer)
    positions = []
    for _ in range(flips):
        if ranges and rng.random() < 0.8:
            start, end = rng.choice(ranges)
            position = rng.randrange(start, end)
        elif rng.random() < 0.3:
            position = rng.randrange(min(len(buffer), 128))  # the header
        else:
            position = rng.randrange(len(buffer))
        buffer[position] ^= 1 << rng.randrange(8)
        positions.append(position)
    return f"{flips} flip(s) at {positions[:4]}{'...' if flips > 4 else ''}", bytes(buffer)


def _truncate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    choice = rng.random()
    if choice < 0.2:
        offset = rng.randrange(min(len(data), 64))
    elif choice < 0.4:
        offset = max(0, len(data) - rng.randrange(1, 64))
    else:
        offset = rng.randrange(len(data))
    return f"at {offset} of {len(data)}", data[:offset]


def _random_bytes(rng: random.Random, prefixes: dict[str, bytes]) -> tuple[str, bytes]:
    name = rng.choice(sorted(prefixes))
    length = rng.choice((1, 7, 64, 512, 4096))
    return f"{name} + {length} random bytes", prefixes[name] + rng.randbytes(length)


def m_shuffle_nodes(rng, model, base):
    nodes = list(model.graph.node)
    order = list(range(len(nodes)))
    style = rng.choice(("shuffle", "reverse", "swap"))
    if style == "reverse":
        order.reverse()
    elif style == "swap":
        i = rng.randrange(len(order) - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
    else:
        while order == sorted(order):
            rng.shuffle(order)
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)
    return f"{style} {order}"


_ATTR_VALUES = {
    "FLOAT": lambda name: helper.make_attribute(name, 1.5),
    "INT": lambda name: helper.make_attribute(name, 2),
    "STRING": lambda name: helper.make_attribute(name, "fuzz"),
    "INTS": lambda name: helper.make_attribute(name, [1, 2, 3]),
    "FLOATS": lambda name: helper.make_attribute(name, [0.5, 2.5]),
    "STRINGS": lambda name: helper.make_attribute(name, ["a", "b"]),
    "TENSOR": lambda name: helper.make_attribute(name, numpy_helper.from_array(np.ones((2, 2), np.float32))),
    "GRAPH": lambda name: helper.make_attribute(name, helper.make_graph([], "g", [], [])),
    "EMPTY_INTS": lambda name: helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS),
}


def _attributes(model):
    return [(node, index) for node in model.graph.node for index in range(len(node.attribute))]


def m_attr_type(rng, model, base):
    node, index = rng.choice(_attributes(model))
    attribute = node.attribute[index]
    old = onnx.AttributeProto.AttributeType.Name(attribute.type)
    style = rng.random()
    if style < 0.15:
        # the type field lies: it names another type than the field that holds the value
        new_type = rng.choice([t for t in (onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING,
                                           onnx.AttributeProto.INT, onnx.AttributeProto.INTS,
                                           onnx.AttributeProto.TENSOR, onnx.AttributeProto.GRAPH, 0) if t != attribute.type])
        attribute.type = new_type
        return f"{node.op_type}.{attribute.name}: type field {old} -> {new_type}, value kept"
    new = rng.choice([t for t in _ATTR_VALUES if t != old])
    replacement = _ATTR_VALUES[new](attribute.name)
    attribute.CopyFrom(replacement)
    return f"{node.op_type}.{attribute.name}: {old} -> {new}"


def m_attr_value(rng, model, base):
    node, index = rng.choice(_attributes(model))
    attribute = node.attribute[index]
    if attribute.type == onnx.AttributeProto.INT:
        value = rng.choice((0, -1, -(2 ** 63), 2 ** 63 - 1, 99, 10 ** 12))
        attribute.i = value
    elif attribute.type == onnx.AttributeProto.INTS:
        length = len(attribute.ints)
        value = rng.choice(([0] * length, [-1] * length, [10 ** 12] * length, [], [1] * (length + 3), [2 ** 62, 1]))
        del attribute.ints[:]
        attribute.ints.extend(value)
    elif attribute.type == onnx.AttributeProto.FLOAT:
        value = rng.choice((float("nan"), float("inf"), -float("inf"), 0.0, 1e38))
        attribute.f = value
    else:
        value = "(unchanged)"
    if rng.random() < 0.1:
        attribute.name = rng.choice(("", "unknown_attr", attribute.name.upper()))
        value = f"{value}, renamed to '{attribute.name}'"
    return f"{node.op_type}.{attribute.name}: {value}"


def _value_infos(model):
    """Graph inputs (not initializers), outputs and value_info entries that have a tensor shape."""
    initializers = {t.name for t in model.graph.initializer}
    found = [("input", v) for v in model.graph.input if v.name not in initializers]
    found += [("output", v) for v in model.graph.output]
    found += [("value_info", v) for v in model.graph.value_info]
    return [(where, v) for where, v in found if v.type.HasField("tensor_type")]


def _target_value_info(rng, model):
    """An existing graph input/output/value_info, or a new value_info for an intermediate tensor."""
    entries = _value_infos(model)
    if not entries or rng.random() < 0.35:
        outputs = {o.name for o in model.graph.output}
        names = [out for node in model.graph.node for out in node.output if out not in outputs]
        if names:
            name = rng.choice(names)
            for existing in model.graph.value_info:
                if existing.name == name:
                    return "value_info", existing
            rank = rng.choice((2, 4))
            info = helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 8, 8][:rank])
            model.graph.value_info.append(info)
            return "new value_info", info
    return rng.choice(entries)


def m_huge_dim(rng, model, base):
    where, info = _target_value_info(rng, model)
    dims = info.type.tensor_type.shape.dim
    if not dims:
        info.type.tensor_type.shape.dim.add().dim_value = 1
    index = rng.randrange(len(dims))
    value = rng.choice((10 ** 12, 10 ** 12, 2 ** 31, 2 ** 62, 2 ** 63 - 1, 10 ** 6))
    dims[index].dim_value = value
    return f"{where} '{info.name}' dim {index} = {value}"


def m_odd_dim(rng, model, base):
    where, info = _target_value_info(rng, model)
    shape = info.type.tensor_type.shape
    style = rng.choice(("zero", "negative", "symbolic", "unset", "rank+1", "rank-1", "scalar", "no shape"))
    if style in ("zero", "negative", "symbolic", "unset") and len(shape.dim):
        index = rng.randrange(len(shape.dim))
        dim = shape.dim[index]
        if style == "zero":
            dim.dim_value = 0
        elif style == "negative":
            dim.dim_value = rng.choice((-1, -(10 ** 12)))
        elif style == "symbolic":
            dim.dim_param = rng.choice(("N", "", "height"))
        else:
            dim.Clear()
        style = f"{style} dim {index}"
    elif style == "rank+1":
        shape.dim.add().dim_value = rng.choice((1, 3))
    elif style == "rank-1" and len(shape.dim):
        del shape.dim[-1]
    elif style == "scalar":
        del shape.dim[:]
    else:
        info.type.tensor_type.ClearField("shape")
    return f"{where} '{info.name}': {style}"


def m_elem_type(rng, model, base):
    where, info = _target_value_info(rng, model)
    value = rng.choice((TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.STRING,
                        TensorProto.BOOL, TensorProto.UINT8, TensorProto.UNDEFINED, 999))
    info.type.tensor_type.elem_type = value
    if rng.random() < 0.1:
        info.ClearField("type")
        value = "type cleared"
    return f"{where} '{info.name}' elem_type {value}"


def _descendants(model, index: int) -> set[int]:
    nodes = list(model.graph.node)
    found, frontier = set(), {index}
    while frontier:
        produced = {out for i in frontier for out in nodes[i].output}
        frontier = {j for j, node in enumerate(nodes) if j not in found and set(node.input) & produced}
        found |= frontier
    return found


def m_cycle(rng, model, base):
    nodes = model.graph.node
    initializers = {t.name for t in model.graph.initializer}
    candidates = [(i, sorted(_descendants(model, i))) for i in range(len(nodes))]
    candidates = [(i, d) for i, d in candidates if d]
    i, descendants = rng.choice(candidates)
    j = i if rng.random() < 0.15 else rng.choice(descendants)  # a self-loop or a longer cycle
    node = nodes[i]
    slots = [k for k, name in enumerate(node.input) if name and name not in initializers] or list(range(len(node.input)))
    slot = rng.choice(slots)
    source = rng.choice([out for out in nodes[j].output if out])
    old = node.input[slot]
    node.input[slot] = source
    return f"{node.op_type} '{node.name}' input {slot} '{old}' -> '{source}' (output of {nodes[j].op_type} '{nodes[j].name}')"


def m_remove_initializer(rng, model, base):
    initializers = model.graph.initializer
    if rng.random() < 0.15:
        count = len(initializers)
        del initializers[:]
        return f"all {count}"
    index = rng.randrange(len(initializers))
    name = initializers[index].name
    del initializers[index]
    return f"'{name}'"


def _all_tensor_names(model) -> list[str]:
    names = {v.name for v in (*model.graph.input, *model.graph.output)}
    names |= {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        names |= {n for n in (*node.input, *node.output) if n}
    return sorted(names)


_NEW_NAMES = ("", "renamed", "x" * 5000, "cam", "target", "target_weights", "activations", "gradients",
              "cam_score", "onnxcam.layer", "with space\nnewline", "тензор/😀", "a:b/c.d")


def _rename_everywhere(model, old: str, new: str):
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info, *model.graph.initializer):
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        for field_ in (node.input, node.output):
            for k, name in enumerate(field_):
                if name == old:
                    field_[k] = new


def m_rename_tensor(rng, model, base):
    names = _all_tensor_names(model)
    old = rng.choice(names)
    style = rng.random()
    if style < 0.4:
        new = rng.choice((*_NEW_NAMES, rng.choice(names)))  # an odd name, a reserved name, or a collision
        _rename_everywhere(model, old, new)
        return f"'{old}' -> '{new[:40]}' everywhere"
    if style < 0.9:
        places = [(v, None) for v in (*model.graph.input, *model.graph.output, *model.graph.initializer) if v.name == old]
        places += [(node, (f, k)) for node in model.graph.node for f in ("input", "output")
                   for k, name in enumerate(getattr(node, f)) if name == old]
        thing, where = rng.choice(places)
        if where is None:
            thing.name = old + "_dangling"
            place = type(thing).__name__
        else:
            getattr(thing, where[0])[where[1]] = old + "_dangling"
            place = f"{thing.op_type}.{where[0]}[{where[1]}]"
        return f"'{old}' renamed only in {place} (dangling)"
    # node names: all empty, or all the same
    new = rng.choice(("", "same"))
    for node in model.graph.node:
        node.name = new
    return f"every node named '{new}'"


def m_opset(rng, model, base):
    style = rng.choice(("0", "999", "-1", "1", "missing default", "no imports", "duplicate default", "extra domain"))
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if style in ("0", "999", "-1", "1"):
        for opset in default:
            opset.version = int(style)
    elif style == "missing default":
        kept = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")]
        del model.opset_import[:]
        model.opset_import.extend(kept)
        model.opset_import.append(helper.make_opsetid("com.fuzz", 1))
    elif style == "no imports":
        del model.opset_import[:]
    elif style == "duplicate default":
        model.opset_import.append(helper.make_opsetid("", 9))
    else:
        model.opset_import.append(helper.make_opsetid("com.fuzz", 1))
        node = rng.choice(list(model.graph.node))
        node.domain = "com.fuzz"
        style += f", {node.op_type} moved to it"
    return style


def m_ir_version(rng, model, base):
    value = rng.choice((0, 1, 2, 3, 99, -1, 2 ** 40))
    model.ir_version = value
    return str(value)


def m_empty_graph(rng, model, base):
    style = rng.choice(("no nodes", "no nodes, no outputs", "no outputs", "no inputs", "empty graph", "no graph",
                        "only initializers"))
    graph = model.graph
    if style == "no nodes":
        del graph.node[:]
    elif style == "no nodes, no outputs":
        del graph.node[:]
        del graph.output[:]
    elif style == "no outputs":
        del graph.output[:]
    elif style == "no inputs":
        initializers = {t.name for t in graph.initializer}
        kept = [v for v in graph.input if v.name in initializers]
        del graph.input[:]
        graph.input.extend(kept)
    elif style == "empty graph":
        graph.Clear()
    elif style == "no graph":
        model.ClearField("graph")
    else:
        del graph.node[:]
        del graph.input[:]
        del graph.output[:]
    return style


def m_duplicate_names(rng, model, base):
    graph = model.graph
    style = rng.choice(("duplicate output", "duplicate input", "two producers", "output is input",
                        "output is initializer", "output is intermediate"))
    if style == "duplicate output":
        graph.output.append(graph.output[0])
    elif style == "duplicate input":
        graph.input.append(graph.input[0])
    elif style == "two producers":
        nodes = list(graph.node)
        i, j = rng.sample(range(len(nodes)), 2)
        nodes[i].output[0] = nodes[j].output[0]
        style += f": {nodes[i].op_type} '{nodes[i].name}' also writes '{nodes[j].output[0]}'"
    elif style == "output is input":
        graph.output.append(helper.make_tensor_value_info(graph.input[0].name, TensorProto.FLOAT, None))
    elif style == "output is initializer":
        graph.output.append(helper.make_tensor_value_info(graph.initializer[0].name, TensorProto.FLOAT, None))
    else:
        node = rng.choice(list(graph.node)[:-1])
        graph.output.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None))
        style += f" '{node.output[0]}'"
    return style


_MODEL_PROTO_MUTATIONS = {name[2:]: fn for name, fn in globals().items() if name.startswith("m_")}


def _model_case(rng: random.Random, mutation: str) -> tuple[str, bytes]:
    base = rng.choice(("shapes", "tiny"))
    data = model_bases()[base]
    if mutation == "bitflip":
        detail, data = _flip_bits(rng, data, _structure_positions(base))
    elif mutation == "truncate":
        detail, data = _truncate(rng, data)
    elif mutation == "random_bytes":
        prefixes = {"nothing": b"", "onnx header": data[:16], "png": image_bases()["small.png"][:33],
                    "text": b"ir_version: 8\ngraph {\n"}
        detail, data = _random_bytes(rng, prefixes)
    else:
        model = onnx.ModelProto()
        model.CopyFrom(_parsed_base(base))
        detail = _MODEL_PROTO_MUTATIONS[mutation](rng, model, base)
        data = model.SerializeToString()
    return f"{base}: {detail}", data


# --- image mutations -------------------------------------------------------------------------

def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _with_ihdr(png: bytes, width=None, height=None, depth=None, color=None, interlace=None, **_) -> bytes:
    """The PNG with IHDR fields replaced and the chunk's CRC recomputed (the header stays valid)."""
    assert png[12:16] == b"IHDR"
    w, h, d, c, comp, filt, inter = struct.unpack(">IIBBBBB", png[16:29])
    payload = struct.pack(">IIBBBBB", w if width is None else width, h if height is None else height,
                          d if depth is None else depth, c if color is None else color, comp, filt,
                          inter if interlace is None else interlace)
    return png[:8] + _png_chunk(b"IHDR", payload) + png[33:]


def _pngs() -> list[str]:
    return [name for name in image_bases() if name.endswith(".png")]


def _random_image(rng: random.Random, channels: int, dtype) -> np.ndarray:
    height, width = rng.choice(((1, 1), (2, 3), (64, 64), (37, 91), (1, 700), (700, 1), (300, 200)))
    np_rng = np.random.default_rng(rng.randrange(2 ** 32))
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    if rng.random() < 0.15:
        image = np.full((height, width, channels), rng.choice((0, top)), dtype)  # constant (all black / white)
    elif np.issubdtype(dtype, np.integer):
        image = np_rng.integers(0, int(top) + 1, (height, width, channels), dtype=dtype)
    else:
        image = np_rng.standard_normal((height, width, channels)).astype(dtype)
    return image[:, :, 0] if channels == 1 and rng.random() < 0.5 else image


def _image_case(rng: random.Random, mutation: str) -> tuple[str, bytes]:
    bases = image_bases()
    if mutation in ("bitflip", "truncate"):
        name = rng.choice(sorted(bases))
        detail, data = (_flip_bits if mutation == "bitflip" else _truncate)(rng, bases[name])
        return f"{name}: {detail}", data
    if mutation == "huge_ihdr":
        name = rng.choice(_pngs())
        width, height = rng.choice(((100000, 100000), (100000, 100000), (2 ** 31 - 1, 1), (1, 2 ** 31 - 1),
                                    (65536, 65536), (30000, 30000), (2 ** 32 - 1, 2 ** 32 - 1), (0, 0)))
        return f"{name}: IHDR {width}x{height}", _with_ihdr(bases[name], width, height)
    if mutation == "ihdr_fields":
        name = rng.choice(_pngs())
        changes = rng.choice(({"depth": 16}, {"depth": 1}, {"depth": 7}, {"color": 3}, {"color": 4}, {"color": 0},
                              {"color": 5}, {"interlace": 1}, {"interlace": 2}, {"depth": 16, "color": 3}))
        return f"{name}: IHDR {changes}", _with_ihdr(bases[name], **changes)
    if mutation == "empty":
        return "zero-length", b""
    if mutation == "random_bytes":
        prefixes = {"nothing": b"", "png signature": b"\x89PNG\r\n\x1a\n", "png header": bases["small.png"][:33],
                    "jpeg": b"\xff\xd8\xff\xe0", "bmp": b"BM", "tiff": b"II*\x00", "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
                    "gif": b"GIF89a", "pnm": b"P6\n64 64\n255\n", "onnx": model_bases()["tiny"][:64]}
        return _random_bytes(rng, prefixes)
    if mutation == "png16":
        image = _random_image(rng, rng.choice((1, 3, 3, 4)), np.uint16)
        return f"16-bit PNG {image.shape}", _encode(".png", image)
    if mutation == "gray":
        image = _random_image(rng, 1, rng.choice((np.uint8, np.uint16)))
        return f"1-channel PNG {image.shape} {image.dtype}", _encode(".png", image)
    if mutation == "rgba":
        image = _random_image(rng, 4, rng.choice((np.uint8, np.uint16)))
        return f"4-channel PNG {image.shape} {image.dtype}", _encode(".png", image)
    # other formats and sample types OpenCV decodes
    ext, dtype, channels = rng.choice(((".jpg", np.uint8, 3), (".jpg", np.uint8, 1), (".bmp", np.uint8, 4),
                                       (".bmp", np.uint8, 1), (".webp", np.uint8, 4), (".pgm", np.uint16, 1),
                                       (".ppm", np.uint8, 3), (".tiff", np.uint16, 3), (".tiff", np.float32, 3),
                                       (".tiff", np.float32, 1), (".tiff", np.uint8, 4), (".exr-like-tiff", np.float32, 4)))
    image = _random_image(rng, channels, dtype)
    if ext == ".exr-like-tiff":
        ext = ".tiff"
        image = image.copy()
        image.flat[:: max(1, image.size // 7)] = rng.choice((np.nan, np.inf, -np.inf))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return f"{ext} {image.shape} {image.dtype}", _encode(ext, image)


# --- cases -----------------------------------------------------------------------------------

def make_case(seed: int, index: int) -> Case:
    """Case ``index`` of seed ``seed``; it depends on nothing else, so a single case can be replayed."""
    rng = random.Random(f"onnxcam-fuzz:{seed}:{index}")
    kind = "model" if rng.random() < 0.55 else "image"
    mutations = MODEL_MUTATIONS if kind == "model" else IMAGE_MUTATIONS
    mutation = rng.choices(mutations, [0.1 if m == "empty" else 1.0 for m in mutations])[0]  # b"" is one case
    detail, data = (_model_case if kind == "model" else _image_case)(rng, mutation)
    return Case(index, seed, kind, mutation, detail, data)


def cases(seed: int, count: int, start: int = 0) -> Iterator[Case]:
    """``count`` reproducible fuzz cases for ``seed`` (cases ``start`` .. ``start + count - 1``)."""
    for index in range(start, start + count):
        yield make_case(seed, index)


# --- running ---------------------------------------------------------------------------------

def _frame_text(frame: traceback.FrameSummary) -> str:
    path = Path(frame.filename)
    try:
        path = path.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return f"{path}:{frame.lineno} in {frame.name}"


def _execute(kind: str, data: bytes, state: dict) -> dict:
    import onnxcam

    start = time.perf_counter()
    try:
        if kind == "model":
            onnxcam.Explainer(data, provider="cpu").explain([str(DEMO_IMAGE)])
        else:
            if "explainer" not in state:
                state["explainer"] = onnxcam.Explainer(str(DEMO_MODEL), provider="cpu")
            state["explainer"].explain([data])
        result = {"outcome": "ok"}
    except onnxcam.OnnxCamError as exc:
        result = {"outcome": "refused", "error_type": type(exc).__name__, "message": str(exc)[:1000]}
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(PACKAGE_DIR)]
        result = {"outcome": "crash", "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}"
                  .removeprefix("builtins."), "message": str(exc)[:1000],
                  "frame": _frame_text(frames[-1]) if frames else "",
                  "onnxcam_frame": _frame_text(ours[-1]) if ours else ""}
    result["seconds"] = time.perf_counter() - start
    return result


def _worker_main(conn, memory_mb: int | None, log_path: str | None):
    """A worker: imports onnxcam, says it is ready, then runs (kind, bytes, timeout) messages until None.

    With ``log_path``, its stdout and stderr go to that file, emptied before each case, so that after
    a hard crash or a hang the parent can read the native library's last words and the Python
    frames that faulthandler wrote there.
    """
    import faulthandler

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    if log_path:  # libpng, ONNX Runtime and onnxcam's log lines would drown the report
        log = os.open(log_path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    faulthandler.enable()
    if memory_mb:
        import resource

        limit = memory_mb * 2 ** 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)
    from onnxcam import Explainer  # noqa: F401 - imported now, so that no case pays for the imports

    state: dict = {}
    conn.send("ready")
    while True:
        message = conn.recv()
        if message is None:
            return
        kind, data, timeout_s = message
        if log_path:
            os.ftruncate(2, 0)
            os.lseek(2, 0, os.SEEK_SET)
        faulthandler.dump_traceback_later(max(0.001, 0.9 * timeout_s))  # where a hang hangs
        result = _execute(kind, data, state)
        faulthandler.cancel_dump_traceback_later()
        conn.send(result)


_FAULT_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


def _last_words(log_path: str | None) -> tuple[str, str]:
    """(the native error line, the innermost onnxcam frame) from a dead or hung worker's log."""
    if not log_path:
        return "", ""
    try:
        with open(log_path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 20000))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return "", ""
    dump_at = max(text.rfind("Fatal Python error"), text.rfind("Timeout ("))
    before, dump = (text[:dump_at], text[dump_at:]) if dump_at >= 0 else (text, "")
    lines = [line.strip() for line in before.splitlines() if line.strip()]
    native = lines[-1][:300] if lines else ""
    for path, line, name in _FAULT_FRAME.findall(dump):  # most recent call first
        if Path(path).resolve().is_relative_to(PACKAGE_DIR):
            return native, f"{Path(path).resolve().relative_to(ROOT)}:{line} in {name}"
    return native, ""


def _worker_entry():
    """``python -c`` entry point of a worker: argv holds the socket's fd, the memory limit and the log path."""
    fd, memory_mb, log_path = int(sys.argv[1]), int(sys.argv[2]) or None, sys.argv[3] or None
    try:
        _worker_main(Connection(fd), memory_mb, log_path)
    except (EOFError, OSError):  # the parent went away
        pass


_BOOT = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import fuzz; fuzz._worker_entry()"


class _Worker:
    """A worker process (a fresh interpreter, whatever the parent's ``__main__``) and its socket."""

    def __init__(self, memory_mb, quiet):
        self.log_path = None
        if quiet:
            handle, self.log_path = tempfile.mkstemp(prefix="onnxcam-fuzz-", suffix=".log")
            os.close(handle)
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(memory_mb or 0), self.log_path or ""],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
        self.conn = Connection(ours.detach())
        self.ready = False
        self.case: Case | None = None
        self.deadline = time.monotonic() + 120  # for the start-up
        self.started = 0.0
        self.done = 0

    def send(self, case: Case, timeout_s: float):
        self.case, self.started = case, time.monotonic()
        self.deadline = self.started + timeout_s
        self.conn.send((case.kind, case.data, timeout_s))

    def death(self) -> str:
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            return "worker stopped answering"
        if code < 0:
            try:
                return f"worker killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"worker killed by signal {-code}"
        return f"worker exited with status {code}"

    def failure(self, outcome: str, message: str, now: float) -> Result:
        """A killed or timed-out case's result, with what the worker's log says about it."""
        native, frame = _last_words(self.log_path)
        return Result(self.case, outcome, message=message + (f": {native}" if native else ""),
                      onnxcam_frame=frame, seconds=now - self.started)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

    def stop(self, kill=False):
        if not kill and self.process.poll() is None:
            with contextlib.suppress(OSError, EOFError, subprocess.TimeoutExpired):
                self.conn.send(None)
                self.process.wait(2)
        self.kill()
        self.conn.close()
        if self.log_path:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)


def run_cases(cases_: Iterable[Case], timeout_s: float = 10.0, workers: int | None = None,
              memory_mb: int | None = 4096, quiet: bool = True, recycle_after: int = 2000,
              progress=None) -> list[Result]:
    """Run cases in ``workers`` processes (default: the CPU count), each under ``timeout_s`` seconds."""
    count = workers or max(1, min(os.cpu_count() or 1, 8))
    pending = iter(cases_)
    results: list[Result] = []
    pool = [_Worker(memory_mb, quiet) for _ in range(count)]
    exhausted = False

    def replace(worker: _Worker) -> _Worker:
        worker.stop(kill=True)
        fresh = _Worker(memory_mb, quiet)
        pool[pool.index(worker)] = fresh
        return fresh

    def finish(worker: _Worker, result: Result):
        results.append(result)
        worker.case = None
        worker.done += 1
        if progress:
            progress(result)

    try:
        while True:
            for worker in list(pool):  # give idle workers a case
                if worker.ready and worker.case is None and not exhausted:
                    if worker.done >= recycle_after:  # a fresh process now and then: leaks stay bounded
                        worker.stop()
                        replace(worker)
                        continue
                    case = next(pending, None)
                    if case is None:
                        exhausted = True
                        break
                    try:
                        worker.send(case, timeout_s)
                    except (OSError, EOFError):
                        finish(worker, worker.failure("killed", worker.death(), time.monotonic()))
                        replace(worker)
            busy = [w for w in pool if not w.ready or w.case is not None]
            if not busy:
                break
            now = time.monotonic()
            ready = wait([w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - now))
            now = time.monotonic()
            for worker in busy:
                answered = worker.conn in ready  # an answer, or the end of the stream: the worker died
                if answered:
                    try:
                        message = worker.conn.recv()
                    except (OSError, EOFError):
                        message = None
                    if not worker.ready and message == "ready":
                        worker.ready = True
                        continue
                    if isinstance(message, dict) and worker.case is not None:
                        finish(worker, Result(worker.case, **message))
                        continue
                if answered:  # died (or sent garbage)
                    if worker.case is None:
                        raise RuntimeError(f"a fuzz worker failed to start: {worker.death()}")
                    finish(worker, worker.failure("killed", worker.death(), now))
                    replace(worker)
                elif now >= worker.deadline:
                    if worker.case is None:
                        raise RuntimeError("a fuzz worker did not start within 120 s")
                    worker.kill()
                    finish(worker, worker.failure("timeout", f"no answer within {timeout_s:g} s", now))
                    replace(worker)
    finally:
        for worker in pool:
            worker.stop()
    results.sort(key=lambda r: r.case.id)
    return results


def run_case(case: Case, timeout_s: float = 10.0) -> Result:
    """Run one case in a fresh worker process (for replaying; use ``run_cases`` for many)."""
    return run_cases([case], timeout_s=timeout_s, workers=1)[0]


# --- reporting -------------------------------------------------------------------------------

def _normalise(message: str) -> str:
    text = re.sub(r"'[^'\n]{0,200}'", "'…'", message.splitlines()[0] if message else "")
    text = re.sub(r"\d+", "N", text)
    return text[:160]


def distinct_failures(results: Iterable[Result]) -> list[dict]:
    """Failures grouped by (outcome, type, onnxcam frame, message pattern); the largest groups first."""
    groups: dict[tuple, dict] = {}
    for result in results:
        if result.outcome not in FAILURES:
            continue
        if result.outcome == "crash":
            key = (result.outcome, result.error_type, result.onnxcam_frame or result.frame, _normalise(result.message))
        else:
            key = (result.outcome, _normalise(result.message), result.onnxcam_frame, result.case.label)
        group = groups.setdefault(key, {"outcome": result.outcome, "error_type": result.error_type,
                                        "message": result.message, "frame": result.frame,
                                        "onnxcam_frame": result.onnxcam_frame, "count": 0,
                                        "mutations": Counter(), "examples": []})
        group["count"] += 1
        group["mutations"][result.case.label] += 1
        if len(group["examples"]) < 3:
            group["examples"].append(f"#{result.case.id} ({result.case.label}: {result.case.detail[:90]})")
    return sorted(groups.values(), key=lambda g: (-g["count"], g["outcome"], g["error_type"]))


def format_failures(failures: list[dict], seed: int | None = None) -> str:
    lines = []
    for number, group in enumerate(failures, 1):
        mutations = ", ".join(f"{m} ×{n}" for m, n in group["mutations"].most_common())
        if group["outcome"] == "crash":
            message = group["message"].splitlines()[0][:300] if group["message"] else ""
            lines.append(f"[{number}] crash ×{group['count']}: {group['error_type']}: {message}")
            lines.append(f"    escaped from: {group['onnxcam_frame'] or '(no onnxcam frame)'}"
                         + (f"   (raised at {group['frame']})" if group["frame"] != group["onnxcam_frame"] else ""))
        else:
            lines.append(f"[{number}] {group['outcome']} ×{group['count']}: {group['message']}")
            if group["onnxcam_frame"]:
                lines.append(f"    in: {group['onnxcam_frame']}")
        lines.append(f"    mutations: {mutations}")
        lines.append(f"    e.g. {'; '.join(group['examples'])}")
    if failures and seed is not None:
        lines.append(f"replay a case: python scripts/fuzz.py --seed {seed} --only ID [--dump DIR]")
    return "\n".join(lines)


def summary(results: list[Result]) -> str:
    totals = Counter(r.outcome for r in results)
    lines = ["outcomes: " + ", ".join(f"{o} {totals.get(o, 0)}" for o in OUTCOMES), "",
             f"{'mutation':26s}" + "".join(f"{o:>9s}" for o in OUTCOMES)]
    per: dict[str, Counter] = defaultdict(Counter)
    for result in results:
        per[result.case.label][result.outcome] += 1
    for label in sorted(per):
        lines.append(f"{label:26s}" + "".join(f"{per[label].get(o, 0):9d}" for o in OUTCOMES))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="index of the first case")
    parser.add_argument("--only", default="", help="comma-separated case ids to run (instead of --cases)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case (default 10)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count, ≤ 8)")
    parser.add_argument("--memory-mb", type=int, default=4096, help="address-space limit per worker; 0: none")
    parser.add_argument("--verbose", action="store_true", help="keep the workers' stderr (library log lines)")
    parser.add_argument("--dump", type=Path, default=None, help="write the failing cases' bytes into this folder")
    parser.add_argument("--show-refusals", action="store_true", help="also list the distinct OnnxCamError messages")
    args = parser.parse_args(argv)

    if args.only:
        todo = [make_case(args.seed, int(i)) for i in args.only.split(",") if i.strip()]
    else:
        todo = cases(args.seed, args.cases, args.start)
    start = time.perf_counter()
    results = run_cases(todo, timeout_s=args.timeout, workers=args.workers, memory_mb=args.memory_mb or None,
                        quiet=not args.verbose)
    elapsed = time.perf_counter() - start
    print(f"{len(results)} cases, seed {args.seed}, {elapsed:.1f} s")
    print(summary(results))
    if args.only:
        for result in results:
            print(f"\n#{result.case.id} {result.case.label}: {result.case.detail}\n  -> {result.outcome}"
                  f" {result.error_type}: {result.message[:500]}\n  {result.onnxcam_frame}  {result.frame}")
    if args.show_refusals:
        refusals = Counter((r.error_type, _normalise(r.message)) for r in results if r.outcome == "refused")
        print("\nrefusals:")
        for (kind, message), n in refusals.most_common():
            print(f"  {n:6d}  {kind}: {message}")
    failures = distinct_failures(results)
    print(f"\n{len(failures)} distinct failure(s)" + (":" if failures else ""))
    if failures:
        print(format_failures(failures, args.seed))
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        for result in results:
            if result.outcome in FAILURES:
                suffix = ".onnx" if result.case.kind == "model" else ".img"
                (args.dump / f"{args.seed}-{result.case.id}-{result.case.mutation}{suffix}").write_bytes(result.case.data)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
