"""Small Vision Transformers (DeiT shapes): class token, learned position embedding, pre-norm blocks.

Registered: ``vit-micro`` (dim 64, depth 4, heads 2), ``vit-tiny``/``deit-tiny`` (192, 12, 3) and
``vit-small``/``deit-small`` (384, 12, 6). Every shape argument can be overridden by keyword. Blocks are
addressable as ``blocks.0`` ... for hooks; attention is plain Linear/matmul/softmax so it exports to ONNX.

Usage::

    from shrink.models import build_model
    model = build_model("vit-tiny", image_size=32, patch_size=4, num_classes=100)
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from shrink.errors import UserError
from shrink.models.registry import MODELS


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` Linear and a ``proj`` Linear.

    The head width is read from ``qkv`` at run time, so a pruned ``qkv`` keeps working.
    Usage: ``Attention(dim=192, heads=3)(tokens)``
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise UserError(f"ViT dim {dim} is not divisible by heads {heads}; pick dim = heads * head width")
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        head_dim = self.qkv.out_features // (3 * self.num_heads)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * head_dim**-0.5, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * head_dim)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Usage: ``Block(dim=192, heads=3, mlp_ratio=4.0)(tokens)``
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifier on the class token. Usage: ``VisionTransformer(32, 4, 3, 10, 192, 12, 3, 4.0)``."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        in_channels: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        if patch_size <= 0 or image_size % patch_size:
            raise UserError(f"ViT image_size {image_size} is not a multiple of patch_size {patch_size}")
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((cls, tokens), dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def vit(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 192,
    depth: int = 12,
    heads: int = 3,
    mlp_ratio: float = 4.0,
) -> nn.Module:
    """Build a ViT; the defaults are DeiT-tiny on 32x32 images with 4x4 patches.

    Usage: ``vit(num_classes=10, dim=384, heads=6)``
    """
    return VisionTransformer(image_size, patch_size, in_channels, num_classes, dim, depth, heads, mlp_ratio)


MODELS.add("vit-micro", functools.partial(vit, dim=64, depth=4, heads=2))
MODELS.add("vit-tiny", functools.partial(vit, dim=192, depth=12, heads=3), aliases=("deit-tiny",))
MODELS.add("vit-small", functools.partial(vit, dim=384, depth=12, heads=6), aliases=("deit-small",))
