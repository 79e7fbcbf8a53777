"""The metrics agree with torch-cam's (``torchcam.metrics``) on the same maps: Average Drop and
Increase in Confidence (ClassificationMetric), deletion and insertion AUCs (DeletionInsertionMetric,
its zero baseline: onnxcam's ``--deletion-to zero``, insertion started from zeros).

torch-cam computes its maps itself through hooks; here a stand-in extractor hands it onnxcam's
maps, so both sides score one set of maps, torch-cam in PyTorch and onnxcam through ONNX Runtime.
"""

from contextlib import nullcontext
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from onnxcam import Explainer
from onnxcam.evaluation import metrics
from onnxcam.evaluation.faithfulness import perturbation_probabilities, target_probabilities
from onnxcam.evaluation.perturb import Perturbations, VariantPlan
from tests.targets.task_nets import export

torchcam_metrics = pytest.importorskip("torchcam.metrics", reason="torchcam is a test extra: pip install -e '.[test]'")


class GivenMaps:
    """What torch-cam's metrics need of a CAM extractor, serving fixed maps."""

    def __init__(self, model: nn.Module, maps: np.ndarray):
        self.model, self.maps = model, torch.from_numpy(maps)

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    @staticmethod
    def fuse_cams(cams):
        return cams[0]

    @staticmethod
    def _hooks_off():
        return nullcontext()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A small random classifier in PyTorch and ONNX, a batch, and onnxcam's Grad-CAM maps of it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    with torch.no_grad():
        model[-1].weight.mul_(40)  # confident predictions, so that the curves move
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    path.write_bytes(export(model, torch.randn(1, 3, 16, 16)).SerializeToString())
    batch = np.random.default_rng(0).normal(size=(12, 3, 16, 16)).astype(np.float32)
    explainer = Explainer(path, provider="cpu")
    result = explainer.explain(batch)
    contract = explainer.contract

    def probability(images, targets):
        return target_probabilities(explainer.forward_scores(images), targets, contract.output_activation,
                                    contract.score)

    return model, batch, result.cam, result.target, probability


def test_average_drop_and_increase_match_torchcam(case):
    model, batch, cams, targets, probability = case
    full, masked = probability(batch, targets), probability(batch * cams[:, None], targets)
    theirs = torchcam_metrics.ClassificationMetric(GivenMaps(model, cams), partial(torch.softmax, dim=-1))
    theirs.update(torch.from_numpy(batch))
    summary = theirs.summary()
    assert 0 < metrics.average_drop(full, masked) < 100
    assert metrics.average_drop(full, masked) == pytest.approx(100 * summary["avg_drop"], abs=1e-3)
    assert metrics.increase_in_confidence(full, masked) == pytest.approx(100 * summary["conf_increase"])


def test_deletion_and_insertion_match_torchcam(case):
    model, batch, cams, targets, probability = case
    plan = VariantPlan(steps=16)  # 256 pixels: 16 per step, as torch-cam's ceil(256 / 16)
    zero = np.zeros_like(batch[:1])
    scores = perturbation_probabilities(batch, cams, zero, targets, "NCHW", plan, probability, passes_batch=50)
    deletion = metrics.curve_auc(scores[:, plan.deletion]).mean()
    inserted = [np.stack([Perturbations(image.transpose(1, 2, 0), cam, plan, zero[0].transpose(1, 2, 0),
                                        start=zero[0].transpose(1, 2, 0)).variant(j).transpose(2, 0, 1)
                          for j in range(plan.insertion.start, plan.insertion.stop)])
                for image, cam in zip(batch, cams)]
    insertion = np.mean([metrics.curve_auc(probability(steps, np.full(len(steps), t)))
                         for steps, t in zip(inserted, targets)])
    theirs = torchcam_metrics.DeletionInsertionMetric(GivenMaps(model, cams), partial(torch.softmax, dim=-1),
                                                      steps=16)
    theirs.update(torch.from_numpy(batch))
    summary = theirs.summary()
    assert deletion == pytest.approx(summary["deletion_auc"], abs=1e-5)
    assert insertion == pytest.approx(summary["insertion_auc"], abs=1e-5)
    assert abs(deletion - insertion) > 0.01  # the two curves differ: a swap would fail
