"""Small torch models, one per task, each split into ``features`` (the layer onnxcam should pick
automatically) and ``head``, with the task's score written again in torch as the oracle."""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn
from torch.nn import functional as F


class Split(nn.Module):
    """forward(x) = head(features(x)); ``output`` post-processes the head's raw scores (S)."""

    final = None  # the output's final activation, applied in forward

    def forward(self, x):
        s = self.head(self.features(x))
        return s if self.final is None else self.final(s)


class UNetSegmenter(Split):
    """Encoder, one down/up level, a skip concatenation (the automatic layer), a conv head; Softmax over classes."""

    def __init__(self, classes=4):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(12, 8, 2, stride=2)
        self.head_layers = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))
        self.final = lambda s: torch.softmax(s, dim=1)

    def features(self, x):
        e = self.enc(x)
        return torch.cat([e, self.up(self.down(e))], dim=1)

    def head(self, a):
        return self.head_layers(a)


class DBLikeDetector(Split):
    """Two scales fused by upsampling and concatenation (the automatic layer), a DB-style head up to the
    input size: Conv→BN→ReLU→ConvTranspose→BN→ReLU→ConvTranspose, then Sigmoid. ``channels`` > 1:
    independent maps (CRAFT's region and affinity), ``offset`` one per channel or one for all."""

    def __init__(self, offset=1.5, channels=1):
        super().__init__()
        self.offset = torch.as_tensor(offset, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.c2 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.lat2, self.lat3 = nn.Conv2d(8, 8, 1), nn.Conv2d(16, 8, 1)
        self.head_layers = nn.Sequential(
            nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.ConvTranspose2d(8, 8, 2, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
            nn.ConvTranspose2d(8, channels, 2, stride=2))
        self.final = torch.sigmoid

    def features(self, x):
        p2 = self.c2(x)
        p3 = self.c3(p2)
        up = F.interpolate(self.lat3(p3), scale_factor=2, mode="nearest")
        return torch.cat([self.lat2(p2), up], dim=1)

    def head(self, a):
        return self.head_layers(a) + self.offset


class CTCRecogniser(Split):
    """Convs pooled to height 1 (the automatic layer), columns as time steps, a linear classifier per step;
    Softmax over characters. ``time_major`` returns (T, N, C) as LSTM-era exports do."""

    def __init__(self, characters=7, time_major=False):
        super().__init__()
        self.time_major = time_major
        self.convs = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d((8, 2)))
        self.classifier = nn.Linear(16, characters)
        self.final = lambda s: torch.softmax(s, dim=-1)

    def features(self, x):
        return self.convs(x)  # (N, 16, 1, W/4)

    def head(self, a):
        steps = a.squeeze(2).permute(0, 2, 1)  # (N, T, 16)
        s = self.classifier(steps)
        return s.permute(1, 0, 2) if self.time_major else s


class Regressor(Split):
    def __init__(self, outputs=3):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, outputs)

    def features(self, x):
        return self.convs(x)

    def head(self, a):
        return self.fc(a.mean(dim=(2, 3)))


class Embedder(Split):
    """An L2-normalised embedding, as face-recognition models end."""

    def __init__(self, dims=6):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, dims)
        self.final = lambda s: F.normalize(s, dim=1)

    def features(self, x):
        return self.convs(x)

    def head(self, a):
        return self.fc(a.mean(dim=(2, 3)))


class PooledMapClassifier(nn.Module):
    """SqueezeNet's head: a 1×1 Conv to the classes, global average pooling and a Softmax, kept 4-D:
    (N, C, 1, 1) probabilities (``flat``: flattened to (N, C) instead)."""

    def __init__(self, classes: int = 4, flat: bool = False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1), nn.ReLU())
        self.flat = flat

    def forward(self, x):
        pooled = F.adaptive_avg_pool2d(self.features(x), 1)
        return torch.softmax(pooled.flatten(1) if self.flat else pooled, dim=1)


def export(module: nn.Module, example: torch.Tensor, output_batch_axis: int = 0, opset: int = 17) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {output_batch_axis: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


# --- the tasks' scores, in torch (batch-first S) ---------------------------------------------------
def one_hot(index: torch.Tensor, depth: int) -> torch.Tensor:
    return F.one_hot(index.clamp(min=0), depth).to(torch.float32)


def segmentation_weights(s, targets, background=0):
    predicted = s.argmax(dim=1)  # (N, H, W)
    classes = s.shape[1]
    masks = F.one_hot(predicted, classes).permute(0, 3, 1, 2).float()
    areas = masks.sum(dim=(2, 3))
    areas[:, background] = areas[:, background].clamp(max=0.5)
    chosen = torch.where(targets < 0, areas.argmax(dim=1), targets)
    return one_hot(chosen, classes)[:, :, None, None] * masks


def dense_weights(s, threshold=0.5):
    firing = (torch.sigmoid(s) > threshold).float()
    fires = firing.amax(dim=(1, 2, 3), keepdim=True) > 0
    return torch.where(fires, firing, torch.ones_like(firing))


def dense_channel_weights(s, targets, threshold=0.5):
    """Several independent maps: channel target (0 by default), its firing pixels (all where none fires)."""
    firing = (torch.sigmoid(s) > threshold).float()
    fires = firing.amax(dim=(2, 3), keepdim=True) > 0
    chosen = torch.where(targets < 0, torch.zeros_like(targets), targets)
    return one_hot(chosen, s.shape[1])[:, :, None, None] * torch.where(fires, firing, torch.ones_like(firing))


def sequence_weights(s, targets, blank=0):
    best = s.argmax(dim=2)  # (N, T)
    characters = F.one_hot(best, s.shape[2]).float()
    read = (best != blank).float()
    path = torch.where(read.amax(dim=1, keepdim=True) > 0, read, torch.ones_like(read))
    chosen = one_hot(targets, s.shape[1])
    steps = torch.where((targets < 0)[:, None], path, chosen)
    return characters * steps[:, :, None]


def regression_weights(s, targets):
    chosen = one_hot(targets, s.shape[1])
    return torch.where((targets < 0)[:, None], torch.ones_like(s), chosen)


def cosine(e, reference):
    return F.cosine_similarity(e, reference, dim=1, eps=0)
