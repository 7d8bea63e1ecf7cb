"""sensor_msgs colour messages -> uint8 RGB (H, W, 3), with no rclpy needed.

sensor_msgs/Image in rgb8, bgr8, rgba8 or bgra8 (row padding in `step` respected), and
image_transport's `compressed` CompressedImage (JPEG or PNG; format "jpeg", "png" or
"rgb8; jpeg compressed bgr8" as realsense2_camera and zed_wrapper publish it). Every malformed input
raises ColorDecodeError before any large allocation, so a lying header cannot cost memory.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from .depth import MAX_SIDE
from .depth import RAW_ENCODINGS as DEPTH_ENCODINGS

# encoding -> (channels, order of R, G, B in a pixel)
RAW_ENCODINGS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)), "bgra8": (4, (2, 1, 0))}
CODECS = ("jpeg", "png")
COMPRESSED_MAX_RATIO = 1100  # above deflate's best case (~1032:1); JPEG compresses far less


class ColorDecodeError(ValueError):
    """A colour message that cannot be turned into RGB; the text says why."""


def _check_dims(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ColorDecodeError(f"zero-size image ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ColorDecodeError(f"implausible image size {width}x{height} (limit {MAX_SIDE} per side)")


def decode_image(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image in rgb8, bgr8, rgba8 or bgra8 -> (H, W, 3) uint8 RGB."""
    enc = str(msg.encoding)
    if enc not in RAW_ENCODINGS:
        hint = " (that is depth: run a DeFM model on it)" if enc in DEPTH_ENCODINGS else ""
        raise ColorDecodeError(f"unsupported colour encoding {enc!r}{hint}; expected one of {sorted(RAW_ENCODINGS)}")
    channels, order = RAW_ENCODINGS[enc]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_dims(height, width)
    row = width * channels
    if step < row:
        raise ColorDecodeError(f"step {step} is shorter than a {enc} row of {width} pixels ({row} bytes)")
    size = len(msg.data)
    if size != step * height:
        raise ColorDecodeError(f"data has {size} bytes, but step*height = {step}*{height} = {step * height}")
    pixels = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row].reshape(height, width, channels)
    if order == (0, 1, 2) and channels == 3 and step == row:
        return pixels  # a view of the message buffer
    return np.ascontiguousarray(pixels[..., list(order)])


def _open_rgb(pil: Any, data: bytes) -> np.ndarray:
    with pil.open(io.BytesIO(data)) as im:
        if im.format not in ("JPEG", "PNG"):
            raise ColorDecodeError(f"compressed payload is {im.format}, not JPEG or PNG")
        _check_dims(im.height, im.width)
        if im.height * (3 * im.width + 1) > COMPRESSED_MAX_RATIO * len(data):
            raise ColorDecodeError(f"compressed image claims {im.width}x{im.height} pixels but holds only "
                                   f"{len(data)} bytes (truncated or corrupt)")
        if im.mode.startswith("I") or im.mode == "F":
            raise ColorDecodeError(f"compressed image has mode {im.mode} (16/32-bit: depth?), not colour")
        return np.asarray(im.convert("RGB"))


def decode_compressed(msg: Any) -> np.ndarray:
    """An image_transport `compressed` CompressedImage (JPEG or PNG) -> (H, W, 3) uint8 RGB."""
    from PIL import Image

    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise ColorDecodeError(f"format {msg.format!r} is compressedDepth (depth): run a DeFM model on it")
    if not any(c in fmt for c in CODECS):
        raise ColorDecodeError(f"unsupported compressed format {msg.format!r}; expected jpeg or png")
    data = bytes(msg.data)
    if not data:
        raise ColorDecodeError("compressed image message holds no data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size checks below are ours
            rgb = _open_rgb(Image, data)
    except ColorDecodeError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise ColorDecodeError(f"corrupt compressed image: {type(exc).__name__}: {exc}") from exc
    return rgb


def decode_color(msg: Any) -> np.ndarray:
    """Either message type -> (H, W, 3) uint8 RGB."""
    if hasattr(msg, "format"):
        return decode_compressed(msg)
    return decode_image(msg)


def encode_compressed(rgb: np.ndarray, codec: str = "jpeg", quality: int = 95) -> tuple[str, bytes]:
    """image_transport's compressed encoding of an RGB image, for tests, fixtures and bag writing."""
    from PIL import Image

    out = io.BytesIO()
    if codec == "jpeg":
        Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    else:
        Image.fromarray(rgb).save(out, format="PNG", compress_level=1)
    return f"rgb8; {codec} compressed bgr8", out.getvalue()
