"""On the demo model, Grad-CAM's maps are more faithful than random ones (the README's figures)."""

import sys

import cv2
import numpy as np
import pytest

from onnxcam import Explainer
from onnxcam.evaluation.perturb import VariantPlan
from onnxcam.evaluation.runner import EvalInputs, evaluate_method, random_reference
from onnxcam.io.annotations import Annotations
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import shapes_data  # noqa: E402


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """24 fresh demo images written as files, with true labels and object boxes."""
    folder = tmp_path_factory.mktemp("fresh")
    images, labels, boxes = shapes_data.evaluation_batch(24)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"shape{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    truth = Annotations({p.name: str(int(c)) for p, c in zip(paths, labels)})
    box_table = Annotations({p.name: [tuple(float(v) for v in box)] for p, box in zip(paths, boxes)})
    return paths, truth, box_table


def test_gradcam_beats_a_random_map(demo_model, fresh):
    paths, truth, boxes = fresh
    explainer = Explainer(demo_model, provider="cpu", passes_batch=64)
    inputs = EvalInputs(explainer, paths, batch_size=24, truth=truth, boxes=boxes)
    plan = VariantPlan(steps=10)
    gradcam = evaluate_method(explainer, inputs, plan, lambda n: None)
    random = random_reference(explainer, inputs, plan, lambda n: None)
    assert gradcam.deletion_auc < random.deletion_auc - 0.1, (gradcam.deletion_auc, random.deletion_auc)  # blurred
    assert gradcam.insertion_auc > random.insertion_auc
    assert gradcam.road_morf < random.road_morf
    assert gradcam.pointing_game >= 0.9 and gradcam.energy_pointing_game > random.energy_pointing_game
    assert np.isclose(random.pointing_game, 0.25, atol=0.3)  # chance: about the boxes' share of the image
