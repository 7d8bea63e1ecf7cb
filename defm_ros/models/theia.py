"""Theia's backbone: the transformers ViTModel that `facebook/deit-{tiny,small,base}-patch16-224` configure,
written out so that the runtime needs no transformers (tested against it in test/test_theia.py).

Patch 16, 12 pre-norm layers, GELU (erf), LayerNorm eps 1e-12, qkv bias, a class token, no
distillation token; the pooler is replaced by identity, as Theia does, so its features are the final
LayerNorm's output. Parameter names are ViTModel's, which Theia's checkpoints hold under
`backbone.model.` (the spec's checkpoint_prefix, which models/weights.py strips).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SCALE_SCORES, init_weights, resample_pos_embed
from .layers import Attention as SelfAttention
from .registry import FAMILIES, ModelSpec

PATCH = FAMILIES["theia"].patch
PRETRAIN_SIZE = 224
LN_EPS = 1e-12


class PatchEmbeddings(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        grid = PRETRAIN_SIZE // PATCH
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.patch_embeddings = PatchEmbeddings(dim)


class Dense(nn.Module):
    """transformers nests each projection as `<name>.dense`; this keeps its parameter names."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        # transformers' eager order of operations, so CPU fp32 features match it to 1e-6
        self.attention = SelfAttention(dim, heads, split_qkv=True, proj=False, explicit=SCALE_SCORES)
        self.output = Dense(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim, eps=LN_EPS)
        self.attention = Attention(dim, heads)
        self.layernorm_after = nn.LayerNorm(dim, eps=LN_EPS)
        self.intermediate = Dense(dim, 4 * dim)
        self.output = Dense(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.layernorm_before(x)) + x
        return self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x)))) + x


class LayerStack(nn.Module):
    def __init__(self, dim: int, heads: int, depth: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(dim, heads) for _ in range(depth))


class TheiaViT(nn.Module):
    """Returns (class token (B, C), patch tokens (B, C, H/16, W/16)), both after the final LayerNorm."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        dim = spec.cls_dim
        self.embeddings = Embeddings(dim)
        self.encoder = LayerStack(dim, spec.num_heads, spec.depth)
        self.layernorm = nn.LayerNorm(dim, eps=LN_EPS)
        init_weights(self, (nn.Linear, nn.Conv2d))  # transformers' ViT init (initializer_range 0.02)
        nn.init.trunc_normal_(self.embeddings.position_embeddings, std=0.02)
        nn.init.trunc_normal_(self.embeddings.cls_token, std=0.02)

    def position_embedding(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """The (1, 1 + rows * cols, C) embedding forward adds (layers.PositionEmbedded): transformers'
        interpolate_pos_encoding, bicubic to the grid in the parameter's dtype; as trained at 224x224."""
        pos = self.embeddings.position_embeddings
        return resample_pos_embed(pos, rows, cols, dtype, upcast=False).to(dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, height, width = x.shape
        h, w = height // PATCH, width // PATCH
        x = self.embeddings.patch_embeddings(x)
        x = torch.cat((self.embeddings.cls_token.expand(b, -1, -1).to(x.dtype), x), dim=1)
        x = x + self.position_embedding(h, w, x.dtype)
        for layer in self.encoder.layer:
            x = layer(x)
        x = self.layernorm(x)
        return x[:, 0], x[:, 1:].reshape(b, h, w, -1).permute(0, 3, 1, 2)
