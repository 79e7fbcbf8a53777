"""The OpenVINO backend: the explain model compiled by the ``openvino`` runtime (``pip install 'onnxcam[openvino]'``).

OpenVINO reads the explain model's ONNX directly, but folds inputs that have default initializers
into constants, so the session is built from the required-inputs form (``target`` and
``target_weights`` as plain inputs, always fed by :class:`onnxcam.Explainer`). It computes in f32:
on CPUs with bf16 units OpenVINO would otherwise default to bf16, which moves maps by ~0.04.
"""

from __future__ import annotations

import logging
import threading

import onnx

from onnxcam import contract
from onnxcam.errors import CancelledError, ModelError, OnnxCamError

__all__ = ["OpenVinoSession", "required_form", "openvino_problem"]

log = logging.getLogger(__name__)

_FOLDED = (contract.TARGET, contract.TARGET_WEIGHTS)
STATIC_SHAPES = 2  # feed shape sets a session compiles a model of its own for (a run's batch, its last one)
_core, _core_lock = None, threading.Lock()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


def _compile_failure(exc: Exception) -> str:
    """What an OpenVINO compile report says went wrong: its lines past the source locations it starts
    with ("Exception from src/inference/src/cpp/core.cpp:132:", "Check 'false' failed at ..."), the
    ops it has no conversion rule for where it names them."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return next((line for line in said if line.startswith("No conversion rule")), said[-1] if said else _first_line(exc))[:400]


def openvino_problem() -> str | None:
    """Why OpenVINO cannot be used here, or ``None``."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed; pip install 'onnxcam[openvino]'"
    return None


def _shared_core():
    """The one ``openvino.Core`` every session compiles with, kept for the life of the process.

    Each Core makes its own CPU plugin, and each plugin installs a signal stack of its own on the
    thread that first compiles (sigaltstack), unmapping it when the plugin goes and restoring the
    previous one only if its own is still current. Plugins released other than last-in first-out
    (a box explainer's sessions, when it is collected) leave the thread on an unmapped stack: the
    older plugin unmaps its stack, which the younger one then restores as the previous one (gdb on
    OpenVINO 2026.4.1). The next signal (a Ctrl-C) then kills the process with
    SIGSEGV. One plugin never goes.
    """
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def required_form(model_bytes: bytes) -> bytes:
    """The model as OpenVINO compiles it right: without default initializers for ``target``/
    ``target_weights``, and with the backward pass's convolutions reading weights of their own."""
    model = onnx.load_from_string(model_bytes)
    defaults = [t for t in model.graph.initializer if t.name in _FOLDED]
    for tensor in defaults:
        model.graph.initializer.remove(tensor)
    if not (_unshare_backward_weights(model.graph) or defaults):
        return model_bytes
    return model.SerializeToString()


def _unshare_backward_weights(graph: onnx.GraphProto) -> int:
    """Give the backward pass's Conv/ConvTranspose nodes their own copy of a weight the forward pass's
    nodes read too (in place); returns the copies made.

    OpenVINO 2026.4 computes a backward ConvTranspose wrongly when its weight initializer is shared
    with a forward Conv: ResNet-50's maps at layer2 were off by 0.3, and 2e-6 from ONNX Runtime's
    once each node read a copy (scripts/bench_openvino_ep.py). The copies cost those weights twice.
    """
    initializers = {t.name: t for t in graph.initializer}
    forward = {name for node in graph.node if not node.name.startswith("onnxcam/") for name in node.input}
    copies: dict[str, str] = {}
    for node in graph.node:
        if not node.name.startswith("onnxcam/") or node.op_type not in ("Conv", "ConvTranspose"):
            continue
        for i, name in enumerate(node.input):
            if name in initializers and name in forward:
                if name not in copies:
                    copy = onnx.TensorProto()
                    copy.CopyFrom(initializers[name])
                    copy.name = copies[name] = f"onnxcam/backward_copy/{name}"
                    graph.initializer.append(copy)
                node.input[i] = copies[name]
    return len(copies)


class OpenVinoSession:
    """A compiled OpenVINO model with :class:`onnxcam.runtime.Session`'s interface (``run``, ``cancel``)."""

    provider = "openvino"

    def __init__(self, model_bytes: bytes, threads: int | None = None, announce: bool = True):
        problem = openvino_problem()
        if problem:
            raise OnnxCamError(problem)
        import openvino as ov

        core = _shared_core()
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._model = core.read_model(required_form(model_bytes), b"")
            compiled = core.compile_model(self._model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line report
            raise ModelError(f"OpenVINO cannot compile the model: {_compile_failure(exc)}; run it on ONNX Runtime "
                             "(--provider cpu or cuda)") from None
        self._config, self._dynamic = config, compiled
        self._static: dict[tuple, object] = {}  # feed shapes -> the model compiled for them
        self._static_lock = threading.Lock()
        self._requests = threading.local()  # an InferRequest serves one thread at a time
        self._outputs = {name: i for i, port in enumerate(compiled.outputs) for name in port.get_names()}
        self._all = [port.get_any_name() for port in compiled.outputs]
        self._inputs = {name for port in compiled.inputs for name in port.get_names()}
        self._cancelled = False
        self.reason = f"OpenVINO {ov.get_version().split('-')[0]}, f32"
        (log.info if announce else log.debug)("OpenVINO backend: CPU (%s)", self.reason)

    def run(self, output_names, feeds):
        if self._cancelled:
            raise CancelledError("the run was cancelled")
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        shapes = tuple(sorted((name, tuple(value.shape)) for name, value in feeds.items()))
        compiled = self._compiled_for(shapes)
        requests = self._requests.__dict__.setdefault("by_shapes", {})  # the shapes fix the compiled model
        request = requests.get(shapes) or requests.setdefault(shapes, compiled.create_infer_request())
        results = request.infer(feeds, share_inputs=True)  # synchronous: the arrays outlive the call
        if self._cancelled:
            raise CancelledError("the run was cancelled")
        return [results[self._outputs[name]].copy() for name in (output_names or self._all)]

    def _compiled_for(self, shapes: tuple):
        """The model compiled for these feed shapes (the first STATIC_SHAPES sets seen), else the dynamic one.

        With dynamic shapes OpenVINO runs the map's tail (resize, normalisation) op by op and infers
        shapes on every call: MobileNetV2's last-layer explanation cost 1.38x its plain inference at
        batch 8 and 1.62x at batch 1 (timed on OpenVINO alone); compiled for the batch's shapes,
        1.16x and 1.17x, compiling in 0.1 s."""
        compiled = self._static.get(shapes)
        if compiled is None:
            with self._static_lock:
                compiled = self._static.get(shapes)
                if compiled is None and len(self._static) < STATIC_SHAPES:
                    compiled = self._static[shapes] = self._compile_static(dict(shapes))
        return compiled or self._dynamic

    def _compile_static(self, shapes: dict):
        if not self._model.is_dynamic():
            return self._dynamic
        model = self._model.clone()
        try:
            model.reshape({port: shapes[name] for port in model.inputs for name in port.get_names() if name in shapes})
            return _shared_core().compile_model(model, "CPU", self._config)
        except Exception as exc:  # a model whose shapes do not follow its inputs: keep the dynamic one
            log.debug("OpenVINO: no model compiled for shapes %s (%s)", shapes, _first_line(exc))
            return self._dynamic

    def cancel(self) -> None:
        """Later runs fail at once; a run in flight finishes first (OpenVINO cannot stop a synchronous one)."""
        self._cancelled = True
