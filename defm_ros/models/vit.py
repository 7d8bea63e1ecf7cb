"""DINOv2-style ViT as DeFM trained it: SwiGLU FFN, LayerScale, chunked blocks, no registers.

Parameter names match the official checkpoints, so they load strictly. There is no xFormers
dependency.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import SCALE_QUERIES, Block, PatchEmbed, init_weights, resample_pos_embed
from .registry import FAMILIES, ModelSpec

PATCH = FAMILIES["vit"].patch
PRETRAIN_SIZE = 224
INTERPOLATE_OFFSET = 0.1
LAYERSCALE_INIT = 1e-5
BLOCK_CHUNKS = 4


class DeFMViT(nn.Module):
    """Returns (class token (B, C), patch tokens (B, C, H/14, W/14)), both after the final norm."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        dim, depth = spec.cls_dim, spec.depth
        grid = PRETRAIN_SIZE // PATCH
        self.patch_embed = PatchEmbed(dim, PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training-only, kept for strict loading
        blocks = [Block(dim, spec.num_heads, ffn="swiglu", init_values=LAYERSCALE_INIT, explicit=SCALE_QUERIES)
                  for _ in range(depth)]
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
        init_weights(self)

    def position_embedding(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """The (1, 1 + rows * cols, C) embedding forward adds (layers.PositionEmbedded): upstream's resize by
        (size + 0.1) / 16, in float32; at 16 x 16 the parameter itself, uncast."""
        return resample_pos_embed(self.pos_embed, rows, cols, dtype, offset=INTERPOLATE_OFFSET)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, H, W = x.shape
        h, w = H // PATCH, W // PATCH
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(b, -1, -1).to(x.dtype), x), dim=1)
        x = x + self.position_embedding(h, w, x.dtype)
        for blk in self._blocks:
            x = blk(x)
        x = self.norm(x)
        dense = x[:, 1:].reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return x[:, 0], dense
