"""Boxes given in the image's pixels and mask files become object masks at the model input's size."""

import cv2
import numpy as np

from onnxcam.evaluation.runner import object_masks
from onnxcam.io.annotations import Annotations, MaskFolder


def test_boxes_scale_to_the_model_input():
    boxes = Annotations({"a.png": [(0, 0, 128, 64)], "dir/b.png": [(10, 10, 20, 20), (200, 100, 256, 128)]})
    images = [np.zeros((256, 256, 3), np.uint8), np.zeros((128, 256, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)]
    a, b, c = object_masks(["x/a.png", "dir/b.png", "c.png"], images, (3, 3, 64, 64), "NCHW", boxes)
    expected = np.zeros((64, 64), bool)
    expected[:16, :32] = True
    np.testing.assert_array_equal(a, expected)
    assert b[5:10, 2:5].all() and b[50:64, 50:64].all() and b.sum() == 5 * 3 + 14 * 14  # x scaled by 1/4, y by 1/2
    assert c is None  # no boxes for this image: no pointing game


def test_mask_files_join_the_boxes(tmp_path):
    mask = np.zeros((256, 128), np.uint8)
    mask[128:, 64:] = 255  # the bottom-right quarter of a 128-wide, 256-high image
    cv2.imwrite(str(tmp_path / "a.png"), mask)
    images = [np.zeros((256, 128, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)]
    boxes = Annotations({"a.jpg": [(0, 0, 64, 128)]})
    a, b = object_masks(["in/a.jpg", "in/b.jpg"], images, (2, 32, 32, 3), "NHWC", boxes, MaskFolder(tmp_path))
    expected = np.zeros((32, 32), bool)
    expected[16:, 16:] = True  # from the mask file
    expected[:16, :16] = True  # from the box
    np.testing.assert_array_equal(a, expected)
    assert b is None
