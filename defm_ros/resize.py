"""torch's antialiased bilinear resize as constant banded matrix products, for fixed-size graphs.

ONNX Resize (opset 18 antialias) uses another filter support than torch and upstream, and is off by
up to 1e-2 on real depth; products with torch's own weights are off by float rounding only (5e-7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESIZE_BLOCK = 32  # outputs per block of the banded products


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of torch's antialiased bilinear resize along one axis.

    Resizing an identity gives the weights themselves, so `R_h @ x @ R_w.T` equals
    F.interpolate(x, antialias=True) to float rounding. The identity is float32 on purpose: torch's
    float32 kernel rounds its weights, and float64 weights would be off from it (and so from
    upstream) by up to 1e-4 on noisy input.
    """
    eye = torch.eye(n_in)[None, None]
    out = F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].float()


def resize_bands(n_in: int, n_out: int, block: int = RESIZE_BLOCK) -> list[tuple[int, int, torch.Tensor]]:
    """resize_matrix in blocks of `block` outputs, each cut to the input span its taps reach.

    The matrix is banded (a handful of taps per output), so the blocks' products leave out the dense
    product's multiplications by zero: 85 % of them from 640x480 to 224x224, with the same sums.
    """
    m = resize_matrix(n_in, n_out)
    bands = []
    for o0 in range(0, n_out, block):
        w = m[o0:o0 + block]
        taps = w.ne(0).any(0).nonzero().flatten()
        i0, i1 = int(taps[0]), int(taps[-1]) + 1
        bands.append((i0, i1, w[:, i0:i1].contiguous()))
    return bands


class BandedResize(nn.Module):
    """Resize the last two dims from `in_size` to `out_size` (H, W) by banded products (traceable)."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.identity = tuple(in_size) == tuple(out_size)
        if not self.identity:  # plain attributes: they become constants of a traced graph
            self.rows = resize_bands(in_size[0], out_size[0])
            self.cols = [(i0, i1, w.T.contiguous()) for i0, i1, w in resize_bands(in_size[1], out_size[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        x = torch.cat([x[..., i0:i1] @ w for i0, i1, w in self.cols], dim=-1)
        return torch.cat([w @ x[..., i0:i1, :] for i0, i1, w in self.rows], dim=-2)
