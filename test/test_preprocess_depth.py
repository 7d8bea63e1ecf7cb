"""Metric-aware normalization: parity with upstream defm.utils within 1e-5 (SPEC §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defm_ros.models.registry import FAMILIES
from defm_ros.preprocess.depth import InputGeometry, normalize_depth
from defm_ros.sample_data import depth_pngs, load_depth_png

from .helpers.oracles import preprocess_depth_batch, preprocess_depth_dav2, preprocess_depth_image

DEFM = FAMILIES["vit"].stats  # DeFM's mean and std

TOL = 1e-5


KINDS = ("plain", "specials", "constant", "zeros", "far")


def _synthetic(kind: str, shape=(120, 160)) -> np.ndarray:
    rng = np.random.default_rng(KINDS.index(kind))  # the same frames in every run (hash() is salted per process)
    d = rng.uniform(0.2, 12.0, shape).astype(np.float32)
    if kind == "specials":
        d[:5] = 0
        d[10, :7] = np.nan
        d[11, :7] = np.inf
        d[12, :7] = -np.inf
        d[13, :7] = -3.0
        d[20:30, 20:30] = 250.0
    elif kind == "constant":
        d[:] = 3.0
    elif kind == "zeros":
        d[:] = 0.0
    elif kind == "far":
        d *= 20.0  # beyond the 100 m clip and the 9 m C2 knee
    return d


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(224, 224), (98, 140)])
def test_matches_upstream_image_on_synthetic(kind, size):
    d = _synthetic(kind)
    ref = preprocess_depth_image(d.copy(), target_size=size, patch_size=14)
    ours = normalize_depth(torch.from_numpy(d), InputGeometry.for_model(size, 14, pad=False), *DEFM)
    assert ours.shape == ref.shape
    assert torch.isfinite(ours).all()
    assert (ours - ref).abs().max().item() <= TOL


def test_matches_upstream_on_real_frames(shared_data):
    files = depth_pngs(shared_data / "defm_examples" / "ladders")[:3] + depth_pngs(shared_data / "rgbd_examples")
    assert files
    for path in files:
        frame = load_depth_png(path)
        for size in [(224, 224), (224, 308)]:
            ref = preprocess_depth_image(frame.depth.copy(), target_size=size, patch_size=14)
            ours = normalize_depth(torch.from_numpy(frame.depth), InputGeometry.for_model(size, 14, pad=False), *DEFM)
            assert (ours - ref).abs().max().item() <= TOL, path


def test_batch_matches_upstream_batch_with_cnn_padding(shared_data):
    frames = [load_depth_png(p).depth for p in depth_pngs(shared_data / "rgbd_examples")]
    batch = np.stack(frames)
    batch[0, :3, :3] = np.nan
    for size in [(224, 224), (200, 300)]:
        ref = preprocess_depth_batch(batch.copy(), target_size=size, cnn_padding=True)
        ours = normalize_depth(torch.from_numpy(batch), InputGeometry.for_model(size, 32, pad=True), *DEFM)
        assert ours.shape == ref.shape == (len(frames), 3, -(-size[0] // 32) * 32, -(-size[1] // 32) * 32)
        assert (ours - ref).abs().max().item() <= TOL


def test_vit_geometry_crops_to_patch_multiples_like_upstream():
    d = _synthetic("plain", (100, 130))
    ref = preprocess_depth_image(d, target_size=(100, 130), patch_size=14)
    ours = normalize_depth(torch.from_numpy(d), InputGeometry.for_model((100, 130), 14, pad=False), *DEFM)
    assert ours.shape == ref.shape == (1, 3, 98, 126)


def test_relative_mode_matches_upstream_dav2(shared_data):
    for path in depth_pngs(shared_data / "defm_examples" / "drawers")[:3]:
        frame = load_depth_png(path)
        assert frame.mode == "relative"
        ref = preprocess_depth_dav2(frame.depth.copy(), target_size=224, patch_size=14)
        ours = normalize_depth(torch.from_numpy(frame.depth), InputGeometry.for_model((224, 224), 14, False), *DEFM,
                               mode="relative")
        assert (ours - ref).abs().max().item() <= TOL


def test_channels_have_their_meaning():
    """C1 and C2 depend on absolute depth; C3 only on the image's own range."""
    geom = InputGeometry.for_model((28, 28), 14, pad=False)
    near = torch.full((28, 28), 1.0)
    near[0, 0] = 2.0
    out_near = normalize_depth(near, geom, *DEFM)
    out_far = normalize_depth(near * 5, geom, *DEFM)
    assert not torch.allclose(out_near[:, 0], out_far[:, 0])
    assert torch.allclose(out_near[:, 2], out_far[:, 2], atol=0.2)


def test_rejects_bad_shapes_and_modes():
    geom = InputGeometry.for_model((28, 28), 14, pad=False)
    with pytest.raises(ValueError, match="shape"):
        normalize_depth(torch.zeros(1, 1, 4, 4), geom, *DEFM)
    with pytest.raises(ValueError, match="depth_mode"):
        normalize_depth(torch.zeros(4, 4), geom, *DEFM, mode="inverse")
    with pytest.raises(ValueError, match="smaller than one"):
        InputGeometry.for_model((10, 100), 14, pad=False)
