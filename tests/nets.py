"""Small, randomly initialised torch networks of the architectures Grad-CAM users run, and ONNX export.

Every builder is seeded, returns its module in eval mode together with the names (as in
``module.named_modules()``) of three target modules — early, middle and last convolutional
stage — whose OUTPUT is the activation a Grad-CAM user would pick. Channel counts are small so
that exporting and differentiating all of them takes seconds on a laptop CPU; ``resnet50`` is
the full-size exception, for benchmarks.

The weights are re-drawn so that activations stay of order one through the depth of the net
(He-normal convolutions, non-trivial BatchNorm statistics and affine parameters, a layer scale
far from ConvNeXt's 1e-6 default), so that every part of the network visibly contributes to the
gradient: a rule that drops a term cannot hide behind a near-zero branch.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "Arch",
    "ARCHITECTURES",
    "resnet",
    "mobilenet_v2",
    "densenet",
    "efficientnet",
    "convnext",
    "vgg",
    "resnet50",
    "resnet18",
    "mobilenet_v2_224",
    "efficientnet_b0_224",
    "convnext_tiny_224",
    "export_onnx",
]

Targets = tuple[str, str, str]


# --- initialisation ------------------------------------------------------------------------------
def _init(module: nn.Module, seed: int) -> nn.Module:
    """Seeded re-initialisation that keeps activations of order one; returns the module in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, _ConvNeXtBlock):
                m.gamma.copy_(torch.rand(m.gamma.shape, generator=gen) * 0.5 + 0.25)
    return module.eval()


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


# --- ResNet (basic blocks) -----------------------------------------------------------------------
class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()  # a module of its own: the block's output

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self, block: Callable, widths, depths, stem_width: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        cin, layers = stem_width, []
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = blocks[-1].out_channels if hasattr(blocks[-1], "out_channels") else width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, *rest = layers
        if rest:
            self.layer4 = rest[0]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        if hasattr(self, "layer4"):
            x = self.layer4(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet(num_classes: int = 10, seed: int = 0) -> tuple[nn.Module, Targets]:
    """ResNet-style, 3×64×64: 7×7/2 stem + max pool, one or two basic blocks per stage, GAP, Linear."""
    torch.manual_seed(seed)
    net = _ResNet(_BasicBlock, widths=(8, 16, 24), depths=(2, 1, 1), stem_width=8, num_classes=num_classes)
    return _init(net, seed), ("layer1", "layer2", "layer3")


def resnet18(num_classes: int = 1000, seed: int = 0) -> tuple[nn.Module, Targets]:
    """Full-size ResNet-18 (basic blocks [2, 2, 2, 2], widths 64..512), 3×224×224, for benchmarks."""
    torch.manual_seed(seed)
    net = _ResNet(_BasicBlock, widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), stem_width=64, num_classes=num_classes)
    return _init(net, seed), ("layer1", "layer3", "layer4")


# --- ResNet-50 (bottleneck blocks), for benchmarks ----------------------------------------------
class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.out_channels = cout
        self.conv1, self.bn1 = _conv_bn(cin, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)  # stride on the 3×3 (v1.5)
        self.conv3, self.bn3 = _conv_bn(width, cout, 1)
        self.relu = nn.ReLU()
        self.shortcut = (
            nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu_out = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu_out(y + self.shortcut(x))


def resnet50(num_classes: int = 1000, seed: int = 0) -> tuple[nn.Module, Targets]:
    """Standard bottleneck ResNet-50 ([3, 4, 6, 3], widths 64..2048), for 3×224×224 input."""
    torch.manual_seed(seed)
    net = _ResNet(_Bottleneck, widths=(64, 128, 256, 512), depths=(3, 4, 6, 3), stem_width=64,
                  num_classes=num_classes)
    return _init(net, seed), ("layer1", "layer3", "layer4")


# --- MobileNetV2 ---------------------------------------------------------------------------------
class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += _conv_bn(hidden, cout, 1)  # linear bottleneck: no activation
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class _MobileNetV2(nn.Module):
    # (expand ratio, output channels, stride)
    config = [(1, 8, 1), (6, 12, 2), (6, 12, 1), (6, 16, 2), (6, 16, 1)]

    def __init__(self, num_classes: int, config=None, stem: int = 16, head: int = 48):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, stem, 3, 2), nn.ReLU6())
        cin, blocks = stem, []
        for expand, cout, stride in config or self.config:
            blocks.append(_InvertedResidual(cin, cout, stride, expand))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(cin, head, 1), nn.ReLU6())
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def mobilenet_v2(num_classes: int = 10, seed: int = 0) -> tuple[nn.Module, Targets]:
    """MobileNetV2-style, 3×64×64: inverted residuals (1×1 expand, 3×3 depthwise, ReLU6, 1×1 project)."""
    torch.manual_seed(seed)
    return _init(_MobileNetV2(num_classes), seed), ("blocks.2", "blocks.4", "head")


def _repeat(stages) -> list[tuple]:
    """torchvision's stage table (..., repeats, stride, ...) as one row per block (stride on the first)."""
    rows = []
    for expand, cout, repeats, stride, *rest in stages:
        rows += [(expand, cout, stride if i == 0 else 1, *rest) for i in range(repeats)]
    return rows


def mobilenet_v2_224(num_classes: int = 1000, seed: int = 0) -> tuple[nn.Module, Targets]:
    """Full-size MobileNetV2 (torchvision's widths and depths, 17 blocks), 3×224×224, for benchmarks."""
    torch.manual_seed(seed)
    config = _repeat([(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1)])
    return _init(_MobileNetV2(num_classes, config, stem=32, head=1280), seed), ("blocks.2", "blocks.5", "head")


# --- DenseNet ------------------------------------------------------------------------------------
class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, features: list[torch.Tensor]):
        return self.body(torch.cat(features, 1))


class _DenseBlock(nn.Module):
    def __init__(self, cin: int, growth: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(_DenseLayer(cin + i * growth, growth) for i in range(depth))
        self.out_channels = cin + depth * growth

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


def _transition(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2))


class _DenseNet(nn.Module):
    def __init__(self, num_classes: int, growth: int = 6, depth: int = 3):
        super().__init__()
        stages: dict[str, nn.Module] = {"stem": nn.Sequential(*_conv_bn(3, 12, 3, 2), nn.ReLU())}
        cin = 12
        for i in range(3):
            block = _DenseBlock(cin, growth, depth)
            stages[f"block{i + 1}"] = block
            cin = block.out_channels
            if i < 2:
                stages[f"transition{i + 1}"] = _transition(cin, cin // 2)
                cin //= 2
        stages["norm"] = nn.BatchNorm2d(cin)
        stages["relu"] = nn.ReLU()
        self.features = nn.Sequential()
        for name, stage in stages.items():
            self.features.add_module(name, stage)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def densenet(num_classes: int = 10, seed: int = 0) -> tuple[nn.Module, Targets]:
    """DenseNet-style, 3×64×64: dense blocks (Concat along channels), transitions (1×1 conv + 2×2 avg pool)."""
    torch.manual_seed(seed)
    return _init(_DenseNet(num_classes), seed), ("features.block1", "features.block2", "features.relu")


# --- EfficientNet --------------------------------------------------------------------------------
class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int, kernel: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.SiLU()]
        layers += [*_conv_bn(hidden, hidden, kernel, stride, groups=hidden), nn.SiLU()]
        layers += [_SqueezeExcite(hidden, max(1, cin // 4)), *_conv_bn(hidden, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class _EfficientNet(nn.Module):
    # (expand ratio, output channels, stride, kernel)
    config = [(1, 8, 1, 3), (4, 12, 2, 3), (4, 12, 1, 3), (4, 16, 2, 5), (4, 16, 1, 5)]

    def __init__(self, num_classes: int, config=None, stem: int = 16, head: int = 48):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, stem, 3, 2), nn.SiLU())
        cin, blocks = stem, []
        for expand, cout, stride, kernel in config or self.config:
            blocks.append(_MBConv(cin, cout, expand, stride, kernel))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(cin, head, 1), nn.SiLU())
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean((2, 3)))  # exports as ReduceMean, unlike the SE's GlobalAveragePool


def efficientnet(num_classes: int = 10, seed: int = 0) -> tuple[nn.Module, Targets]:
    """EfficientNet-style, 3×64×64: MBConv blocks with SiLU and squeeze-and-excitation."""
    torch.manual_seed(seed)
    return _init(_EfficientNet(num_classes), seed), ("blocks.2", "blocks.4", "head")


def efficientnet_b0_224(num_classes: int = 1000, seed: int = 0) -> tuple[nn.Module, Targets]:
    """Full-size EfficientNet-B0 (torchvision's widths, depths and kernels, 16 MBConv blocks), 3×224×224."""
    torch.manual_seed(seed)
    config = _repeat([(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
                      (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)])
    return _init(_EfficientNet(num_classes, config, stem=32, head=1280), seed), ("blocks.2", "blocks.4", "head")


# --- ConvNeXt ------------------------------------------------------------------------------------
class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor: permute to NHWC, normalise, permute back."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()  # exact (erf) form
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))  # layer scale

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class _ConvNeXt(nn.Module):
    def __init__(self, num_classes: int, dims=(12, 24, 32), depths=(1, 2, 1)):
        super().__init__()
        self.downsample = nn.ModuleList([nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), _LayerNorm2d(dims[0], eps=1e-6))])
        for i in range(1, len(dims)):
            norm = _LayerNorm2d(dims[i - 1], eps=1e-6)
            self.downsample.append(nn.Sequential(norm, nn.Conv2d(dims[i - 1], dims[i], 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*(_ConvNeXtBlock(d) for _ in range(n))) for d, n in zip(dims, depths))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for down, stage in zip(self.downsample, self.stages):
            x = stage(down(x))
        return self.head(self.norm(x.mean((-2, -1))))


def convnext(num_classes: int = 10, seed: int = 0) -> tuple[nn.Module, Targets]:
    """ConvNeXt-style, 3×64×64: 7×7 depthwise conv, LayerNorm and Linear on NHWC, GELU, layer scale."""
    torch.manual_seed(seed)
    return _init(_ConvNeXt(num_classes), seed), ("stages.0", "stages.1", "stages.2")


def convnext_tiny_224(num_classes: int = 1000, seed: int = 0) -> tuple[nn.Module, Targets]:
    """Full-size ConvNeXt-T (dims 96..768, depths [3, 3, 9, 3]), 3×224×224, for benchmarks."""
    torch.manual_seed(seed)
    net = _ConvNeXt(num_classes, dims=(96, 192, 384, 768), depths=(3, 3, 9, 3))
    return _init(net, seed), ("stages.1", "stages.2", "stages.3")


# --- VGG -----------------------------------------------------------------------------------------
class _VGG(nn.Module):
    def __init__(self, num_classes: int, widths=(8, 16, 32)):
        super().__init__()
        stages, cin = [], 3
        for width in widths:
            stages.append(nn.Sequential(
                nn.Conv2d(cin, width, 3, 1, 1), nn.ReLU(),
                nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(),
                nn.MaxPool2d(2, 2),
            ))
            cin = width
        self.features = nn.Sequential(*stages)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * 4 * 4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg(num_classes: int = 10, seed: int = 0) -> tuple[nn.Module, Targets]:
    """VGG-style, 3×32×32: conv-ReLU pairs and 2×2 max pools, Flatten, Linear-ReLU-Linear.

    The targets are each stage's last ReLU, before its max pool (VGG16's usual Grad-CAM layer is the
    last such ReLU). Many pool windows are all 0 there, so the gradient check also pins the
    convention for ties: torch routes a window's gradient to its first maximum.
    """
    torch.manual_seed(seed)
    return _init(_VGG(num_classes), seed), ("features.0.3", "features.1.3", "features.2.3")


# --- registry and export -----------------------------------------------------------------------
@dataclass(frozen=True)
class Arch:
    build: Callable[..., tuple[nn.Module, Targets]]
    input_shape: tuple[int, ...]  # one sample, NCHW without N
    opsets: tuple[int, ...]  # opsets the parity suite exports it at


ARCHITECTURES: dict[str, Arch] = {
    "resnet": Arch(resnet, (3, 64, 64), (17, 13)),
    "mobilenet_v2": Arch(mobilenet_v2, (3, 64, 64), (17,)),
    "densenet": Arch(densenet, (3, 64, 64), (17,)),
    "efficientnet": Arch(efficientnet, (3, 64, 64), (17,)),
    "convnext": Arch(convnext, (3, 64, 64), (17, 13)),
    "vgg": Arch(vgg, (3, 32, 32), (17,)),
}


def export_onnx(module: nn.Module, example_input: torch.Tensor, opset: int = 17, dynamic_batch: bool = True,
                output_name: str = "logits") -> onnx.ModelProto:
    """Export with the legacy (TorchScript) exporter, as most deployed models were."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose; silence its deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, (example_input,), buffer, dynamo=False, opset_version=opset,
            input_names=["input"], output_names=[output_name],
            dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None,
        )
    return onnx.load_from_string(buffer.getvalue())
