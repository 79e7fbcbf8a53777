"""Runtime methods on tasks other than classification: their scores are Σ w ⊙ S with the image's weighting,
checked against torch passes of the same split models."""

import numpy as np
import onnx
import pytest
import torch

from onnxcam import Explainer, OnnxCamError
from tests.reference import finish
from tests.targets import task_nets as nets


def _explainer(module, shape, method, axis=0, **options):
    torch.manual_seed(0)
    module.eval()
    x = torch.randn(*shape)
    model = nets.export(module, x[:1], output_batch_axis=axis)
    return Explainer(model, method=method, provider="cpu", passes_batch=5, **options), x


def _weights(explainer, x):
    """The weighting the explain model used per image (batch first)."""
    feeds = explainer._feeds(x.numpy(), np.full(len(x), -1, np.int64), explainer.target_weights(len(x)))
    return torch.as_tensor(explainer._session.run(["cam_weights"], feeds)[0])


def test_ablationcam_on_a_dense_model():
    torch.manual_seed(0)  # the weights, not only the input: the case must not depend on the tests run before it
    module = nets.DBLikeDetector(offset=0.1036)
    explainer, x = _explainer(module, (2, 3, 32, 32), "ablationcam")
    got = explainer.explain(x.numpy()).cam
    w = _weights(explainer, x)
    with torch.no_grad():
        a = module.features(x)
        score = (w * module.head(a)).flatten(1).sum(1)
        expected = []
        for i in range(len(x)):
            drops = []
            for k in range(a.shape[1]):
                ablated = a[i:i + 1].clone()
                ablated[:, k] = 0
                drops.append((score[i] - (w[i:i + 1] * module.head(ablated)).sum()) / score[i])
            raw = torch.einsum("c,chw->hw", torch.stack(drops), a[i]).numpy()
            expected.append(finish(raw, 32, 32))
    np.testing.assert_allclose(got, np.stack(expected), atol=2e-4)


def test_scorecam_on_a_time_major_sequence_uses_the_score_not_a_softmax():
    import cv2

    torch.manual_seed(0)
    module = nets.CTCRecogniser(time_major=True)
    explainer, x = _explainer(module, (2, 3, 16, 32), "scorecam", axis=1)
    got = explainer.explain(x.numpy()).cam
    w = _weights(explainer, x)
    with torch.no_grad():
        a = module.features(x)
        expected = []
        for i in range(len(x)):
            weights = []
            for channel in a[i].numpy():
                up = cv2.resize(channel, (32, 16), interpolation=cv2.INTER_LINEAR)
                mask = (up - up.min()) / (up.max() - up.min()) if up.max() > up.min() else np.zeros_like(up)
                s = module.head(module.features(x[i:i + 1] * torch.as_tensor(mask))).movedim(1, 0)
                weights.append(float((w[i:i + 1] * s).sum()))
            raw = np.einsum("c,chw->hw", np.array(weights), a[i].numpy())
            expected.append(finish(raw, 16, 32))
    np.testing.assert_allclose(got, np.stack(expected), atol=2e-4)


def test_runtime_methods_refuse_the_embedding_task():
    module = nets.Embedder()
    model = nets.export(module.eval(), torch.randn(1, 3, 12, 12))
    with pytest.raises(OnnxCamError, match="needs a score linear in the outputs"):
        Explainer(onnx.ModelProto.FromString(model.SerializeToString()), method="ablationcam", provider="cpu")
