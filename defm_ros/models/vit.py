"""DINOv2-style ViT as DeFM trained it: SwiGLU FFN, LayerScale, chunked blocks, no registers.

Parameter names match the official checkpoints, so they load strictly. There is no xFormers
dependency.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import ModelSpec

PATCH = 14
PRETRAIN_SIZE = 224
INTERPOLATE_OFFSET = 0.1
LAYERSCALE_INIT = 1e-5
BLOCK_CHUNKS = 4


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, channels: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    fused_attention = False  # models.use_fused_attention

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if self.fused_attention:  # fused flash/memory-efficient kernels; equal to the explicit form within fp error
            x = F.scaled_dot_product_attention(q, k, v)
        else:  # upstream's exact operation order, so CPU fp32 features match the reference to 1e-5
            x = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), LAYERSCALE_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DeFMViT(nn.Module):
    """Returns (class token (B, C), patch tokens (B, C, H/14, W/14)), both after the final norm."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        dim, depth = spec.cls_dim, spec.depth
        grid = PRETRAIN_SIZE // PATCH
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training-only, kept for strict loading
        blocks = [Block(dim, spec.num_heads) for _ in range(depth)]
        # Checkpoints index blocks as blocks.<chunk>.<global index>; identities pad each chunk.
        chunk = depth // BLOCK_CHUNKS
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.Identity()] * start + blocks[start : start + chunk])
            for start in range(0, depth, chunk)
        )
        self._blocks = blocks
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def _pos_embed(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        if h == w and h * w == n:
            return self.pos_embed
        grid = int(math.sqrt(n))
        pos = self.pos_embed.float()
        patch = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        # Upstream scales by (size + 0.1) / grid rather than giving the size; kept for identical maps.
        scale = ((h + INTERPOLATE_OFFSET) / grid, (w + INTERPOLATE_OFFSET) / grid)
        patch = F.interpolate(patch, scale_factor=scale, mode="bicubic", antialias=False)
        patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat((pos[:, :1], patch), dim=1).to(dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, H, W = x.shape
        h, w = H // PATCH, W // PATCH
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(b, -1, -1).to(x.dtype), x), dim=1)
        x = x + self._pos_embed(h, w, x.dtype)
        for blk in self._blocks:
            x = blk(x)
        x = self.norm(x)
        dense = x[:, 1:].reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return x[:, 0], dense
