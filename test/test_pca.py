"""PCA visualisation: structure in the features shows up as colour, deterministically."""

from __future__ import annotations

import numpy as np
import torch

from defm_ros.pca import depth_colormap, pca_rgb


def test_regions_with_different_features_get_different_colours():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((64, 8, 8)).astype(np.float32) * 0.01
    dense[:5, :, :4] += 3.0  # left half differs along a few channels
    img = pca_rgb(dense, out_size=(80, 80))
    assert img.shape == (80, 80, 3) and img.dtype == np.uint8
    left, right = img[:, :40].reshape(-1, 3).mean(0), img[:, 40:].reshape(-1, 3).mean(0)
    assert np.abs(left - right).max() > 100
    np.testing.assert_array_equal(img, pca_rgb(torch.from_numpy(dense), out_size=(80, 80)))


def test_depth_colormap_marks_invalid_pixels_black():
    d = np.array([[0.0, np.nan, 1.0, 5.0]], np.float32)
    rgb = depth_colormap(d)
    assert (rgb[0, :2] == 0).all() and rgb[0, 2].any() and not np.array_equal(rgb[0, 2], rgb[0, 3])
