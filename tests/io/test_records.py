"""What a record says in the task's terms: here, the characters a CTC dictionary gives each class, and
whether two recogniser outputs read the same text."""

import numpy as np
import pytest

from onnxcam.io.records import same_greedy_text, sequence_labels

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


def _steps(paths: list[list[int]], classes: int = 4) -> np.ndarray:
    """(N, T, C) outputs whose arg-max at step t of sample n is paths[n][t]."""
    return np.stack([np.eye(classes, dtype=np.float32)[path] for path in paths])


def test_two_outputs_read_the_same_text_when_their_greedy_paths_decode_alike():
    model = _steps([[1, 1, 0, 2], [3, 0, 3, 3]])
    blank_for_repeat = _steps([[1, 0, 0, 2], [3, 0, 3, 0]])  # steps flip, the text stays "1 2", "3 3"
    other_character = _steps([[1, 1, 0, 2], [3, 0, 2, 3]])
    merged = _steps([[1, 1, 0, 2], [3, 3, 3, 3]])  # the blank between two 3s gone: "3", not "3 3"
    assert same_greedy_text(model, blank_for_repeat, batch_axis=0, blank=0)
    assert not same_greedy_text(model, other_character, batch_axis=0, blank=0)
    assert not same_greedy_text(model, merged, batch_axis=0, blank=0)
    time_major = np.moveaxis(model, 0, 1)  # (T, N, C)
    assert same_greedy_text(time_major, np.moveaxis(blank_for_repeat, 0, 1), batch_axis=1, blank=0)
    assert not same_greedy_text(time_major, np.moveaxis(other_character, 0, 1), batch_axis=1, blank=0)
