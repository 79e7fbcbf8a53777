"""Bad and hostile inputs: one clear error each (never a traceback), inputs never changed, nothing
silently wrong. Numbers in the test names follow the reliability issue's list."""

import json
import struct
import zlib

import cv2
import numpy as np
import onnx
import pytest

from onnxcam import Explainer, InputError, ModelError, OnnxCamError
from onnxcam.io.images import decode_image, header_size
from tests.reliability import models
from tests.reliability.conftest import assert_one_line_error, invoke, records, snapshot


# --- 1. a sidecar cannot read outside the model's folder --------------------------------------------
def test_1_sidecar_labels_outside_the_model_folder_are_refused(model_path, images, tmp_path):
    secret = tmp_path.parent / "secret.txt"
    secret.write_text("root:x:0:0\n")
    sidecar = model_path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    for sneaky in ("../secret.txt", str(secret), "sub/../../secret.txt"):
        sidecar.write_text(json.dumps({**data, "labels": sneaky}))
        result = invoke("run", model_path, images, "-o", tmp_path / "out")
        assert_one_line_error(result, "points outside the model's folder")
        assert not (tmp_path / "out" / "results.jsonl").exists()


def test_1_labels_must_be_text_of_sane_size(model_path, images, tmp_path):
    binary = tmp_path / "labels.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert_one_line_error(invoke("run", model_path, images, "-o", tmp_path / "o1", "--labels", binary),
                          "not UTF-8 text")
    nul = tmp_path / "labels.nul"
    nul.write_bytes(b"cat\x00dog\n")
    assert_one_line_error(invoke("run", model_path, images, "-o", tmp_path / "o2", "--labels", nul), "binary")


def test_1_metadata_class_names_that_fit_no_class_are_warned_about(model_path, images, tmp_path):
    model = onnx.load(str(model_path))
    onnx.helper.set_model_props(model, {"names": "{0: 'cat', 1: 'dog'}"})  # the classifier has 3 classes
    onnx.save(model, str(model_path))
    result = invoke("run", model_path, images, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "Traceback" not in result.output
    warned = [line for line in result.output.splitlines() if "metadata names no class" in line]
    assert len(warned) == 1 and "'names' holds 2 names for the model's 3 classes" in warned[0], result.output
    assert "--labels FILE" in warned[0]
    assert {r["target_label"] for r in records(tmp_path / "out")} <= {"0", "1", "2"}


# --- 4. nothing silently wrong ----------------------------------------------------------------------
def test_4_nan_scores_are_flagged_not_drawn(tmp_path, images):
    path = tmp_path / "nan.onnx"
    onnx.save(models.classifier(nan=True), str(path))
    explainer = Explainer(path, provider="cpu", preprocess="unit")
    result = explainer.explain(sorted(images.iterdir()))
    assert not result.finite.any() and np.all(result.cam == 0)
    out = tmp_path / "out"
    assert_one_line_error(invoke("run", path, images, "-o", out, "--preset", "unit"), "not finite", "--skip-bad")
    assert snapshot(out) == {}
    result = invoke("run", path, images, "-o", out, "--preset", "unit", "--skip-bad")
    assert result.exit_code == 1 and "Traceback" not in result.output
    written = records(out)  # valid JSON: no bare NaN
    assert all(r["status"] == "failed" and "not finite" in r["error"] for r in written)


def test_4_sixteen_bit_images_are_scaled_not_stretched(tmp_path):
    dark = np.full((8, 8, 3), 1020, np.uint16)  # 1020 / 65535 of full scale
    path = tmp_path / "dark16.png"
    cv2.imwrite(str(path), dark)
    assert np.all(decode_image(path) == 4)  # round(1020 * 255 / 65535), not 255


def test_4_exif_orientation_is_applied(tmp_path):
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :10] = 255  # left half white
    ok, jpeg = cv2.imencode(".jpg", image)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_with_exif_orientation(jpeg.tobytes(), 6))  # 6: rotate 90° clockwise to view
    decoded = decode_image(path)
    assert decoded.shape[:2] == (20, 10)  # portrait, as a viewer shows it
    assert decoded[:8].mean() > 200 and decoded[-8:].mean() < 50  # the white half is now on top


def test_4_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black
    rgba[0, 0] = (0, 0, 255, 255)  # one opaque red pixel
    path = tmp_path / "alpha.png"
    cv2.imwrite(str(path), rgba)
    decoded = decode_image(path)
    assert tuple(decoded[1, 1]) == (255, 255, 255) and tuple(decoded[0, 0]) == (0, 0, 255)


def test_4_all_zero_maps_are_flagged(tmp_path, images):
    model = models.classifier()
    for tensor in model.graph.initializer:  # a constant model: no pixel raises the score
        if tensor.name == "w":
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w"))
    path = tmp_path / "flat.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    result = invoke("run", path, images, "-o", out, "--preset", "unit")
    assert result.exit_code == 0, result.output
    assert all(r["all_zero"] is True for r in records(out))


# --- 5. one-line errors, not tracebacks -------------------------------------------------------------
def test_5_png_header_claiming_huge_size(tmp_path, model_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(InputError, match="over the limit"):
        decode_image(path)
    result = invoke("run", model_path, path, "-o", tmp_path / "out")
    assert_one_line_error(result, "100000x100000", "--max-pixels")


def test_5_models_onnxruntime_cannot_load(tmp_path, images):
    path = tmp_path / "custom.onnx"
    onnx.save(models.classifier(custom_op=True), str(path))
    result = invoke("run", path, images, "-o", tmp_path / "out", "--preset", "unit")
    assert "Traceback" not in result.output and result.exit_code == 1
    assert "Error:" in result.output and "Mystery" in result.output


@pytest.mark.parametrize("sidecar, fragment", [
    ({"size": "abc"}, "'size'"), ({"size": [64]}, "'size'"), ({"mean": 5}, "'mean'"),
    ({"scale": "x"}, "'scale'"), ({"color": 3}, "'color'"), ({"labels": 7}, "'labels'"),
])
def test_5_sidecar_values_of_the_wrong_type(model_path, images, tmp_path, sidecar, fragment):
    model_path.with_suffix(".json").write_text(json.dumps(sidecar))
    assert_one_line_error(invoke("run", model_path, images, "-o", tmp_path / "out"), fragment)


def test_5_api_mistakes_are_onnxcam_errors(model_path, tmp_path):
    explainer = Explainer(model_path, provider="cpu")
    for bad in ([], [None], [np.zeros((4, 4), np.float64)], [b""], [42]):
        with pytest.raises(InputError):
            explainer.explain(bad)
    with pytest.raises(ModelError, match="external data"):
        Explainer(_with_external_data(models.classifier(), tmp_path).SerializeToString(), provider="cpu")


# --- 6. resource bombs ------------------------------------------------------------------------------
def test_6_pixel_cap_is_read_from_the_header_and_can_be_raised(tmp_path, model_path):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((300, 400, 3), np.uint8))
    assert header_size(big.read_bytes()[:64]) == (400, 300)
    with pytest.raises(InputError, match="over the limit"):
        decode_image(big, max_pixels=100_000)
    assert decode_image(big, max_pixels=120_000).shape == (300, 400, 3)
    result = invoke("run", model_path, big, "-o", tmp_path / "o1", "--max-pixels", 100_000)
    assert_one_line_error(result, "over the limit")
    assert invoke("run", model_path, big, "-o", tmp_path / "o2", "--max-pixels", 200_000).exit_code == 0


def test_6_jpeg_and_webp_headers_are_read(tmp_path):
    image = np.zeros((30, 50, 3), np.uint8)
    for suffix in (".jpg", ".webp", ".bmp"):
        ok, data = cv2.imencode(suffix, image)
        assert header_size(data.tobytes()[:65536]) == (50, 30), suffix


# --- 7. never our own outputs as inputs -------------------------------------------------------------
def test_7_rerunning_into_the_input_folder_explains_only_the_inputs(model_path, images):
    out = images / "cams"
    before = snapshot(images)
    assert invoke("run", model_path, images, "-o", out).exit_code == 0
    assert invoke("run", model_path, images, "-o", out, "--overwrite").exit_code == 0
    assert len(records(out)) == 3 and not list(out.glob("*.cam.cam.png"))
    assert {k: v for k, v in snapshot(images).items() if not k.startswith("cams")} == before
    assert_one_line_error(invoke("run", model_path, out / "im0.cam.png", "-o", out, "--overwrite"),
                          "inside the output folder")


# --- 8. messages that name the problem --------------------------------------------------------------
def test_8_empty_model_file(tmp_path, images):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_one_line_error(invoke("run", empty, images, "-o", tmp_path / "out"), "is empty (0 bytes)")


def test_8_integer_image_input_names_its_type(tmp_path, images):
    path = tmp_path / "int.onnx"
    onnx.save(models.classifier(int_input=True), str(path))
    assert_one_line_error(invoke("run", path, images, "-o", tmp_path / "out"), "int64", "float")


def test_8_extra_required_inputs_are_named_up_front(tmp_path, images):
    path = tmp_path / "extra.onnx"
    onnx.save(models.classifier(extra_input=True), str(path))
    assert_one_line_error(invoke("run", path, images, "-o", tmp_path / "out"), "'scale'")


def test_8_fixed_batch_models_take_any_number_of_images(tmp_path, images):
    path = tmp_path / "batch2.onnx"
    onnx.save(models.classifier(batch=2), str(path))
    explainer = Explainer(path, provider="cpu", preprocess="unit")
    three = explainer.explain(sorted(images.iterdir()))  # padded to 4, cut back to 3
    singles = [explainer.explain([p]).cam[0] for p in sorted(images.iterdir())]
    assert three.cam.shape[0] == 3
    np.testing.assert_allclose(three.cam, np.stack(singles), atol=1e-6)
    assert invoke("run", path, images, "-o", tmp_path / "out", "--preset", "unit", "--batch-size", 3).exit_code == 0


def test_8_bytes_model_with_external_data(tmp_path):
    with pytest.raises(ModelError, match="pass the model's path"):
        Explainer(_with_external_data(models.classifier(), tmp_path).SerializeToString(), provider="cpu")


def test_inputs_are_never_written(model_path, images, tmp_path):
    before = snapshot(images), snapshot(model_path.parent / "images")
    assert invoke("run", model_path, images, "-o", tmp_path / "out").exit_code == 0
    assert (snapshot(images), snapshot(model_path.parent / "images")) == before


def test_every_refusal_is_an_onnxcam_error():
    assert issubclass(InputError, OnnxCamError) and issubclass(ModelError, OnnxCamError)


# --- helpers -----------------------------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk claiming this size (no image data follows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 EXIF segment holding one Orientation tag."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _with_external_data(model: onnx.ModelProto, folder) -> onnx.ModelProto:
    path = folder / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.data", size_threshold=0)
    return onnx.load(str(path), load_external_data=False)
