"""The metrics against values computed by hand, on a "model" whose probability is a known function
of the pixels: p(x) = the mean of x over a region R of 16 of the 64 pixels of an 8×8 image."""

import numpy as np
import pytest

from onnxcam.evaluation import metrics
from onnxcam.evaluation.faithfulness import image_scores, perturbation_probabilities, target_probabilities
from onnxcam.evaluation.perturb import Perturbations, VariantPlan

REGION = np.zeros((8, 8), bool)
REGION[2:4, :] = True  # 16 pixels, in raster order the 17th..32nd
PLAN = VariantPlan(steps=8, road_fractions=(0.25, 0.75))


def probability(images, targets):
    """p = mean over R of the first channel (NCHW); the target is ignored."""
    return images[:, 0][:, REGION].mean(axis=1)


def test_curve_auc_is_the_trapezoid_rule():
    assert metrics.curve_auc(np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    assert metrics.curve_auc(np.array([[1.0, 1.0], [0.0, 1.0]])).tolist() == [1.0, 0.5]


@pytest.mark.parametrize("cam, deletion_auc", [
    (REGION.astype(np.float32), 0.125),  # R first: p drops to 0 after 16 of 64 pixels: area |R|/P/2
    (1 - REGION.astype(np.float32), 0.875),  # R last: p stays 1 for the first 48 pixels
    (np.full((8, 8), 0.5, np.float32), 0.375),  # ties in raster order: R is pixels 17..32 (p: 1, 1, 1, .5, 0, ...)
])
def test_deletion_and_insertion_aucs_on_a_known_model(cam, deletion_auc):
    image = np.ones((1, 1, 8, 8), np.float32)
    baseline = np.zeros_like(image)
    perturbation = Perturbations(image[0].transpose(1, 2, 0), cam, PLAN, baseline[0].transpose(1, 2, 0),
                                 start=np.zeros((8, 8, 1), np.float32))
    deletion = np.array([probability(perturbation.variant(j).transpose(2, 0, 1)[None], None)[0]
                         for j in range(PLAN.steps + 1)])
    insertion = np.array([probability(perturbation.variant(j).transpose(2, 0, 1)[None], None)[0]
                          for j in range(PLAN.insertion.start, PLAN.insertion.stop)])
    assert metrics.curve_auc(deletion) == pytest.approx(deletion_auc)
    assert metrics.curve_auc(insertion) == pytest.approx(1 - deletion_auc)  # from a black start: the mirror image


def test_batched_passes_give_the_same_curves_whatever_the_batch():
    images = np.ones((3, 1, 8, 8), np.float32)
    cams = np.stack([REGION, ~REGION, REGION]).astype(np.float32)
    runs = [perturbation_probabilities(images, cams, np.zeros((1, 1, 8, 8), np.float32), np.zeros(3, np.int64),
                                       "NCHW", PLAN, probability, passes_batch=size) for size in (1, 7, 64)]
    assert runs[0].shape == (3, PLAN.count)
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    ideal = image_scores(runs[0][0], PLAN, cams[0], REGION)
    assert metrics.curve_auc(ideal.deletion) == pytest.approx(0.125)
    assert ideal.full == 1.0 and ideal.masked == 1.0  # the map is 1 on all of R: nothing drops
    assert ideal.pointing is True and ideal.energy == 1.0
    inverse = image_scores(runs[0][1], PLAN, cams[1], REGION)
    assert inverse.masked == 0.0 and inverse.pointing is False and inverse.energy == 0.0


def test_average_drop_and_increase_in_confidence():
    assert metrics.average_drop([0.8, 0.5], [0.4, 0.6]) == pytest.approx(25.0)  # (0.5 + 0) / 2
    assert metrics.increase_in_confidence([0.8, 0.5], [0.4, 0.6]) == pytest.approx(50.0)
    half = np.full((8, 8), 0.5, np.float32)
    scores = perturbation_probabilities(np.ones((1, 1, 8, 8), np.float32), half[None], np.zeros((1, 1, 8, 8)),
                                        np.zeros(1, np.int64), "NCHW", PLAN, probability, 4)
    assert scores[0, PLAN.masked] == pytest.approx(0.5)  # the image times a map of 0.5: AD 50 %
    assert metrics.average_drop(scores[:, 0], scores[:, PLAN.masked]) == pytest.approx(50.0)


def test_road_imputes_removed_pixels_from_their_neighbours():
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))[..., None]
    cam = np.zeros((32, 32), np.float32)
    cam[12:20, 12:20] = 1.0
    perturbation = Perturbations(ramp, cam, VariantPlan(steps=4, road_fractions=(64 / 1024,)))
    imputed = perturbation.variant(perturbation.plan.road_morf.start)
    removed = cam > 0
    assert np.abs(imputed[removed] - ramp[removed]).max() < 0.08  # a smooth image is recovered, with noise
    assert not np.array_equal(imputed[removed], ramp[removed])
    np.testing.assert_array_equal(imputed[~removed], ramp[~removed])  # other pixels untouched


def test_pointing_game_and_energy():
    cam = np.zeros((4, 4))
    cam[0, 0], cam[3, 3] = 1.0, 3.0
    mask = np.zeros((4, 4), bool)
    mask[2:, 2:] = True
    assert metrics.pointing_hit(cam, mask) and not metrics.pointing_hit(cam, ~mask)
    assert metrics.energy_share(cam, mask) == pytest.approx(0.75)


def test_spearman_with_ties():
    assert metrics.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)  # ranks 1.5, 1.5, 3
    assert metrics.spearman(np.zeros(5), np.arange(5)) == 0.0
    rng = np.random.default_rng(0)
    a, b = rng.random(100), rng.random(100)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties: plain ranks)
    assert metrics.spearman(a, b) == pytest.approx(np.corrcoef(ranks(a), ranks(b))[0, 1])


def test_target_probabilities_follow_the_final_activation():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    soft = np.exp(2) / (np.exp(2) + 1)
    np.testing.assert_allclose(target_probabilities(logits, np.array([0, 1]), "", "logit"), [soft, 0.5])
    np.testing.assert_allclose(target_probabilities(logits, np.array([0, 1]), "Sigmoid", "logit"),
                               [1 / (1 + np.exp(-2)), 0.5])
    probabilities = np.array([[0.9, 0.1]])
    np.testing.assert_allclose(target_probabilities(probabilities, np.array([1]), "Softmax", "probability"), [0.1])
