"""The shared real RGB-D scenes (../shared/data/rgbd_examples) as the tests read them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def scene(root: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scene `name`'s colour (uint8 RGB), raw depth (uint16 mm) and 3x3 camera matrix, aligned with each other."""
    from PIL import Image

    folder = root / "rgbd_examples" / name
    rgb = np.array(Image.open(next(folder.glob("rgb.*"))).convert("RGB"))
    mm = np.asarray(Image.open(folder / "raw_depth.png")).astype(np.uint16)
    return rgb, mm, np.loadtxt(folder / "intrinsics.txt").reshape(3, 3)


def depth_frames(root: Path) -> list[np.ndarray]:
    """Every scene's raw depth (uint16 mm) in name order: the frames the test bags hold."""
    from defm_ros.sample_data import load_depth_png

    files = sorted((root / "rgbd_examples").glob("*/raw_depth.png"))
    assert files, "rgbd_examples missing"
    return [load_depth_png(f).raw.astype(np.uint16) for f in files]
