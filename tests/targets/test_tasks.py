"""Every task end to end against torch autograd: the automatic task and layer, the default target
and random ``target_weights``, batch of 3 with different targets per sample."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from onnxcam import export
from tests.targets import task_nets as nets

TOLERANCE = 1e-4


def _case(name: str):
    """(module, input batch, output batch axis, targets per sample, torch weighting or None).

    Each default target's special cases occur: pixels above and below the threshold (and, in
    another case, none above it); blank steps among the read ones (a blank bias); a background class (1 here) covering most,
    not all, pixels.
    """
    torch.manual_seed(0)
    if name == "segmentation":
        # class 1 covers most pixels here: as the background, it must not be the default class
        return nets.UNetSegmenter(), (3, 3, 16, 16), 0, [-1, 2, -1], \
            lambda s, t: nets.segmentation_weights(s, t, background=1)
    if name in ("dense", "dense-silent"):
        # "dense": logits around 0, about half the pixels fire; "dense-silent": none does, so all count
        offset = 0.1036 if name == "dense" else -1.0
        return nets.DBLikeDetector(offset=offset), (3, 3, 32, 32), 0, None, lambda s, t: nets.dense_weights(s)
    if name == "dense-channels":  # asked for by name; channel 0 fires in places, channel 1 nowhere
        return nets.DBLikeDetector(offset=[-0.0239, -1.0], channels=2), (3, 3, 32, 32), 0, [-1, 1, 0], \
            nets.dense_channel_weights
    if name in ("sequence", "sequence-time-major"):
        module = nets.CTCRecogniser(time_major=name.endswith("major"))
        with torch.no_grad():
            module.classifier.bias[0] += 0.45  # some steps are blank, some read a character
        axis, targets = (1, [-1, 0, 7]) if name.endswith("major") else (0, [-1, -1, 5])
        return module, (3, 3, 16, 32), axis, targets, nets.sequence_weights
    if name == "regression":
        return nets.Regressor(), (3, 3, 12, 12), 0, [-1, 0, 2], nets.regression_weights
    if name == "embedding":
        return nets.Embedder(), (3, 3, 12, 12), 0, None, None
    if name == "embedding-raw":  # an embedding the graph does not normalise: the cosine's own Jacobian counts
        return nets.Regressor(outputs=5), (3, 3, 12, 12), 0, None, None
    raise KeyError(name)


def _explain(name: str, feeds_weights):
    module, shape, axis, targets, _ = _case(name)
    module.eval()
    x = torch.randn(*shape)
    source = nets.export(module, x[:1], output_batch_axis=axis)
    # (N, K) raw outputs look like class logits: a regression is named (the README says so)
    task = {"regression": "regression", "embedding-raw": "embedding", "dense-channels": "dense"}.get(name, "auto")
    result = export(source, expose=["activations", "gradients"], task=task, background=1)
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input": x.numpy()}
    if targets is not None:
        feeds["target"] = np.array(targets, np.int64)
    if feeds_weights is not None:
        feeds["target_weights"] = feeds_weights
    names = ["cam", "cam_score", "cam_target", "activations", "gradients"]
    return module, x, result, dict(zip(names, session.run(names, feeds)))


def _torch_reference(module, x, name, weights=None):
    """Activations, ∂score/∂activations and the scores, from torch autograd of the task's score."""
    _, _, axis, targets, weighting = _case(name)
    a = module.features(x).detach().requires_grad_(True)
    s = module.head(a)
    if name.startswith("embedding"):
        e = torch.nn.functional.normalize(s, dim=1) if name == "embedding" else s
        score = nets.cosine(e, torch.as_tensor(weights))
    else:
        s = s.movedim(axis, 0)
        if weights is None:
            t = torch.as_tensor(targets if targets is not None else [-1] * len(x))
            w = weighting(s.detach(), t)
        else:
            w = torch.as_tensor(weights)
        score = (w * s).flatten(1).sum(dim=1)
    (grad,) = torch.autograd.grad(score.sum(), a)
    return a.detach().numpy(), grad.numpy(), score.detach().numpy()


def _assert_gradients_match(got, want):
    scale = np.abs(want).max()
    assert scale > 0, "the reference gradient is zero: the case checks nothing"
    assert np.abs(got - want).max() / scale <= TOLERANCE


TASKS = {"segmentation": "segmentation", "dense": "dense", "dense-silent": "dense", "dense-channels": "dense",
         "sequence": "sequence",
         "sequence-time-major": "sequence", "regression": "regression", "embedding": "embedding",
         "embedding-raw": "embedding"}


@pytest.mark.parametrize("name", [n for n in TASKS if not n.startswith("embedding")])
def test_default_target_matches_torch(name):
    module, x, result, got = _explain(name, None)
    assert result.plan.task.name == TASKS[name]
    activations, gradients, scores = _torch_reference(module, x, name)
    _assert_special_cases_occur(name, module, x)
    # the automatic layer is the features' output (before the prediction head)
    np.testing.assert_allclose(got["activations"], activations, rtol=1e-4, atol=1e-5)
    _assert_gradients_match(got["gradients"], gradients)
    np.testing.assert_allclose(got["cam_score"], scores, rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(got["cam"])) and got["cam"].min() >= 0 and got["cam"].max() <= 1


def _assert_special_cases_occur(name, module, x):
    with torch.no_grad():
        s = module.head(module.features(x)).movedim(_case(name)[2], 0)
    if name.startswith("sequence"):
        best = s.argmax(dim=2)
        assert (best == 0).any() and (best != 0).any(), "the case has no blank steps, or only blank steps"
    if name == "dense-channels":
        fraction = (s > 0).float().mean(dim=(2, 3))
        assert ((fraction[:, 0] > 0) & (fraction[:, 0] < 1)).all() and (fraction[:, 1] == 0).all(), fraction
    elif name.startswith("dense"):
        fraction = (s > 0).float().mean(dim=(1, 2, 3))
        assert ((fraction > 0) & (fraction < 1)).all() if name == "dense" else (fraction == 0).all(), fraction
    if name == "segmentation":
        areas = torch.nn.functional.one_hot(s.argmax(dim=1), s.shape[1]).sum(dim=(1, 2))
        assert (areas.argmax(dim=1) == 1).all() and (areas.sum(dim=1) > areas[:, 1]).all()


@pytest.mark.parametrize("name", list(TASKS))
def test_random_target_weights_match_torch(name):
    module, shape, axis, _, _ = _case(name)
    module.eval()
    s = module(torch.randn(*shape)).movedim(axis, 0)
    weights = np.random.default_rng(1).standard_normal(tuple(s.shape)).astype(np.float32)
    module, x, result, got = _explain(name, weights)
    activations, gradients, scores = _torch_reference(module, x, name, weights)
    np.testing.assert_allclose(got["activations"], activations, rtol=1e-4, atol=1e-5)
    _assert_gradients_match(got["gradients"], gradients)
    np.testing.assert_allclose(got["cam_score"], scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got["cam_target"], -1)  # fed weights: no task index


def test_embedding_is_detected_and_unfed_weights_give_zero_maps():
    _, _, result, got = _explain("embedding", None)
    assert result.plan.task.name == "embedding"
    np.testing.assert_array_equal(got["gradients"], 0)
    np.testing.assert_array_equal(got["cam"], 0)


def test_nan_entries_keep_the_default_there():
    """A partly fed weighting: NaN rows keep the default target's weights, others are as given."""
    module, x, result, default = _explain("regression", None)
    weights = np.full((3, 3), np.nan, np.float32)
    weights[1] = [0.0, 2.0, 0.0]
    _, _, _, mixed = _explain("regression", weights)
    np.testing.assert_array_equal(mixed["gradients"][[0, 2]], default["gradients"][[0, 2]])
    assert not np.allclose(mixed["gradients"][1], default["gradients"][1])
    np.testing.assert_array_equal(mixed["cam_target"], [-1, -1, 2])
