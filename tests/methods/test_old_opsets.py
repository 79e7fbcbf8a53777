"""Every method on the same small CNN written at opsets 7 and 9 (tests/old_opset_nets.py) gives
the map it gives at opset 13: the in-graph heads, the runtime methods' head models and the resize
all work in the older forms. Eigen-CAM needs EyeLike (opset 9) and is refused below it."""

import numpy as np
import pytest

from onnxcam import Explainer, ModelError
from onnxcam.io.images import PRESETS
from onnxcam.methods import METHODS
from tests.old_opset_nets import small_cnn

IMAGE = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.uint8)
NEEDS_EYELIKE = {"eigencam", "eigengradcam"}


def _cam(opset: int, method: str) -> np.ndarray:
    explainer = Explainer(small_cnn(opset), method=method, provider="cpu", preprocess=PRESETS["raw"])
    return np.asarray(explainer.explain([IMAGE]).cam)


@pytest.mark.parametrize("method", list(METHODS))
def test_method_at_old_opsets_matches_opset_13(method):
    modern = _cam(13, method)
    assert modern.std() > 0
    for opset in (7, 9):
        if method in NEEDS_EYELIKE and opset < 9:
            with pytest.raises(ModelError, match="EyeLike, which opset 9 introduced"):
                _cam(opset, method)
            continue
        np.testing.assert_allclose(_cam(opset, method), modern, rtol=0, atol=1e-5, err_msg=f"opset {opset}")
