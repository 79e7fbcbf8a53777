"""Shared fixtures: the bundled demo model and small exported test models."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "shapes.onnx"
DEMO_EXAMPLES = ROOT / "models" / "examples"


@pytest.fixture(scope="session")
def demo_model() -> Path:
    assert DEMO_MODEL.is_file(), "the demo model is missing; run scripts/train_demo_model.py"
    return DEMO_MODEL


@pytest.fixture(scope="session")
def demo_images() -> list[Path]:
    images = sorted(DEMO_EXAMPLES.glob("*.png"))
    assert images, "the demo example images are missing"
    return images
