"""Small vision transformers for the token-layer tests: ViT, DeiT (class + distillation tokens),
a Swin-style model (window attention, shifted windows, Einsum) and a hybrid (conv stem + blocks).

Each model keeps its blocks in ``self.blocks`` and each block its first LayerNorm in ``norm1``,
so the tests can hook the tensors pytorch-grad-cam's recipe explains.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention written out (q·kᵀ/√d, softmax, ·v), optionally with Einsum."""

    def __init__(self, dim: int, heads: int, einsum: bool = False):
        super().__init__()
        self.heads, self.einsum = heads, einsum
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scale = (d // self.heads) ** -0.5
        if self.einsum:
            weights = torch.einsum("bhid,bhjd->bhij", q, k).mul(scale).softmax(dim=-1)
            mixed = torch.einsum("bhij,bhjd->bhid", weights, v)
        else:
            weights = (q @ k.transpose(-2, -1)).mul(scale).softmax(dim=-1)
            mixed = weights @ v
        return self.proj(mixed.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, einsum: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, einsum)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch 4 on 32×32 (an 8×8 grid), ``extra`` tokens before the patches (1: ViT, 2: DeiT)."""

    def __init__(self, classes: int = 5, dim: int = 32, depth: int = 3, heads: int = 4, extra: int = 1,
                 patch: int = 4, size: int = 32):
        super().__init__()
        grid = size // patch
        self.extra = extra
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.tokens = nn.Parameter(torch.randn(1, extra, dim) * 0.5)
        self.position = nn.Parameter(torch.randn(1, extra + grid * grid, dim) * 0.5)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList([nn.Linear(dim, classes) for _ in range(extra)])

    def embed(self, x):
        patches = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.tokens.expand(x.shape[0], -1, -1), patches], dim=1) + self.position

    def forward(self, x):
        y = self.norm(self.blocks(self.embed(x)))
        return sum(head(y[:, i]) for i, head in enumerate(self.heads)) / self.extra  # DeiT: mean of both heads


class Hybrid(ViT):
    """A conv stem (two stride-2 3×3 convs and one more) instead of a patch embedding, then blocks."""

    def __init__(self, classes: int = 5, dim: int = 32, size: int = 32):
        super().__init__(classes, dim, depth=2, extra=1, size=size)
        self.patch = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.Conv2d(16, dim, 3, stride=2, padding=1), nn.ReLU())


class WindowBlock(nn.Module):
    """Swin-style: attention inside ``window``×``window`` windows of the (N, h·w, D) tokens, the grid
    rolled by ``shift`` first (and back after)."""

    def __init__(self, dim: int, heads: int, grid: int, window: int, shift: int):
        super().__init__()
        self.grid, self.window, self.shift = grid, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, einsum=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        n, t, d = x.shape
        mixed = self.window_attention(self.norm1(x).reshape(n, self.grid, self.grid, d))
        x = x + mixed.reshape(n, t, d)
        return x + self.mlp(self.norm2(x))

    def window_attention(self, y):
        """Attention inside the windows of an (N, g, g, D) grid, the grid rolled by ``shift`` first and back after."""
        n, g, _, d = y.shape
        w = self.window
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = y.reshape(n, g // w, w, g // w, w, d).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, d)
        mixed = self.attention(windows).reshape(n, g // w, g // w, w, w, d).permute(0, 1, 3, 2, 4, 5)
        mixed = mixed.reshape(n, g, g, d)
        if self.shift:
            mixed = torch.roll(mixed, shifts=(self.shift, self.shift), dims=(1, 2))
        return mixed


class Swin(nn.Module):
    """Patch 4 on 32×32, window 4, blocks alternating unshifted and shifted windows, mean-pooled."""

    def __init__(self, classes: int = 5, dim: int = 32, size: int = 32):
        super().__init__()
        grid = size // 4
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(*[WindowBlock(dim, 4, grid, 4, shift) for shift in (0, 2, 0)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def embed(self, x):
        return self.patch(x).flatten(2).transpose(1, 2)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x))).mean(dim=1))


class GridWindowBlock(WindowBlock):
    """The same block on a channels-last (N, h, w, D) grid, as newer Swin implementations keep it."""

    def forward(self, x):
        x = x + self.window_attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SwinGrid(Swin):
    """Swin-style on an (N, h, w, D) grid throughout, mean-pooled over both grid axes."""

    def __init__(self, classes: int = 5, dim: int = 32, size: int = 32):
        super().__init__(classes, dim, size)
        self.blocks = nn.Sequential(*[GridWindowBlock(dim, 4, size // 4, 4, shift) for shift in (0, 2, 0)])

    def embed(self, x):
        return self.patch(x).permute(0, 2, 3, 1)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x))).mean(dim=(1, 2)))


ARCHITECTURES = {
    "vit": lambda: ViT(extra=1),
    "deit": lambda: ViT(extra=2),
    "swin": Swin,
    "swin-grid": SwinGrid,
    "hybrid": Hybrid,
}
