import cv2
import numpy as np
import pytest

from onnxcam.errors import OnnxCamError
from onnxcam.io import png, render


def _decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


PICTURES = {
    "grey8": ((7, 5), np.uint8), "bgr8": ((6, 9, 3), np.uint8), "bgra8": ((4, 3, 4), np.uint8),
    "grey16": ((5, 8), np.uint16), "bgr16": ((3, 4, 3), np.uint16), "one pixel": ((1, 1), np.uint8),
}


@pytest.mark.parametrize("name", PICTURES)
def test_the_png_writer_round_trips_through_opencv(name):
    shape, dtype = PICTURES[name]
    image = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    decoded = _decoded(png.encode(image))
    assert decoded.dtype == dtype and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)


def test_the_png_writer_compresses_smooth_maps():
    cam = cv2.resize(np.random.default_rng(1).random((7, 7), dtype=np.float32), (320, 240))
    data = png.encode(render.heatmap16(cam, 240, 320))
    assert len(data) < 0.5 * cam.size * 2


@pytest.mark.parametrize("image", [np.zeros((3, 3), np.float32), np.zeros((3, 3, 2), np.uint8), np.zeros((0, 4), np.uint8)],
                         ids=["float", "two channels", "empty"])
def test_the_png_writer_refuses_what_png_cannot_hold(image):
    with pytest.raises(ValueError, match="PNG"):
        png.encode(image)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("isal", [True, False])
def test_encode_png_writes_the_picture_with_or_without_isal(monkeypatch, fast, isal):
    monkeypatch.setattr(png, "AVAILABLE", isal and png.AVAILABLE)
    rng = np.random.default_rng(2)
    for image in (rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), rng.integers(0, 65536, (9, 11), dtype=np.uint16)):
        np.testing.assert_array_equal(_decoded(render.encode_png(image, fast)), image)


@pytest.mark.parametrize("colormap", render.COLORMAPS)
def test_colorize_is_opencvs_colormap_of_the_rounded_levels(colormap):
    cam = np.concatenate([np.linspace(0, 1, 1021, dtype=np.float32), [-0.5, 1.5]]).reshape(1, -1)
    expected = cv2.applyColorMap(np.round(np.clip(cam, 0, 1) * 255).astype(np.uint8), render.COLORMAPS[colormap])
    np.testing.assert_array_equal(render.colorize(cam, colormap), expected)


def test_colorize_names_the_colormaps_it_knows():
    with pytest.raises(OnnxCamError, match="unknown colormap 'rainbow'; choose one of: jet"):
        render.colorize(np.zeros((2, 2), np.float32), "rainbow")


def test_heatmap16_is_the_resized_map_in_sixteen_bits():
    cam = np.random.default_rng(3).random((7, 7), dtype=np.float32)
    expected = np.clip(cv2.resize(cam, (30, 20), interpolation=cv2.INTER_LINEAR), 0, 1) * 65535
    got = render.heatmap16(cam, 20, 30)
    assert got.dtype == np.uint16 and got.shape == (20, 30)
    assert np.abs(got - expected).max() <= 0.5 + 1e-2  # rounded to the nearest level


def test_the_overlay_blends_the_coloured_map_over_the_image():
    rng = np.random.default_rng(4)
    image, cam = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), rng.random((7, 7), dtype=np.float32)
    heat = render.colorize(render.fitted(cam, 20, 30))
    expected = np.round(0.3 * heat.astype(np.float64) + 0.7 * image)
    assert np.abs(render.overlay(image, cam, alpha=0.3).astype(np.float64) - expected).max() <= 1
    with pytest.raises(OnnxCamError, match="alpha 1.5 is outside"):
        render.overlay(image, cam, alpha=1.5)
