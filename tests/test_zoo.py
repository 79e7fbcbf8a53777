"""Real deployed models (the development zoo, fetched by scripts/fetch_zoo.py; skipped when absent):
automatic task and layer, the gradient against finite differences, a finite, non-constant map;
every zoo model that exports is in that table."""

import sys
from pathlib import Path

import pytest

from onnxcam import OnnxCamError, export

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import detector_check  # noqa: E402
import zoo_report  # noqa: E402

FD_TOLERANCE = 5e-2  # float32 through ReLU kinks; a wrong rule gives errors of order 1 (see zoo_report)


@pytest.mark.parametrize("key", list(zoo_report.CASES))
def test_zoo_model_is_explained_automatically(key):
    case = zoo_report.CASES[key]
    model = zoo_report.load(case)
    if model is None:
        pytest.skip(f"zoo model {key} is not fetched; run: python scripts/fetch_zoo.py {key}")
    measured = zoo_report.measure(case, model, repeats=1)
    assert measured.task == case.task
    low, high = measured.cam_range
    assert measured.cam_finite and low == 0.0 and 0.999 < high <= 1.0, measured.cam_range  # in [0, 1], not constant
    assert measured.fd_error <= FD_TOLERANCE, measured.fd_error


# The detectors' per-box gradients are checked in tests/detection/test_zoo_detectors.py.
OUTSIDE_THE_TABLE = [m.key for m in zoo_report.fetch_zoo.ZOO
                     if m.key not in zoo_report.CASES and m.key not in detector_check.PRESETS]


@pytest.mark.parametrize("key", OUTSIDE_THE_TABLE)
def test_zoo_models_outside_the_table_do_not_export_yet(key):
    """A zoo model that starts to export must join zoo_report.CASES, so that its gradient is checked
    against finite differences above (the LSTM and the int8 model export nowhere yet)."""
    path = zoo_report.fetch_zoo.cached_path(key)
    if path is None:
        pytest.skip(f"zoo model {key} is not fetched; run: python scripts/fetch_zoo.py {key}")
    with pytest.raises(OnnxCamError):
        export(str(path))


def test_int8_ocr_float_twin_agrees_with_the_model():
    """ddddocr's int8 recogniser (ConvInteger, MatMulInteger, DynamicQuantizeLinear/LSTM): its float twin
    reads the same characters as the quantised model (the LSTM's gradient is the recurrent work's)."""
    path = zoo_report.fetch_zoo.cached_path("ddddocr-ocr-int8")
    if path is None:
        pytest.skip("zoo model ddddocr-ocr-int8 is not fetched; run: python scripts/fetch_zoo.py ddddocr-ocr-int8")
    from onnxcam.plan import fix_input_shape
    from onnxcam.quantized import check_agreement, float_twin

    model = fix_input_shape(zoo_report.load_model(str(path)), [1, 1, 64, 256])
    twin = float_twin(model)
    assert twin.replaced == {"ConvInteger": 21, "DynamicQuantizeLSTM": 1, "DynamicQuantizeLinear": 22,
                             "MatMulInteger": 1}
    agreement = check_agreement(model, twin.model)
    assert agreement.top1_equal and agreement.max_difference < 0.1 * agreement.largest_output, agreement.describe()
