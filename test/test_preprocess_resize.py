"""The banded resize products equal torch's antialiased bilinear resize (the ONNX graphs' resize)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from defm_ros.preprocess.resize import RESIZE_BLOCK, BandedResize, resize_bands, resize_matrix

SIZES = [(640, 224), (480, 224), (480, 308), (100, 250), (37, 37)]


@pytest.mark.parametrize(("n_in", "n_out"), SIZES)
def test_resize_matrix_is_torch_antialiased_bilinear(n_in, n_out):
    x = torch.rand(2, 3, n_in, 50) * 10
    ref = F.interpolate(x, size=(n_out, 50), mode="bilinear", align_corners=False, antialias=True)
    assert (resize_matrix(n_in, n_out) @ x - ref).abs().max() < 2e-6


@pytest.mark.parametrize(("n_in", "n_out"), SIZES)
def test_resize_bands_hold_every_tap_and_skip_the_zeros(n_in, n_out):
    m = resize_matrix(n_in, n_out)
    rebuilt = torch.zeros_like(m)
    for k, (i0, i1, w) in enumerate(resize_bands(n_in, n_out)):
        rebuilt[k * RESIZE_BLOCK:k * RESIZE_BLOCK + w.shape[0], i0:i1] = w
    assert torch.equal(rebuilt, m)
    kept = sum(w.numel() for _, _, w in resize_bands(n_in, n_out))
    if n_in > 2 * n_out:  # a downscale: the bands are a small part of the dense matrix
        assert kept < 0.25 * m.numel()


@pytest.mark.parametrize(("src", "dst"), [((480, 640), (224, 224)), ((48, 64), (224, 308)), ((30, 40), (30, 40))])
def test_banded_resize_of_planes(src, dst):
    x = torch.rand(2, 2, *src) * 5
    ref = F.interpolate(x, size=dst, mode="bilinear", align_corners=False, antialias=True)
    got = BandedResize(src, dst)(x)
    assert got.shape == ref.shape and (got - ref).abs().max() < 2e-6
