"""Train and export onnxcam's small demo classifier ("shapes").

The model is a tiny plain CNN that tells which of four shapes (circle, square,
triangle, cross) is drawn on a cluttered 64x64 background; the images come
from ``shapes_data.py`` next to this script, so no data set is downloaded.
Training runs on the CPU in a few minutes and is seeded. The first layer's
kernels are kept zero-mean (see ``make_first_layer_zero_mean``), which is what
lets this small network learn shapes on randomly coloured backgrounds quickly.

After training the script

* prints training and validation accuracy (validation: 1000 fresh images);
* runs a Grad-CAM pointing game in torch on 200 fresh images (Grad-CAM at the
  last ReLU; a hit is when the heatmap's maximum lies inside the object's box);
* exports ``shapes.onnx`` (legacy exporter, opset 17, dynamic batch, input
  ``image``, output ``logits``) and checks it against torch with onnxruntime;
* writes ``shapes.labels.txt`` (one class name per line, in index order),
  ``shapes.json`` (the pre-processing sidecar) and six example images,
  ``examples/<class>_<n>.png``, drawn at 256x256 and correctly classified
  after downscaling to 64x64.

Usage::

    python scripts/train_demo_model.py [--out models] [--epochs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, OrderedDict
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes_data import CLASSES, IMAGE_SIZE, make_batch, make_sample, pointing_game  # noqa: E402

SCALE = 1.0 / 255.0
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

TRAIN_IMAGES = 12000
VALIDATION_IMAGES = 1000
POINTING_IMAGES = 200
EXAMPLE_SIZE = 256
EXAMPLES_PER_CLASS_FIRST_ROUND = 1
EXAMPLE_COUNT = 6
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
ONNX_TOLERANCE = 1e-4
MAX_ARTEFACT_BYTES = 5 * 1024 * 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="output directory")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser.parse_args()


def conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    """3x3 convolution (padding 1) followed by batch norm and ReLU."""
    return [
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=False),
    ]


def build_model(num_classes: int = len(CLASSES)) -> nn.Sequential:
    """The demo CNN: 4 conv blocks (16x16x64 at the last ReLU), GAP, linear."""
    features = nn.Sequential(
        *conv_bn_relu(3, 16, 1),
        *conv_bn_relu(16, 32, 2),
        *conv_bn_relu(32, 64, 2),
        *conv_bn_relu(64, 64, 1),
    )
    return nn.Sequential(
        OrderedDict(
            features=features,
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(64, num_classes),
        )
    )


@torch.no_grad()
def make_first_layer_zero_mean(model: nn.Sequential) -> None:
    """Remove each first-layer kernel's spatial mean, per input channel.

    Such kernels give no response on flat regions of any colour, so the random
    background colours do not swamp the small shape signal that survives the
    global average pool. Without this constraint (applied at initialisation
    and after every optimiser step) training sits at chance for many epochs.
    The exported model is an ordinary convolution with these weights.
    """
    weight = model.features[0].weight
    weight -= weight.mean(dim=(2, 3), keepdim=True)


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 NCHW, (x * SCALE - mean) / std."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * SCALE
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def augment(batch: torch.Tensor) -> torch.Tensor:
    """Random flips and 90-degree rotations (the classes are invariant to them)."""
    if torch.rand(()) < 0.5:
        batch = batch.flip(3)
    return torch.rot90(batch, int(torch.randint(4, ())), dims=(2, 3))


def train_one_epoch(model, optimizer, scheduler, inputs, labels, batch_size: int = BATCH_SIZE,
                    constrain=make_first_layer_zero_mean, label_smoothing: float = 0.0) -> tuple[float, float]:
    """One pass over the data in shuffled mini-batches; returns (loss, accuracy).

    ``constrain(model)`` runs after every optimiser step (the zero-mean first layer)."""
    model.train()
    order = torch.randperm(len(inputs))
    total_loss, correct = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        idx = order[start : start + batch_size]
        x, y = augment(inputs[idx]), labels[idx]
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        constrain(model)
        scheduler.step()
        total_loss += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
    return total_loss / len(inputs), correct / len(inputs)


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of correctly classified inputs (eval mode)."""
    model.eval()
    predictions = torch.cat([model(chunk).argmax(1) for chunk in inputs.split(500)])
    return float((predictions == labels).float().mean())


def train(model, inputs, labels, epochs: int) -> None:
    """Adam with a one-cycle schedule, one progress line per epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    steps_per_epoch = (len(inputs) + BATCH_SIZE - 1) // BATCH_SIZE
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=epochs * steps_per_epoch
    )
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        loss, acc = train_one_epoch(model, optimizer, scheduler, inputs, labels)
        print(
            f"epoch {epoch}/{epochs}  loss {loss:.4f}  train acc {acc:.4f}  "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )


def grad_cam(model: nn.Sequential, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM at the last ReLU for the predicted class.

    Returns (cams upsampled to the input size (N, H, W), predicted classes (N,)).
    """
    model.eval()
    activations = model.features(inputs).detach().requires_grad_(True)
    logits = model.fc(model.flatten(model.pool(activations)))
    predicted = logits.argmax(1)
    logits.gather(1, predicted[:, None]).sum().backward()
    weights = activations.grad.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
    cams = F.interpolate(cams, size=inputs.shape[2:], mode="bilinear", align_corners=False)
    return cams[:, 0], predicted


def grad_cam_pointing_game(model: nn.Sequential, inputs: torch.Tensor, boxes: np.ndarray) -> float:
    """Fraction of images whose Grad-CAM maximum lies inside the object's box."""
    cams, _ = grad_cam(model, inputs)
    return pointing_game(cams.numpy(), boxes)


def export_onnx(model: nn.Module, path: Path, size: int = IMAGE_SIZE, output: str = "logits") -> None:
    """Export with the legacy TorchScript exporter, opset 17, dynamic batch."""
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(
        model.eval(),
        dummy,
        str(path),
        dynamo=False,
        opset_version=17,
        do_constant_folding=True,
        input_names=["image"],
        output_names=[output],
        dynamic_axes={"image": {0: "batch"}, output: {0: "batch"}},
    )


def check_onnx(model: nn.Module, path: Path, inputs: torch.Tensor, output: str = "logits",
               tolerance: float = ONNX_TOLERANCE) -> float:
    """Largest |output difference| between onnxruntime and torch; raises if too large."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_output,) = session.run([output], {"image": inputs.numpy()})
    with torch.no_grad():
        torch_output = model.eval()(inputs).numpy()
    difference = float(np.abs(onnx_output - torch_output).max())
    if difference > tolerance:
        raise RuntimeError(f"ONNX {output} differ from torch by {difference:.2e}")
    return difference


def write_labels(path: Path) -> None:
    path.write_text("".join(f"{name}\n" for name in CLASSES))


def write_sidecar(path: Path, labels_name: str, size: int = IMAGE_SIZE,
                  mean: tuple = MEAN, std: tuple = STD) -> None:
    """Pre-processing description: input pixel x becomes (x * scale - mean) / std."""
    sidecar = {
        "size": [size, size],
        "color": "RGB",
        "scale": SCALE,
        "mean": list(mean),
        "std": list(std),
        "layout": "NCHW",
        "labels": labels_name,
    }
    path.write_text(json.dumps(sidecar) + "\n")


def classify_large(model: nn.Module, image: np.ndarray) -> int:
    """Class predicted for a large RGB image after INTER_AREA downscaling to 64x64."""
    small = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        return int(model.eval()(preprocess(small[None])).argmax(1))


def write_examples(model: nn.Module, directory: Path, rng: np.random.Generator) -> list[str]:
    """Save correctly classified 256x256 samples: one per class, then any classes."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.png"):
        stale.unlink()
    counts: Counter[str] = Counter()
    names, rejected = [], 0
    while len(names) < EXAMPLE_COUNT:
        image, label, _ = make_sample(rng, EXAMPLE_SIZE)
        name = CLASSES[label]
        needs_first = counts[name] < EXAMPLES_PER_CLASS_FIRST_ROUND
        all_covered = all(counts[c] >= EXAMPLES_PER_CLASS_FIRST_ROUND for c in CLASSES)
        if not (needs_first or all_covered):
            continue
        if classify_large(model, image) != label:
            rejected += 1
            continue
        counts[name] += 1
        filename = f"{name}_{counts[name]}.png"
        cv2.imwrite(str(directory / filename), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        names.append(filename)
    print(f"examples: {', '.join(names)} ({rejected} misclassified candidates skipped)")
    return names


def directory_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def main() -> None:
    args = parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    train_images, train_labels, _ = make_batch(np.random.default_rng(args.seed), TRAIN_IMAGES)
    val_images, val_labels, _ = make_batch(np.random.default_rng(args.seed + 1), VALIDATION_IMAGES)
    print(f"generated {TRAIN_IMAGES} train + {VALIDATION_IMAGES} validation images "
          f"({time.perf_counter() - started:.1f} s)")
    train_x, train_y = preprocess(train_images), torch.from_numpy(train_labels)
    val_x, val_y = preprocess(val_images), torch.from_numpy(val_labels)

    model = build_model()
    make_first_layer_zero_mean(model)
    train(model, train_x, train_y, args.epochs)
    train_seconds = time.perf_counter() - started
    print(f"train acc {accuracy(model, train_x, train_y):.4f}  "
          f"validation acc {accuracy(model, val_x, val_y):.4f}  "
          f"(data + training {train_seconds:.1f} s)")

    cam_images, _, cam_boxes = make_batch(np.random.default_rng(args.seed + 2), POINTING_IMAGES)
    hit_rate = grad_cam_pointing_game(model, preprocess(cam_images), cam_boxes)
    print(f"Grad-CAM pointing game: {hit_rate:.3f} of {POINTING_IMAGES} images")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "shapes.onnx"
    export_onnx(model, onnx_path)
    difference = check_onnx(model, onnx_path, val_x[:8])
    print(f"exported {onnx_path} ({onnx_path.stat().st_size} bytes), "
          f"max |onnx - torch| = {difference:.2e}")
    labels_path = out / "shapes.labels.txt"
    write_labels(labels_path)
    write_sidecar(out / "shapes.json", labels_path.name)
    write_examples(model, out / "examples", np.random.default_rng(args.seed + 3))

    total = directory_size(out)
    if total > MAX_ARTEFACT_BYTES:
        raise RuntimeError(f"{out} holds {total} bytes, more than {MAX_ARTEFACT_BYTES}")
    print(f"wrote {out} ({total} bytes) in {time.perf_counter() - started:.1f} s total")


if __name__ == "__main__":
    main()
