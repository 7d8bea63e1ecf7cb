"""Theia's input against the image processor it was trained with: transformers' ViTImageProcessor with
facebook/deit-*-patch16-224's config (size 224, mean = std = 0.5, PIL bilinear), on real colour frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from defm_ros.models.registry import FAMILIES
from defm_ros.preprocess.color import ColorNormalize, ColorPreprocess
from defm_ros.preprocess.depth import InputGeometry
from defm_ros.sample_data import color_pngs

transformers = pytest.importorskip("transformers", reason="transformers (the Theia test oracle) is not installed")


def processor(size: tuple[int, int]):
    cls = getattr(transformers, "ViTImageProcessorPil", None)  # transformers 5: the PIL-backed processor
    if cls is None:
        cls = transformers.ViTImageProcessor  # transformers 4: PIL-backed already
    return cls(size={"height": size[0], "width": size[1]}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
               resample=Image.BILINEAR, do_resize=True, do_rescale=True, do_normalize=True)


@pytest.fixture(scope="module")
def frames(shared_data) -> list[np.ndarray]:
    paths = color_pngs(shared_data)
    assert len(paths) == 4
    return [np.array(Image.open(p).convert("RGB")) for p in paths]


@pytest.mark.parametrize("size", [(224, 224), (224, 320), (480, 640), (336, 448)])
def test_equals_the_pil_processor_bit_for_bit(frames, size):
    prep = ColorPreprocess(InputGeometry(size, size), *FAMILIES["theia"].stats)
    batch = torch.from_numpy(np.stack(frames))
    got = prep(batch)
    ref = processor(size)(images=frames, return_tensors="pt")["pixel_values"]
    assert got.shape == ref.shape == (4, 3, *size) and got.dtype == torch.float32
    assert torch.equal(got, ref), (got - ref).abs().max()


def test_the_fixed_size_module_is_the_same_arithmetic(frames):
    prep = ColorPreprocess(InputGeometry((224, 224), (224, 224)), *FAMILIES["theia"].stats)
    batch = torch.from_numpy(np.stack(frames))
    assert torch.equal(ColorNormalize((480, 640), (224, 224), *FAMILIES["theia"].stats)(batch), prep(batch))
    assert isinstance(prep.fixed((480, 640)), ColorNormalize)


def test_torch_interpolate_is_what_this_replaces(frames):
    """For the record: torch's antialiased bilinear is close but not PIL (<=1 LSB on CPU uint8, worse on float)."""
    ref = processor((224, 224))(images=frames[0], return_tensors="pt")["pixel_values"]
    x = torch.from_numpy(frames[0]).permute(2, 0, 1)[None]
    tf = torch.nn.functional.interpolate(x.float(), size=(224, 224), mode="bilinear", antialias=True)
    assert ((tf * (1 / 255) - 0.5) / 0.5 - ref).abs().mean() > 1e-3
