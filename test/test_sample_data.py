"""Depth images -> metres: the unit from the stored type unless told, colour refused, and relative
mode only for the shipped relative samples or when asked."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from defm_ros.sample_data import load_depth_png


def _png(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


@pytest.mark.parametrize(("array", "unit", "scale"), [
    (np.full((4, 5), 1500, np.uint16), "mm", 0.001),
    (np.full((4, 5), 150, np.uint8), "cm", 0.01),
    (np.full((4, 5, 3), 150, np.uint8), "cm", 0.01),  # grey stored as RGB (the DeFM cups)
])
def test_unit_follows_the_stored_type_and_is_said(tmp_path, array, unit, scale):
    frame = load_depth_png(_png(tmp_path / "d.png", array))
    assert frame.mode == "metric" and frame.unit == unit
    assert frame.depth.shape == (4, 5) and frame.depth[0, 0] == np.float32(array.flat[0]) * np.float32(scale)
    assert f"metric, {unit}" in frame.assumed and "bit" in frame.assumed


def test_unit_and_mode_can_be_overridden(tmp_path):
    path = _png(tmp_path / "d.png", np.full((4, 5), 150, np.uint8))
    frame = load_depth_png(path, unit="mm")
    assert frame.unit == "mm" and frame.depth[0, 0] == np.float32(0.15) and "--unit" in frame.assumed
    rel = load_depth_png(path, mode="relative")
    assert rel.mode == "relative" and rel.depth[0, 0] == 150 and "--mode" in rel.assumed


def test_colour_image_is_refused(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    with pytest.raises(ValueError, match="is a colour image"):
        load_depth_png(_png(tmp_path / "rgb.png", rgb))


def test_not_an_image_is_a_clear_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable image"):
        load_depth_png(tmp_path / "x.png")


def test_only_the_shipped_drawers_are_relative(tmp_path, shared_data):
    shipped = next((shared_data / "defm_examples" / "drawers").glob("*.png"))
    assert load_depth_png(shipped).mode == "relative"
    mine = tmp_path / "drawers"
    mine.mkdir()
    assert load_depth_png(_png(mine / "d.png", np.full((4, 5), 150, np.uint8))).mode == "metric"
