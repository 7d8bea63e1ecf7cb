"""The transformer layers of the ViT-family models (DeFM's ViT, Theia's DeiT, LingBot's RGB-D DINOv2), once.

Each model keeps its checkpoints' parameter names and its upstream's exact numerics; where the upstreams
differ (one qkv projection or three, the explicit attention's order of operations, LayerScale's init, the
FFN, how the position embedding is resized) the layers take it as an argument.

Every ViT-family model has the public method `position_embedding(rows, cols, dtype)` (PositionEmbedded):
the embedding its forward adds for a rows x cols patch grid. Export (backends/graph.py) computes it once
in torch and traces the model with that constant in its place.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

SCALE_QUERIES = "scale_queries"  # DINOv2: softmax((q * scale) @ k^T) @ v
SCALE_SCORES = "scale_scores"  # transformers: softmax((q @ k^T) * scale) @ v
EXPLICIT_ORDERS = (SCALE_QUERIES, SCALE_SCORES)


@runtime_checkable
class PositionEmbedded(Protocol):
    """A model whose forward adds `position_embedding(rows, cols, dtype)`: fixed for a fixed input size, so
    export puts it in the graph as a constant (tracing the interpolation fails: its scales become tensors)."""

    def position_embedding(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor: ...


def key_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, N) bool keys every query may attend to -> an additive (B, 1, 1, N) mask in `dtype`: a bool mask
    exports (fp16) as a float32 branch that the graph cannot type."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, float("-inf"))[:, None, None, :]


class Attention(nn.Module):
    """Multi-head self-attention.

    `split_qkv`: `query`, `key`, `value` projections (transformers' names) instead of one `qkv` (DINOv2's).
    `proj`: the output projection `proj`; False where the model applies its own under another name.
    `explicit`: the order of operations (EXPLICIT_ORDERS) of the explicit form, which matches its upstream
    exactly on the CPU; such a module has the flag `fused_attention` (models.use_fused_attention) choosing
    torch's fused kernel (SDPA) instead. None: always SDPA, as LingBot's upstream runs it.
    """

    def __init__(self, dim: int, heads: int, *, split_qkv: bool = False, proj: bool = True,
                 explicit: str | None = SCALE_QUERIES) -> None:
        super().__init__()
        if explicit is not None and explicit not in EXPLICIT_ORDERS:
            raise ValueError(f"explicit attention order must be one of {EXPLICIT_ORDERS} or None, got {explicit!r}")
        self.heads, self.split_qkv, self.explicit = heads, split_qkv, explicit
        if split_qkv:
            self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim) if proj else nn.Identity()
        if explicit is not None:
            self.fused_attention = False

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        if self.split_qkv:
            return tuple(p(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
                         for p in (self.query, self.key, self.value))
        return self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """`keep` (B, N) bool: the keys every query may attend to (None: all)."""
        b, n, c = x.shape
        q, k, v = self._heads(x)
        mask = None if keep is None else key_mask(keep, q.dtype)
        if self.explicit is None or self.fused_attention:  # fused kernels: equal to the explicit form within fp error
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            scores = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1) if self.explicit == SCALE_QUERIES
                      else (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5)
            x = (scores if mask is None else scores + mask).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    """A learned per-channel scale of a residual branch (DINOv2)."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """The GELU (erf) feed-forward, `fc1` and `fc2`."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLU(nn.Module):
    """DINOv2's SwiGLU feed-forward: 2/3 of `hidden`, rounded up to a multiple of 8, as its weights have it."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


FFNS = {"mlp": Mlp, "swiglu": SwiGLU}


class Block(nn.Module):
    """DINOv2's pre-norm block (LayerNorm eps 1e-6), each branch scaled by a LayerScale of init `init_values`;
    `explicit`: the attention's (Attention)."""

    def __init__(self, dim: int, heads: int, *, ffn: str, init_values: float,
                 explicit: str | None = SCALE_QUERIES) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, explicit=explicit)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FFNS[ffn](dim, 4 * dim)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), keep))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (B, N, dim), by one strided convolution `proj`."""

    def __init__(self, dim: int, patch: int, channels: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def init_weights(net: nn.Module, kinds: tuple[type[nn.Module], ...] = (nn.Linear,)) -> None:
    """The ViTs' random init (truncated normal, std 0.02; zero biases) of every module of `kinds`: for
    random-weight runs, as checkpoints replace it."""
    for m in net.modules():
        if isinstance(m, kinds):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


def resample_pos_embed(pos: torch.Tensor, rows: int, cols: int, dtype: torch.dtype, *, offset: float = 0.0,
                       antialias: bool = False, upcast: bool = True) -> torch.Tensor:
    """A (1, 1 + g * g, C) position embedding (class token, then a square g x g grid) for a rows x cols grid.

    At g x g it is `pos` itself, uncast (DINOv2 adds the parameter so). Otherwise the grid is resized
    bicubically in float32 (`upcast`; else in pos's dtype, as transformers does), to the size, or with
    `offset` by the scale (size + offset) / g as DINOv2 does (a slightly different map), and returned in `dtype`.
    """
    grid = math.isqrt(pos.shape[1] - 1)
    if rows == cols == grid:
        return pos
    pos = pos.float() if upcast else pos
    patch = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    if offset:
        size = {"scale_factor": ((rows + offset) / grid, (cols + offset) / grid)}
    else:
        size = {"size": (rows, cols)}
    patch = F.interpolate(patch, mode="bicubic", antialias=antialias, **size)
    return torch.cat((pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)), dim=1).to(dtype)
