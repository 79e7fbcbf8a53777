"""What a record says in the task's terms: here, the characters a CTC dictionary gives each class."""

import pytest

from onnxcam.io.records import sequence_labels

CHARACTERS = ["a", "b", " "]


@pytest.mark.parametrize("classes, blank, expected", [
    (3, 0, ["a", "b", " "]),  # the file lists every class, the blank's line among them
    (4, 0, ["", "a", "b", " "]),  # every class but the blank (index 0): PaddleOCR's dictionaries
    (4, 3, ["a", "b", " ", ""]),  # every class but a blank at the end
    (5, 0, ["", "a", "b", " ", " "]),  # PaddleOCR's use_space_char: a space class appended after the dictionary
])
def test_a_dictionary_fits_the_ctc_layouts(classes, blank, expected):
    assert sequence_labels(CHARACTERS, classes, blank) == expected


@pytest.mark.parametrize("classes, blank", [(6, 0), (2, 0), (5, 4)])
def test_a_dictionary_that_fits_no_layout_gives_no_characters(classes, blank):
    assert sequence_labels(CHARACTERS, classes, blank) is None
