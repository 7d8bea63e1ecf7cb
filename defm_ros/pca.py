"""Dense features -> RGB by their first three principal components, as in the DeFM paper's figures."""

from __future__ import annotations

from typing import Any

import numpy as np


def pca_basis(dense: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Mean (C,) and the top-k components (k, C) of a (C, h, w) map, signs fixed for stable colours."""
    x = dense.reshape(dense.shape[0], -1).T.astype(np.float64)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:k]
    # SVD signs are arbitrary; make each component's largest loading positive so colours don't flip.
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(1)])
    return mean, comps * signs[:, None]


def pca_rgb(dense: Any, out_size: tuple[int, int] | None = None, basis: tuple | None = None) -> np.ndarray:
    """(C, h, w) features -> (H, W, 3) uint8, upsampled to out_size (H, W) with nearest neighbours."""
    if hasattr(dense, "detach"):
        dense = dense.detach().cpu().numpy()
    dense = np.asarray(dense, dtype=np.float32)
    if dense.ndim != 3:
        raise ValueError(f"dense must be (C, h, w), got shape {dense.shape}")
    c, h, w = dense.shape
    mean, comps = basis if basis is not None else pca_basis(dense)
    proj = (dense.reshape(c, -1).T - mean) @ comps.T  # (h*w, k)
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    if rgb.shape[1] < 3:
        rgb = np.pad(rgb, ((0, 0), (0, 3 - rgb.shape[1])))
    img = (rgb.reshape(h, w, 3) * 255).astype(np.uint8)
    if out_size is not None:
        rows = (np.arange(out_size[0]) * h // out_size[0]).clip(0, h - 1)
        cols = (np.arange(out_size[1]) * w // out_size[1]).clip(0, w - 1)
        img = img[rows][:, cols]
    return img


def depth_colormap(depth_m: np.ndarray, max_depth: float | None = None) -> np.ndarray:
    """Depth in metres -> (H, W, 3) uint8, near = warm, far = cool, invalid (0/NaN/inf) = black."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    valid = d > 0
    top = max_depth or (float(np.percentile(d[valid], 99)) if valid.any() else 1.0)
    t = np.clip(d / max(top, 1e-6), 0, 1)
    stops = np.array([[180, 4, 38], [240, 120, 40], [250, 230, 90], [90, 190, 190], [40, 60, 160]], np.float32)
    pos = t * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    rgb = stops[i] * (1 - f) + stops[i + 1] * f
    rgb[~valid] = 0
    return rgb.astype(np.uint8)
