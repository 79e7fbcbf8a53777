"""Pre-processing of decoded images into the model's batch."""

import cv2
import numpy as np

from onnxcam.io.images import Preprocess


def test_a_one_channel_model_gets_grey_images_normalised_with_the_average_mean_and_std():
    image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    settings = Preprocess(scale=1 / 255, mean=(0.4, 0.5, 0.6), std=(0.5, 0.5, 0.5))
    batch = settings.batch([image], (4, 6), "NCHW", channels=1)
    grey = cv2.cvtColor(cv2.resize(image, (6, 4), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    assert batch.shape == (1, 1, 4, 6) and ": grey, size" in settings.describe(channels=1)
    np.testing.assert_allclose(batch[0, 0], (grey / 255 - 0.5) / 0.5, atol=1e-6)


def test_three_channel_models_keep_the_colour_order_and_per_channel_statistics():
    image = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    batch = Preprocess(scale=1.0, mean=(1.0, 2.0, 3.0)).batch([image], (4, 6), "NHWC")
    np.testing.assert_allclose(batch[0], image[..., ::-1].astype(np.float32) - [1.0, 2.0, 3.0])
