"""Antialiased resizes as constant banded matrix products, for exported graphs and exact parity.

- torch's antialiased bilinear (what DeFM trained with, through torchvision): `BandedResize`. ONNX
  Resize (opset 18 antialias) uses another filter support and is off by up to 1e-2 on real depth;
  products with torch's own weights are off by float rounding only (5e-7).
- PIL's bilinear resample (what Theia's image processor used): `PilBilinear`, bit-exact. PIL computes
  each pass in fixed point (22 fractional bits, rounded, clipped to 0..255) and resizes horizontally
  first; float64 products with the same integer weights hold those sums exactly, on any device.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

RESIZE_BLOCK = 32  # outputs per block of the banded products
PIL_PRECISION_BITS = 22  # 32 - 8 - 2: PIL's fixed point for 8-bit images


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


@functools.cache
def pil_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) integer weights (as float64) of PIL's bilinear resample along one axis, scaled by
    2**22: the triangle filter stretched by the downscale factor, normalized per output, then rounded."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = filterscale  # bilinear: support 1, stretched when downscaling (antialias)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        w = [max(0.0, 1.0 - abs((i - center + 0.5) / filterscale)) for i in range(lo, hi)]
        total = sum(w)
        m[o, lo:hi] = torch.tensor([int((v / total if total else v) * (1 << PIL_PRECISION_BITS) + 0.5) for v in w],
                                   dtype=torch.float64)
    return m


def bands(m: torch.Tensor, block: int = RESIZE_BLOCK) -> list[tuple[int, int, torch.Tensor]]:
    """A banded resize matrix in blocks of `block` outputs, each cut to the input span its taps reach.

    A handful of taps per output, so the blocks' products leave out the dense product's
    multiplications by zero: 85 % of them from 640x480 to 224x224, with the same sums.
    """
    out = []
    for o0 in range(0, m.shape[0], block):
        w = m[o0:o0 + block]
        taps = w.ne(0).any(0).nonzero().flatten()
        i0, i1 = int(taps[0]), int(taps[-1]) + 1
        out.append((i0, i1, w[:, i0:i1].contiguous()))
    return out


def resize_bands(n_in: int, n_out: int, block: int = RESIZE_BLOCK) -> list[tuple[int, int, torch.Tensor]]:
    """bands() of torch's antialiased bilinear weights."""
    return bands(resize_matrix(n_in, n_out), block)


class _Banded(nn.Module):
    """Last two dims resized by banded products: columns, then rows (plain attributes: graph constants)."""

    def __init__(self, rows: torch.Tensor | None, cols: torch.Tensor | None) -> None:
        super().__init__()
        self.rows = bands(rows) if rows is not None else None
        self.cols = [(i0, i1, w.T.contiguous()) for i0, i1, w in bands(cols)] if cols is not None else None

    def to_device(self, device: torch.device) -> _Banded:
        """The band matrices moved to `device` (they are plain attributes, which Module.to leaves)."""
        for name in ("rows", "cols"):
            if getattr(self, name):
                setattr(self, name, [(i0, i1, w.to(device)) for i0, i1, w in getattr(self, name)])
        return self

    def _cols(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., i0:i1] @ w for i0, i1, w in self.cols], dim=-1) if self.cols else x

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([w @ x[..., i0:i1, :] for i0, i1, w in self.rows], dim=-2) if self.rows else x


class BandedResize(_Banded):
    """torch's antialiased bilinear resize of the last two dims from `in_size` to `out_size` (H, W)."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        same = tuple(in_size) == tuple(out_size)
        super().__init__(None if same else resize_matrix(in_size[0], out_size[0]),
                         None if same else resize_matrix(in_size[1], out_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._rows(self._cols(x))


class PilBilinear(_Banded):
    """PIL's `Image.resize(..., BILINEAR)` of 8-bit images, exactly: float64 in (values 0..255), float64
    out (integers 0..255). Each axis is resampled only if its size changes, horizontally first."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__(pil_bilinear_matrix(in_size[0], out_size[0]) if in_size[0] != out_size[0] else None,
                         pil_bilinear_matrix(in_size[1], out_size[1]) if in_size[1] != out_size[1] else None)

    @staticmethod
    def _fixed_point(x: torch.Tensor) -> torch.Tensor:
        return torch.floor((x + (1 << (PIL_PRECISION_BITS - 1))) * (1.0 / (1 << PIL_PRECISION_BITS))).clamp(0, 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cols:
            x = self._fixed_point(self._cols(x))
        if self.rows:
            x = self._fixed_point(self._rows(x))
        return x
