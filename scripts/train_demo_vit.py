"""Train and export a small vision transformer on the demo's shapes task ("shapes_vit").

The transformer explains token maps the way the CNN demo explains conv maps: patch 8 on 64x64
images (an 8x8 grid of 64 patch tokens plus a class token), 3 pre-norm blocks of dimension 64
with 4 heads, the class token's final features classified by a linear layer. Images come from
``shapes_data.py`` (nothing is downloaded); training is seeded and runs on the CPU in a few
minutes. The patch embedding's kernels are kept zero-mean per colour channel, as the CNN's first
layer is (see ``train_demo_model.make_first_layer_zero_mean``): a random background colour then
adds nothing to a patch's embedding.

After training the script prints training and validation accuracy, exports
``shapes_vit.onnx`` (legacy exporter, opset 17, dynamic batch, input ``image``, output
``logits``; checked against torch with ONNX Runtime) with its sidecar ``shapes_vit.json``, and
reports onnxcam's Grad-CAM pointing game on 200 fresh images at the automatic layer.

Usage::

    python scripts/train_demo_vit.py [--out models] [--epochs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes_data import CLASSES, IMAGE_SIZE, evaluation_batch, make_batch, pointing_game  # noqa: E402
from train_demo_model import MEAN, SCALE, STD, accuracy, check_onnx, preprocess, train_one_epoch  # noqa: E402

PATCH = 8
DIM = 64
DEPTH = 3
HEADS = 4
TRAIN_IMAGES = 16000
BATCH_SIZE = 128
LEARNING_RATE = 3e-3


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm1(x)), then x + MLP(norm2(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, classes: int = len(CLASSES)):
        super().__init__()
        grid = IMAGE_SIZE // PATCH
        self.patch = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.cls = nn.Parameter(torch.zeros(1, 1, DIM))
        self.position = nn.Parameter(torch.randn(1, 1 + grid * grid, DIM) * 0.02)
        self.blocks = nn.Sequential(*[Block(DIM, HEADS) for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (N, 64, DIM)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.position
        return self.head(self.norm(self.blocks(tokens))[:, 0])


@torch.no_grad()
def zero_mean_patches(model: TinyViT) -> None:
    model.patch.weight -= model.patch.weight.mean(dim=(2, 3), keepdim=True)


def train(model: TinyViT, inputs: torch.Tensor, labels: torch.Tensor, epochs: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.05)
    steps = epochs * ((len(inputs) + BATCH_SIZE - 1) // BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE, total_steps=steps)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        loss, acc = train_one_epoch(model, optimizer, scheduler, inputs, labels, batch_size=BATCH_SIZE,
                                    constrain=zero_mean_patches, label_smoothing=0.05)
        print(f"epoch {epoch}/{epochs}  loss {loss:.4f}  train acc {acc:.4f}  ({time.perf_counter() - started:.1f} s)",
              flush=True)


def export(model: TinyViT, path: Path) -> None:
    import warnings

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),), str(path), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def onnxcam_pointing_game(path: Path) -> tuple[float, str]:
    import onnxcam

    explainer = onnxcam.Explainer(path, provider="cpu")
    images, labels, boxes = evaluation_batch(200)
    result = explainer.explain(list(images), target=labels)
    return pointing_game(result.cam, boxes), explainer.layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    images, labels, _ = make_batch(np.random.default_rng(args.seed + 1), TRAIN_IMAGES)
    inputs, targets = preprocess(images), torch.from_numpy(labels)
    model = TinyViT()
    zero_mean_patches(model)
    train(model, inputs, targets, args.epochs)
    val_images, val_labels, _ = make_batch(np.random.default_rng(args.seed + 2), 1000)
    print(f"validation accuracy {accuracy(model, preprocess(val_images), torch.from_numpy(val_labels)):.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "shapes_vit.onnx"
    export(model, path)
    print(f"ONNX vs torch max |diff|: {check_onnx(model, path, preprocess(val_images[:16])):.2e}")
    (args.out / "shapes_vit.json").write_text(json.dumps({
        "size": [IMAGE_SIZE, IMAGE_SIZE], "color": "RGB", "scale": SCALE, "mean": list(MEAN), "std": list(STD),
        "layout": "NCHW", "labels": "shapes.labels.txt"}, indent=2) + "\n")
    print(f"trained and exported in {time.perf_counter() - started:.0f} s -> {path} ({path.stat().st_size} bytes)")
    try:
        score, layer = onnxcam_pointing_game(path)
        print(f"onnxcam Grad-CAM pointing game (200 fresh images, true class, layer {layer}): {score:.3f}")
    except Exception as exc:  # onnxcam may not explain token models yet
        print(f"onnxcam pointing game not available: {exc}")


if __name__ == "__main__":
    main()
