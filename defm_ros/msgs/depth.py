"""sensor_msgs depth messages -> float32 depth in metres, with no rclpy needed.

Works on anything shaped like sensor_msgs/Image (height, width, encoding, is_bigendian, step, data)
or sensor_msgs/CompressedImage (format, data) from image_transport's compressedDepth plugin. Every
malformed input raises DepthDecodeError before any large allocation, so a lying header cannot
cost memory.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from ..config import DEFAULT_DEPTH_SCALE

MAX_SIDE = 16384  # larger than any depth camera; a header beyond this is treated as corrupt
RAW_ENCODINGS = {"16UC1": "u2", "mono16": "u2", "32FC1": "f4"}
COMPRESSED_HEADER = struct.Struct("<iff")  # compressionFormat, depthQuantA, depthQuantB
PNG_MAX_RATIO = 1100  # above deflate's best case (~1032:1), with room for PNG's own overhead


class DepthDecodeError(ValueError):
    """A depth message that cannot be turned into metres; the text says why."""


def _check_dims(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise DepthDecodeError(f"zero-size image ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise DepthDecodeError(f"implausible image size {width}x{height} (limit {MAX_SIDE} per side)")


def _to_metres(raw: np.ndarray, depth_scale: float) -> np.ndarray:
    """Integer depth (e.g. mm) -> metres; float depth is already metres."""
    if raw.dtype.kind == "f":
        return np.ascontiguousarray(raw, dtype=np.float32)
    return raw.astype(np.float32) * np.float32(depth_scale)


def decode_image(msg: Any, depth_scale: float = DEFAULT_DEPTH_SCALE) -> np.ndarray:
    """A sensor_msgs/Image with encoding 16UC1, mono16 (units of depth_scale m) or 32FC1 (m)."""
    enc = msg.encoding
    if enc not in RAW_ENCODINGS:
        raise DepthDecodeError(f"unsupported depth encoding {enc!r}; expected one of {sorted(RAW_ENCODINGS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_dims(height, width)
    dtype = np.dtype(RAW_ENCODINGS[enc]).newbyteorder(">" if msg.is_bigendian else "<")
    row = width * dtype.itemsize
    if step < row:
        raise DepthDecodeError(f"step {step} is shorter than a {enc} row of {width} pixels ({row} bytes)")
    size = len(msg.data)
    if size != step * height:
        raise DepthDecodeError(f"data has {size} bytes, but step*height = {step}*{height} = {step * height}")
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row]
    raw = buf.view(dtype) if step == row else np.ascontiguousarray(buf).view(dtype)
    return _to_metres(raw.astype(dtype.newbyteorder("="), copy=False), depth_scale)


def _decode_png16(payload: bytes) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(payload)) as im:
            if im.format != "PNG":
                raise DepthDecodeError(f"compressedDepth payload is {im.format}, not PNG")
            _check_dims(im.height, im.width)
            # deflate expands at most ~1032:1, so a header claiming more pixels than the payload could
            # hold is a truncated or forged file: refuse it before Pillow allocates the full image.
            if im.height * (2 * im.width + 1) > PNG_MAX_RATIO * len(payload):
                raise DepthDecodeError(f"compressedDepth PNG claims {im.width}x{im.height} pixels but holds only "
                                       f"{len(payload)} bytes (truncated or corrupt)")
            if im.mode not in ("I;16", "I;16B", "I"):
                raise DepthDecodeError(f"compressedDepth PNG has mode {im.mode}, expected 16-bit grayscale")
            arr = np.asarray(im)
    except DepthDecodeError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise DepthDecodeError(f"corrupt compressedDepth PNG: {exc}") from exc
    return arr.astype(np.uint16, copy=False)


def decode_compressed(msg: Any, depth_scale: float = DEFAULT_DEPTH_SCALE) -> np.ndarray:
    """A compressedDepth CompressedImage ("16UC1; compressedDepth png", "32FC1; compressedDepth ...").

    32FC1 payloads hold quantized inverse depth: d = A / (q - B), with q = 0 meaning invalid (NaN).
    """
    fmt = str(msg.format)
    enc, _, codec = (part.strip() for part in fmt.partition(";"))
    if enc not in RAW_ENCODINGS:
        raise DepthDecodeError(f"unsupported compressedDepth format {fmt!r}")
    if codec not in ("", "compressedDepth", "compressedDepth png"):
        raise DepthDecodeError(f"unsupported compressedDepth codec in {fmt!r}; only png is decoded")
    data = bytes(msg.data)
    if len(data) <= COMPRESSED_HEADER.size:
        raise DepthDecodeError(f"compressedDepth message of {len(data)} bytes has no image after its header")
    _, quant_a, quant_b = COMPRESSED_HEADER.unpack_from(data)
    q = _decode_png16(data[COMPRESSED_HEADER.size :])
    if RAW_ENCODINGS[enc] == "u2":
        return _to_metres(q, depth_scale)
    if not (np.isfinite(quant_a) and np.isfinite(quant_b) and quant_a > 0):
        raise DepthDecodeError(f"compressedDepth 32FC1 header has bad quantization ({quant_a}, {quant_b})")
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (q.astype(np.float32) - np.float32(quant_b))
    depth[q == 0] = np.nan
    return depth


def decode_depth(msg: Any, depth_scale: float = DEFAULT_DEPTH_SCALE) -> np.ndarray:
    """Either message type -> (H, W) float32 metres; invalid pixels are 0 (16-bit) or NaN/inf (float)."""
    if hasattr(msg, "format"):
        return decode_compressed(msg, depth_scale)
    return decode_image(msg, depth_scale)


def encode_compressed(
    depth: np.ndarray, depth_max: float = 10.0, quantization: float = 100.0
) -> tuple[str, bytes]:
    """The compressedDepth plugin's PNG encoding, for tests, fixtures and bag writing.

    uint16 input is written as 16UC1; float input (metres) as 32FC1 quantized inverse depth.
    """
    from PIL import Image

    if depth.dtype == np.uint16:
        enc, q, header = "16UC1", depth, COMPRESSED_HEADER.pack(0, 0.0, 0.0)
    else:
        a = quantization * (quantization + 1.0)
        b = 1.0 - a / depth_max
        d = depth.astype(np.float32)
        ok = np.isfinite(d) & (d > 0) & (d < depth_max)
        q = np.zeros(d.shape, np.uint16)
        q[ok] = np.clip(np.float32(a) / d[ok] + np.float32(b), 0, 65535).astype(np.uint16)
        enc, header = "32FC1", COMPRESSED_HEADER.pack(0, a, b)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(q, dtype="<u2")).save(out, format="PNG", compress_level=1)
    return f"{enc}; compressedDepth png", header + out.getvalue()
