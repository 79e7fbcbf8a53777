"""The Python API: ``Explainer(model).explain(images)`` → CAMs, targets and scores.

An explainer exports the explain model once (or takes one already exported), builds its ONNX
Runtime session once, and is safe to call from several threads (ORT sessions are).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxcam import contract
from onnxcam.contract import Contract, is_explain_model
from onnxcam.detection.head import Head, score_and_box_columns
from onnxcam.errors import InputError, ModelError, OnnxCamError, TargetError
from onnxcam.exporter import export
from onnxcam.graph import GraphView, fed_inputs, load_model, size_options
from onnxcam.io.files import write_atomically
from onnxcam.io.held_weights import hold_weights
from onnxcam.io.images import (DEFAULT_MAX_PIXELS, decode_image, model_class_names, model_dictionary, read_labels,
                               resolve_preprocess, to_bgr8, unfit_class_names)
from onnxcam.io.records import same_greedy_text
from onnxcam.layers import native_array, nchw_array
from onnxcam.methods import AUTO, get_method, resolve_method
from onnxcam.methods.multipass import RunContext, RunOptions, auto_passes_batch, finish_maps, padded_chunks
from onnxcam.plan import MAX_SIDE
from onnxcam.quantized import Agreement, Predictions, check_first_batch
from onnxcam.runtime import check_single_runtime, memory_budget, model_session, runtime_message
from onnxcam.targets import requests

__all__ = ["Explainer", "Explanation", "load_explain_model"]

log = logging.getLogger(__name__)


@dataclass
class Explanation:
    """The result of one ``explain`` call, one entry per sample. With ``explain(..., device_outputs=True)``
    ``cam`` and ``outputs`` hold ``onnxruntime.OrtValue``s where the session computed them (GPU memory
    on CUDA): ``.numpy()`` copies one to the host, ``torch.from_dlpack(value)`` shares it."""

    cam: np.ndarray | ort.OrtValue  # (N, H, W) float32 in [0, 1], at the model's input size
    target: np.ndarray  # (N,) int64: the task's index explained (class, unit, time step); -1 where none
    scores: np.ndarray  # (N,) float32: the score that was differentiated
    outputs: dict[str, np.ndarray | ort.OrtValue]  # the model's own outputs (e.g. logits)
    layer: str
    method: str
    provider: str
    images: list[np.ndarray] | None = field(default=None, repr=False)  # decoded BGR originals, if given
    task: str = "classification"
    target_description: str = ""  # what was explained, in words
    finite: np.ndarray | None = None  # (N,) bool: the score and the map are finite (else the map is all 0); device maps: the score
    all_zero: np.ndarray | None = None  # (N,) bool: the map is all zero (no positive evidence at the layer); None for device maps


def zero_non_finite(cam: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(maps, finite): the samples whose score or map is not finite get an all-zero map (the README
    promises [0, 1]); a copy only where some do. NaN and ±inf carry through a map's sum, which no
    finite float32 map overflows in float64."""
    sums = cam.sum(axis=tuple(range(1, cam.ndim)), dtype=np.float64)
    finite = np.isfinite(np.asarray(scores, np.float64)) & np.isfinite(sums)
    if not finite.all():
        cam = cam.copy()
        cam[~finite] = 0.0
    return cam, finite


def _checked_maps(cam: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps with non-finite samples zeroed (:func:`zero_non_finite`); which were finite, which are all 0."""
    cam, finite = zero_non_finite(cam, scores)
    if not finite.all():
        log.warning("the score or map of %d image(s) is not finite (NaN or infinite); their maps are set to 0",
                    int((~finite).sum()))
    all_zero = ~cam.reshape(len(cam), -1).any(axis=1)
    return cam, finite, all_zero


MAX_FIXED_BATCH = 4096


def _checked_input_shape(name: str, shape) -> tuple:
    """The image input's shape, refused when its fixed dims cannot be fed (0, negative, absurdly large)."""
    if shape is None or len(shape) != 4:
        raise ModelError(f"the image input '{name}' has shape {shape}; onnxcam feeds 4-D image batches")
    batch, rest = shape[0], shape[1:]
    if batch is not None and not 1 <= batch <= MAX_FIXED_BATCH:
        raise ModelError(f"the image input '{name}' has its batch fixed at {batch}; onnxcam feeds batches of "
                         f"1..{MAX_FIXED_BATCH} (re-export the model with a dynamic or smaller batch)")
    bad = [d for d in rest if d is not None and not 1 <= d <= MAX_SIDE]
    if bad:
        raise ModelError(f"the image input '{name}' has shape {shape}, with a dim of {bad[0]}; image dims must be "
                         f"1..{MAX_SIDE} (fix them with --input-shape)")
    return tuple(shape)


def _input_shape_from_size(model: onnx.ModelProto, size) -> list[int] | None:
    """A model whose image input has dynamic height and width explained at the pre-processing size:
    its input shape fixed to it, so that every layer's shape is known."""
    shape = _shape_at_size(model, size) if size else None
    if shape:
        log.info("fixing the input's size at %dx%d, the pre-processing size (--input-shape %s)", *size,
                 "x".join(map(str, shape)))
    return shape


def _shape_at_size(model: onnx.ModelProto, size) -> list[int] | None:
    """(1, C, H, W) or (1, H, W, C) at ``size`` for an image input whose height and width alone are
    dynamic; ``None`` for any other input (a size cannot fix it)."""
    inputs = fed_inputs(model)
    static = inputs[0][1] if len(inputs) == 1 else ()
    if len(static) != 4:
        return None
    height, width = size
    if static[1] in (1, 3, 4) and static[2] is None and static[3] is None:
        return [1, static[1], height, width]
    if static[3] in (1, 3, 4) and static[1] is None and static[2] is None:
        return [1, height, width, static[3]]
    return None


def load_explain_model(path) -> onnx.ModelProto:
    """Load an explain model written by ``onnxcam export`` (errors if it is a plain model)."""
    model = load_model(path)
    if not is_explain_model(model):
        raise OnnxCamError(f"'{path}' is not an onnxcam explain model; export it first: onnxcam export MODEL -o OUT.cam.onnx")
    return model


_EXPORT_OPTIONS = ("score", "layout", "input_shape", "output", "task", "fuse", "threshold", "blank", "background")


class Explainer:
    """Explains a model's decisions with a CAM method computed inside the ONNX graph.

    ``model`` is a path, serialized bytes or a ModelProto — a plain model (exported in memory
    with ``layer``, ``method`` and the export options ``task``, ``score``, ``layout``,
    ``input_shape``, ``output``, ``fuse``, ``threshold``, ``blank``, ``background``; see
    :func:`onnxcam.export`) or an explain model.
    ``provider`` is "auto" (CUDA when usable, else CPU), "cpu", "cuda" or "openvino" (the OpenVINO runtime).
    ``preprocess`` (a :class:`Preprocess`, a preset name or a dict) applies to images given as
    paths or bytes; by default the sidecar JSON beside the model, else the ``imagenet`` preset.
    ``layer`` may be a list of layers: their maps are fused by ``fuse`` ("mean" or "max").
    Multi-pass methods (Ablation-CAM, Score-CAM, Smooth Grad-CAM++, Integrated Grad-CAM) run their
    extra passes here, with ``passes_batch`` images per ONNX Runtime call ("auto": as many as fit a
    memory budget, judged from the explain model's tensor sizes); their other options are
    :class:`RunOptions` fields given as keyword arguments: ``scorecam_topk``; ``samples``, ``noise``,
    ``seed`` (Smooth Grad-CAM++); ``steps``, ``baseline`` (Integrated Grad-CAM).
    ``io_binding``: "auto" runs CUDA sessions through ONNX Runtime's IO binding (pinned uploads, one
    stream per session), True the CPU's too, False none; ``cuda_options`` are CUDA execution provider
    options laid over onnxcam's (e.g. ``{"device_id": 1}``, ``{"use_tf32": 0}`` for FP32 convolutions).
    ``explainer.labels`` are the labels file's (``preprocess``), else the model's own from its metadata
    (``labels_in_model`` then): a sequence model's CTC dictionary (``character``, as paddle2onnx writes
    PaddleOCR's), or a classifier's, segmenter's or detector's class names, one per class (ultralytics'
    ``names``, or a ``character`` list).
    ``explainer.model`` is the explain model's graph; its weights wait in a temporary data file
    that the sessions read (:meth:`full_model` and :meth:`save` give the complete model).
    """

    def __init__(self, model, layer: str | list[str] = "auto", method: str = AUTO, provider: str = "auto",
                 preprocess=None, threads: int | None = None, passes_batch: int | str = "auto",
                 max_pixels: int = DEFAULT_MAX_PIXELS, io_binding: bool | str = "auto", cuda_options: dict | None = None,
                 **options):
        warning = check_single_runtime()
        if warning:
            log.warning(warning)
        path = model if isinstance(model, (str, Path)) else None
        export_options = {k: options.pop(k) for k in _EXPORT_OPTIONS if k in options}
        run_options = self._checked_options(passes_batch, options)
        # "auto" is in-graph, unless gradients reach no layer: the export then picks a gradient-free method
        chosen = get_method(resolve_method(method, ""))
        self.preprocess = resolve_preprocess(path, preprocess)
        proto = load_model(model)
        self._quantized = None  # an integer-op model exported here: checked against its twin on the first batch
        self._twin_lock = threading.Lock()  # one first batch takes the quantised model, even from several threads
        if is_explain_model(proto):
            self._check_matches(proto, layer, method)
            self.export_seconds = 0.0
        else:
            expose = [] if chosen.in_graph else [contract.ACTIVATIONS, *([contract.GRADIENTS] if chosen.needs_gradients else [])]
            if not export_options.get("input_shape"):
                export_options["input_shape"] = _input_shape_from_size(proto, self.preprocess.size)
            fixes = "--size HxW or --input-shape" if _shape_at_size(proto, (1, 1)) else "--input-shape"
            with size_options(fixes):
                exported = export(proto, layer=layer, method=method, expose=expose, for_runtime=not chosen.in_graph,
                                  runtime_fallback=True, **export_options)
            proto, self.export_seconds, self._quantized = exported.model, exported.seconds, exported.quantized
        self._twin_checkable = self._quantized is not None
        self.model = proto
        self.contract = Contract.read(proto)
        self.twin_check: Agreement | None = None  # the quantised model vs its twin on the first batch
        self.task = self.contract.task
        self.layer = self.contract.layer
        self.method = self.contract.method
        self.layout = self.contract.input_layout
        self.input_name = self.contract.input
        view = GraphView(proto, complete=False)  # the interface and the sizes the runs need
        self.input_shape = _checked_input_shape(self.input_name, view.shape(self.input_name))
        self.score_shape = self.contract.score_dims
        self.num_classes = self.score_shape[-1] if self.task in ("classification", "regression") else \
            self.score_shape[1] if self.task == "segmentation" else None
        own = (*contract.RESERVED_NAMES,)
        self.model_outputs = [o for o in view.graph_outputs if o not in own]
        self.exposed = [o for o in contract.EXPOSABLE if o in view.graph_outputs]
        self._method = get_method(self.method)
        self._cam_outputs = [o for o in (*contract.CAM_OUTPUTS, contract.CAM_WEIGHTS) if o in view.graph_outputs]
        self._weights_dtype = np.dtype(view.np_dtype(contract.TARGET_WEIGHTS))
        self._input_dtype = np.dtype(view.np_dtype(self.input_name))  # float16 for a half-precision model
        self._view = view
        self._extra_sessions: dict = {}
        self._box_plan = None  # detection: how per-box maps are computed, and what they are fed (detection.explain)
        self._cancelled = False
        self._provider_request, self._threads = provider, threads
        self._binding = {"io_binding": io_binding, "cuda_options": cuda_options}
        if not self._method.in_graph and contract.ACTIVATIONS not in self.exposed:
            raise OnnxCamError(f"method '{self.method}' needs the layer's activations, which this explain model does not output")
        self.max_pixels = int(max_pixels)
        self.labels, self.labels_in_model = self._labels()
        self._held_weights = None if provider == "openvino" else hold_weights(proto)  # OpenVINO reads the model's bytes
        self._session = self._new_session(proto, announce=True)
        self.provider = self._session.provider
        self.provider_reason = self._session.reason
        self.run_options = replace(run_options, passes_batch=self._passes_batch(passes_batch))
        if not self._method.in_graph:
            log.info("%s costs %s per image; %d run per ONNX Runtime call (passes_batch)",
                     self._method.title, self._method.passes, self.run_options.passes_batch)

    def _labels(self) -> tuple[list[str] | None, bool]:
        """The labels file's (``preprocess.labels``), else the model's own from its metadata: a recogniser's
        dictionary, or one name per class; and whether they are the model's."""
        if self.preprocess.labels:
            return read_labels(self.preprocess.labels), False
        if self.task == "sequence":
            own = model_dictionary(self.model)
            return own, own is not None
        classes = self._class_count()
        found = model_class_names(self.model, classes)
        if found is None:
            unfit = unfit_class_names(self.model, classes)
            if unfit:
                log.warning("the model's metadata names no class: %s; the records number the classes (give their "
                            "names with --labels FILE)", unfit)
            return None, False
        names, key = found
        log.info("class names from the model's metadata ('%s'): %d classes (--labels FILE replaces them)", key,
                 len(names))
        return names, True

    def _class_count(self) -> int | None:
        if self.task == "detection":
            return self.detection_head.classes if self.detection_head is not None else None
        return self.num_classes if self.task in ("classification", "segmentation") else None

    @functools.cached_property
    def detection_head(self) -> Head | None:
        """A detector's head, as its explain model describes it (``None`` for other tasks)."""
        return Head.from_json(self.contract.detection)

    @staticmethod
    def _checked_options(passes_batch, options: dict) -> RunOptions:
        """The multi-pass options, checked before any export ("auto" ``passes_batch`` is resolved later)."""
        fields = set(RunOptions.__dataclass_fields__) - {"passes_batch"}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise OnnxCamError(f"unknown option(s) {', '.join(unknown)}; the export options are "
                               f"{', '.join(_EXPORT_OPTIONS)}, the multi-pass options passes_batch, "
                               f"{', '.join(sorted(fields))}")
        if isinstance(passes_batch, str) and passes_batch != "auto":
            raise OnnxCamError(f"passes_batch must be a number of images or 'auto', got '{passes_batch}'")
        return RunOptions(**options, **({} if passes_batch == "auto" else {"passes_batch": passes_batch}))

    def _passes_batch(self, requested: int | str) -> int:
        """``requested``, or for "auto" as many images as fit the memory budget (by the explain model's tensors)."""
        if requested != "auto":
            return requested
        return auto_passes_batch(self._view.bytes_per_sample(), memory_budget(self.provider))

    @staticmethod
    def _check_matches(proto, layer, method):
        meta = Contract.read(proto)
        if layer is not None and not isinstance(layer, str):
            layer = ",".join(layer)
        if layer not in (None, "", "auto") and layer != meta.layer:
            raise OnnxCamError(f"this explain model was exported for layer '{meta.layer}', not '{layer}'; export it again")
        if method not in (AUTO, meta.method):
            raise OnnxCamError(f"this explain model was exported for method '{meta.method}', not '{method}'; export it again")

    # --- inputs ----------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int] | None:
        """The model input's (height, width), if static."""
        hw = self.input_shape[2:4] if self.layout == "NCHW" else self.input_shape[1:3]
        return None if None in hw else tuple(hw)

    @property
    def input_channels(self) -> int | None:
        return self.input_shape[1] if self.layout == "NCHW" else self.input_shape[3]

    def _image_size(self) -> tuple[int, int]:
        size = self.preprocess.size or self.input_size
        if size is None:
            raise InputError("the model's input size is dynamic; give one (sidecar 'size', --size HxW, or Preprocess(size=...))")
        if self.input_size and tuple(size) != tuple(self.input_size):
            raise InputError(f"pre-processing size {'x'.join(map(str, size))} differs from the model's input size "
                             f"{'x'.join(map(str, self.input_size))}; give the model's size (--size HxW, the sidecar's "
                             "'size' or Preprocess(size=...)), or fix the model's to yours with --input-shape")
        return tuple(size)

    def decode(self, item) -> np.ndarray:
        """One image as a BGR uint8 (H, W, 3) array: a path or encoded bytes decoded, an array checked."""
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (3, 4)) \
                    or 0 in item.shape:
                raise InputError(f"an image array must be BGR uint8 (H, W, 3) (or grey (H, W), BGRA (H, W, 4)); got "
                                 f"{item.dtype} {item.shape}")
            if item.size > self.max_pixels * 4:
                raise InputError(f"an image array of {item.shape[1]}x{item.shape[0]} pixels is over the limit of "
                                 f"{self.max_pixels / 1e6:.0f} MP; raise max_pixels if you mean it")
            return to_bgr8(item)
        return decode_image(item, self.max_pixels)

    def prepare(self, images) -> tuple[np.ndarray, list[np.ndarray]]:
        """Decode paths/bytes (or take BGR arrays) and build the input batch."""
        decoded = [self.decode(item) for item in images]
        if not decoded:
            raise InputError("no images given; pass at least one path, encoded image or array")
        return self.preprocess.batch(decoded, self._image_size(), self.layout, self.input_channels), decoded

    def _as_batch(self, inputs) -> tuple[np.ndarray, list[np.ndarray] | None]:
        if isinstance(inputs, np.ndarray) and inputs.dtype != np.uint8:
            batch = inputs[None] if inputs.ndim == len(self.input_shape) - 1 else inputs
            self._check_batch(batch)
            return np.ascontiguousarray(batch, dtype=np.float32), None
        if isinstance(inputs, (str, Path, bytes, bytearray, memoryview)) or (
            isinstance(inputs, np.ndarray) and inputs.dtype == np.uint8
        ):
            inputs = [inputs]
        return self.prepare(list(inputs))

    def _check_batch(self, batch: np.ndarray) -> None:
        expected = self.input_shape
        if batch.ndim != len(expected) or any(e is not None and e != d for e, d in zip(expected[1:], batch.shape[1:])):
            raise InputError(f"input batch has shape {batch.shape}; the model expects {expected} (None = any)")

    def check_target(self, target) -> None:
        """Raise ``TargetError`` unless ``target`` is a valid index for the task (or -1 for its default)."""
        self._targets(target, 1)

    def _targets(self, target, n: int) -> np.ndarray:
        if target is None:
            return np.full(n, -1, dtype=np.int64)
        values = np.atleast_1d(np.asarray(target))
        if values.dtype.kind not in "iu":
            raise TargetError(f"target must be integer indices, got {target!r}")
        if values.size == 1:
            values = np.full(n, int(values[0]))
        if values.size != n:
            raise TargetError(f"got {values.size} targets for {n} samples; give one per sample, or one for all")
        self._check_indices(values)
        return values.astype(np.int64)

    def _check_indices(self, values: np.ndarray) -> None:
        """Indices must exist in the score tensor: a class, an output unit, a time step."""
        what, count = {
            "classification": ("classes", self.num_classes), "segmentation": ("classes", self.num_classes),
            "regression": ("output units", self.num_classes), "sequence": ("time steps", self.score_shape[1]),
            "detection": ("anchors", None),
            "dense": (None, None) if self.score_shape[1] == 1 else ("channels", self.score_shape[1]),
        }.get(self.task, (None, None))
        if what is None:
            if np.any(values >= 0):
                raise TargetError(f"task {self.task} takes no target index; use a region, mask or reference instead")
            return
        bad = [int(v) for v in values if v < -1 or (count is not None and v >= count)]
        if bad:
            span = f"0..{count - 1}; " if count else ""
            raise TargetError(f"target {bad[0]} is out of range: the model has {count or 'an unknown number of'} "
                              f"{what} ({span}-1 = the default)")

    def target_weights(self, n: int, *, region=None, mask=None, reference=None, weights=None) -> np.ndarray:
        """The ``target_weights`` feed for ``n`` samples: NaN (the task's default) unless a region, a mask
        (of the model input's size), a reference embedding or explicit weights say otherwise."""
        given = [name for name, value in (("region", region), ("mask", mask), ("reference", reference),
                                          ("target_weights", weights)) if value is not None]
        if len(given) > 1:
            raise TargetError(f"give one of region, mask, reference and target_weights, not {' and '.join(given)}")
        dims = self.score_shape
        if weights is not None:
            return requests.check_weights(weights, dims, n, self._weights_dtype)
        if region is not None or mask is not None:
            input_hw = self._image_size()
            wanted = requests.region_mask(region, input_hw) if region is not None else mask
            if None in dims[2:4] or len(dims) != 4:
                raise TargetError(f"a region or mask needs a (N, C, H, W) score of known size; task {self.task}'s is "
                                  f"{self.contract.score_shape}")
            grid = requests.resize_mask(wanted, input_hw, dims[2:4])
            return requests.region_weights(self.task, grid, n, self._weights_dtype, channels=dims[1])
        if reference is not None:
            if self.task != "embedding":
                raise TargetError(f"a reference is for embedding models, and this one's task is {self.task}")
            return requests.reference_weights(self._reference_vector(reference), dims[1], n, self._weights_dtype)
        if self.task == "embedding":
            log.warning("the embedding task explains the similarity to a reference, and none was given; "
                        "the maps are zero (pass reference=IMAGE or a vector; --reference on the command line)")
        return np.full([1] * len(dims), np.nan, dtype=self._weights_dtype)

    def _reference_vector(self, reference) -> np.ndarray:
        """A reference embedding: a vector as given, or the model's own output for an image."""
        if isinstance(reference, np.ndarray) and reference.dtype != np.uint8 and reference.ndim <= 2:
            return reference
        batch, _ = self._as_batch(reference)
        if batch.shape[0] != 1:
            raise TargetError(f"give one reference image, not {batch.shape[0]}")
        output = self.contract.output
        return self._session.run([output], self._feeds(batch, np.full(1, -1, np.int64),
                                                       self.target_weights(1, weights=np.zeros(self.score_shape[1]))))[0]

    def _feeds(self, batch: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {self.input_name: np.ascontiguousarray(batch, dtype=self._input_dtype), contract.TARGET: targets,
                contract.TARGET_WEIGHTS: weights}

    # --- running -----------------------------------------------------------------------------
    def explain(self, inputs, target=None, *, region=None, mask=None, reference=None,
                target_weights=None, device_outputs: bool = False) -> Explanation:
        """Explain a preprocessed float batch, or images (paths, encoded bytes, BGR uint8 arrays).

        ``target``: None (the task's default per sample), one index for all, or one per sample
        (-1 = the default): a class (classification, segmentation), an output unit (regression),
        a time step (sequence). ``region`` (x0, y0, x1, y1 in the model input's pixels) or ``mask``
        (an array of the model input's size) narrow dense and segmentation targets; ``reference``
        (an image or a vector) is an embedding model's reference; ``target_weights`` is the score
        weighting itself (broadcastable to the batch-first score tensor; NaN = the default there).

        ``device_outputs=True`` leaves ``cam`` and the model's outputs where the session computed them,
        as ``onnxruntime.OrtValue``s (GPU memory on CUDA, host memory on the CPU; ``target`` and
        ``scores`` still come as arrays). It is for in-graph methods, in one ONNX Runtime call (a model
        whose batch is fixed takes exactly that many images). The maps are not read on the host, so
        ``finite`` flags the scores only, ``all_zero`` is None, and a non-finite map is not zeroed.
        """
        if device_outputs:
            self._check_device_outputs()
        batch, decoded = self._as_batch(inputs)
        n = batch.shape[0]
        targets = self._targets(target, n)
        weights = self.target_weights(n, region=region, mask=mask, reference=reference, weights=target_weights)
        names = [*self._cam_outputs, *self.model_outputs, *self.exposed]
        kept = [contract.CAM, *self.model_outputs, *self.exposed] if device_outputs else []
        result = self._run_fixed_batches(names, batch, targets, weights, kept)
        outputs = {name: result[name] for name in [*self.model_outputs, *self.exposed]}
        if device_outputs:
            cam, finite, all_zero = result[contract.CAM], np.isfinite(result[contract.CAM_SCORE].astype(np.float64)), None
        else:
            cam = result[contract.CAM] if self._method.in_graph else self._run_passes(batch, result)
            cam, finite, all_zero = _checked_maps(cam, result[contract.CAM_SCORE])
        described = self._describe(target, region, mask, reference, target_weights)
        return Explanation(cam, result[contract.CAM_TARGET], result[contract.CAM_SCORE], outputs,
                           self.layer, self.method, self.provider, decoded, self.task, described, finite, all_zero)

    def _check_device_outputs(self) -> None:
        if self.provider == "openvino":
            raise OnnxCamError("device_outputs=True needs ONNX Runtime's IO binding; the OpenVINO backend returns "
                               "arrays (use provider 'cuda' or 'cpu')")
        if not self._method.in_graph:
            raise OnnxCamError(f"device_outputs=True is for in-graph methods; {self.method} computes its maps in "
                               "NumPy on the host")

    def _run_fixed_batches(self, names, batch, targets, weights, device_outputs=()) -> dict[str, np.ndarray]:
        """One ORT call; for a model whose batch size is fixed at B, calls of B images (the last padded
        with copies of its last image), the results cut back to the images given. ``device_outputs``
        (names left on the device) need one call."""
        fixed = self.input_shape[0]
        n = batch.shape[0]
        if fixed is None or fixed == n:
            return dict(zip(names, self._run_session(names, batch, targets, weights, device_outputs)))
        if device_outputs:
            raise InputError(f"device_outputs=True needs one ONNX Runtime call, and this model's batch is fixed at "
                             f"{fixed}: give {fixed} images at a time, not {n}")
        per_sample_weights = weights.shape[0] == n and n > 1
        parts = []
        for _, _, rows in padded_chunks(n, fixed):
            chunk_weights = weights[rows] if per_sample_weights else weights
            chunk_targets = targets[rows] if targets.size == n else targets
            parts.append(self._run_session(names, batch[rows], chunk_targets, chunk_weights))
        joined = {}
        for i, name in enumerate(names):
            axis = self.contract.score_batch_axis if name in self.model_outputs and name == self.contract.output else 0
            joined[name] = np.concatenate([p[i] for p in parts], axis=axis).take(np.arange(n), axis=axis)
        return joined

    def _run_session(self, names, batch, targets, weights, device_outputs=()):
        feeds = self._feeds(batch, targets, weights)
        try:
            values = self._session.run(names, feeds, device_outputs) if device_outputs else self._session.run(names, feeds)
        except OnnxCamError:
            raise
        except Exception as exc:  # ORT raises its own types for bad feeds
            raise InputError(f"ONNX Runtime could not run the explain model on this input: {runtime_message(exc)}") \
                from None
        if self._quantized is not None:
            self.check_twin(feeds[self.input_name], dict(zip(names, values)))
        return values

    def check_twin(self, images: np.ndarray, outputs: dict) -> None:
        """Once, on the first batch the explain model ran: the quantised model it was exported from, in a
        plain session, against the twin's outputs the explain model just computed (``twin_check``; a
        warning when they disagree). Then the quantised model is let go."""
        with self._twin_lock:
            quantized, self._quantized = self._quantized, None
        if quantized is None:
            return
        wanted = set(self.model_outputs)
        host = {name: value.numpy() if isinstance(value, ort.OrtValue) else value
                for name, value in outputs.items() if name in wanted}
        try:
            self.twin_check = check_first_batch(quantized, {self.input_name: images}, host, self._predictions(),
                                                self._threads)
        except BaseException:  # Ctrl-C during the check: the next batch checks, and no record says it cannot be
            self._quantized = quantized
            raise

    def _predictions(self) -> Predictions:
        """What the twin check compares as this task's predictions."""
        if self.task == "classification":  # top-1 over the classes, batch first (an (N, C, 1, 1) head's too)
            output = self.contract.output
            return Predictions(frozenset({output}), parts=lambda name, values: {
                name: self.batch_first(values) if name == output else values})
        if self.task == "sequence":
            return Predictions(frozenset({self.contract.output}), functools.partial(
                same_greedy_text, batch_axis=self.contract.score_batch_axis, blank=self.contract.blank))
        head = self.detection_head
        if head is not None and head.layout in ("yolov8", "yolov5"):
            return Predictions(parts=functools.partial(score_and_box_columns, head))
        return Predictions()

    @property
    def twin_facts(self) -> dict | None:
        """A run's record of the float twin (None for a model explained as it is): the ops it replaced, its
        check on the probe input at export, and against the quantised model on the first batch."""
        meta = self.contract
        if not meta.float_twin:
            return None
        probe = {"top1": meta.twin_top1, "relative_difference": round(meta.twin_relative_difference, 4),
                 "max_difference": float(f"{meta.twin_max_difference:.4g}")}
        if self.twin_check is not None:
            first = self.twin_check.as_record()
        elif not self._twin_checkable:
            first = {"top1": "unchecked", "reason": "an explain model holds only the twin; give the quantised model "
                                                    "itself to check them against each other"}
        else:
            first = {"top1": "unchecked", "reason": "no batch explained yet"}
        return {"replaced": meta.float_twin, "probe": probe, "first_batch": first}

    def _describe(self, target, region, mask, reference, weights) -> str:
        if weights is not None:
            return "the given target_weights"
        if region is not None:
            return requests.REGION_TASKS[self.task]
        if mask is not None:
            return requests.REGION_TASKS[self.task].replace("region", "mask")
        if reference is not None:
            return "cosine similarity to the reference"
        if target is not None and np.any(np.asarray(target) >= 0):
            meaning = {"sequence": "time step", "regression": "output unit", "dense": "channel"}.get(self.task, "class")
            return f"the given {meaning}"
        return self.contract.target_description

    # --- multi-pass methods ------------------------------------------------------------------
    def _nchw(self, tensor: np.ndarray | None) -> np.ndarray | None:
        return nchw_array(tensor, self.contract.layer_layout)

    def _sub_session(self, kind: str, inputs=None, outputs=None, threads: int | None = None):
        """A part of the explain model, built once: the head model (layer → score), the plain forward
        model (image → score), or ``kind`` cut from ``inputs`` to ``outputs`` (``target`` and
        ``target_weights`` stay inputs); ``threads`` as for :meth:`_new_session`."""
        if kind not in self._extra_sessions:
            from onnxcam.headmodel import cut_model

            cut_at = inputs or [self.layer if kind == "head" else self.input_name]
            cut = cut_model(self.model, cut_at, outputs or self.contract.score_tensor, self._view,
                            optional=[contract.TARGET, contract.TARGET_WEIGHTS])
            session = self._new_session(cut.model, threads=threads)
            if self._cancelled:
                session.cancel()
            self._extra_sessions[kind] = (cut, session)
        return self._extra_sessions[kind]

    def _new_session(self, model: onnx.ModelProto, announce: bool = False, threads: int | None = None):
        """A session for the explain model or a cut of it (whose weights are in the held data file);
        ``threads`` for a small model, fewer than the explainer's."""
        threads = self._threads if threads is None else threads if self._threads is None else min(threads, self._threads)
        if self._held_weights is None:
            return model_session(model, self._provider_request, threads=threads, announce=announce, **self._binding)
        return self._held_weights.session(model, self._provider_request, threads, announce, **self._binding)

    def full_model(self) -> onnx.ModelProto:
        """The explain model with its weights (``model`` refers to them in a temporary data file)."""
        return self.with_weights(self.model)

    def with_weights(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """``model`` (the explain model or a cut of it) with its weights in memory, to rewrite it."""
        return model if self._held_weights is None else self._held_weights.restored(model)

    def batch_first(self, scores: np.ndarray) -> np.ndarray:
        """A batch of S (or of the output it is read from) in S's batch-first shape: the batch axis
        first, and an (N, C, 1, 1) head's 1×1 map dropped."""
        axis = self.contract.score_batch_axis
        scores = scores if axis == 0 else np.moveaxis(scores, axis, 0)
        if scores.ndim == len(self.score_shape):
            return scores
        return scores.reshape(len(scores), *(-1 if d is None else d for d in self.score_shape[1:]))

    def _head(self, activations: np.ndarray, rows: np.ndarray, batch: np.ndarray, native: np.ndarray) -> np.ndarray:
        cut, session = self._sub_session("head")
        activations = native_array(activations, self.contract.layer_layout, native[rows])
        feeds = {cut.inputs[0]: np.ascontiguousarray(activations)}
        feeds.update({name: batch[rows] for name in cut.inputs[1:]})  # the image, where a skip bypasses the layer
        return self.batch_first(session.run([cut.output], feeds)[0])

    def forward_scores(self, batch: np.ndarray) -> np.ndarray:
        """The score tensor S (batch first) for a pre-processed batch, from the plain forward model
        (no gradient, no map): what the faithfulness metrics score perturbed images with."""
        return self._forward(np.asarray(batch, np.float32))

    def _forward(self, images: np.ndarray) -> np.ndarray:
        cut, session = self._sub_session("forward")
        return self.batch_first(session.run([cut.output], {self.input_name: np.ascontiguousarray(
            images, dtype=self._input_dtype)})[0])

    def _explain_batch(self, images: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        names = [contract.CAM_TARGET, contract.CAM_SCORE, *self.exposed]
        values = self._session.run(names, self._feeds(images, targets, weights))
        result = dict(zip(names, values))
        for name in contract.EXPOSABLE:
            if name in result:
                result[name] = self._nchw(result[name])
        return result

    def _black_image(self, batch: np.ndarray) -> np.ndarray:
        """An all-black image of the batch's size, pre-processed: Integrated Grad-CAM's usual baseline."""
        height, width = batch.shape[2:4] if self.layout == "NCHW" else batch.shape[1:3]
        return self.preprocess.batch([np.zeros((height, width, 3), np.uint8)], (height, width), self.layout,
                                     self.input_channels)

    def _run_passes(self, batch: np.ndarray, result: dict[str, np.ndarray]) -> np.ndarray:
        context = RunContext(
            batch=batch, layout=self.layout, targets=result[contract.CAM_TARGET], scores=result[contract.CAM_SCORE],
            weights=result[contract.CAM_WEIGHTS], task=self.task,
            activations=self._nchw(result[contract.ACTIVATIONS]), gradients=self._nchw(result.get(contract.GRADIENTS)),
            score_kind=self.contract.score, options=self.run_options,
            head=lambda a, rows: self._head(a, rows, batch, result[contract.ACTIVATIONS]), forward=self._forward,
            explain=self._explain_batch,
            black=lambda: self._black_image(batch))
        return finish_maps(self._method.build(context), *context.image_size)

    def explain_boxes(self, inputs, *, min_score: float = 0.25, iou: float = 0.45, max_boxes: int = 10,
                      box: int | None = None, classes=None):
        """Detectors: every detected box of every image and its own map, in one object
        (:class:`onnxcam.detection.explain.Detections`). Boxes come from the model's outputs (score
        threshold ``min_score``, class-wise NMS at ``iou``, the ``max_boxes`` most confident; ``box``
        keeps one of them, ``classes`` some classes); the maps cost one forward pass per batch, and per
        box the head's backward pass on a crop of the layers around its anchor (where the head is made
        of convolutions; else on the whole map)."""
        from onnxcam.detection.boxes import BoxOptions
        from onnxcam.detection.explain import explain_boxes

        if self.task != "detection":
            raise OnnxCamError(f"boxes are for detection models, and this one's task is {self.task}")
        if not self._method.in_graph:
            raise OnnxCamError(f"method '{self.method}' runs several passes per image; per-box maps need an "
                               "in-graph method (gradcam, hirescam, ...)")
        chosen = None if classes is None else tuple(int(c) for c in np.atleast_1d(classes))
        options = BoxOptions(float(min_score), float(iou), int(max_boxes), None if box is None else int(box), chosen)
        return explain_boxes(self, inputs, options)

    def cancel(self) -> None:
        """Stop the explanations in flight (from another thread or a signal handler): they raise
        :class:`~onnxcam.errors.CancelledError`, and so does every later call."""
        self._cancelled = True
        self._session.cancel()
        for _, session in list(self._extra_sessions.values()):
            session.cancel()

    def label(self, index: int) -> str:
        if self.labels and 0 <= index < len(self.labels):
            return self.labels[index]
        return str(index)

    def save(self, path) -> None:
        write_atomically(path, self.full_model().SerializeToString())
