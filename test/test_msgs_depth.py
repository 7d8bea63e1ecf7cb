"""Depth decoding from real sensor_msgs classes (SPEC §4), no rclpy node needed."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from defm_ros.msgs.depth import DepthDecodeError, decode_depth, encode_compressed

from .helpers.messages import image

MM = np.array([[0, 1000, 2500], [65535, 7, 400]], np.uint16)
M = np.array([[1.5, np.nan, np.inf], [-np.inf, 0.25, 80.0]], np.float32)


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 6])
def test_16bit_millimetres(encoding, bigendian, pad):
    out = decode_depth(image(MM, encoding, bigendian, pad))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, MM.astype(np.float32) / 1000, rtol=1e-6)


def test_depth_scale_parameter():
    out = decode_depth(image(MM, "16UC1"), depth_scale=0.0001)
    np.testing.assert_allclose(out, MM.astype(np.float32) * 1e-4, rtol=1e-6)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 4])
def test_32fc1_metres_keep_nan_and_inf(bigendian, pad):
    out = decode_depth(image(M, "32FC1", bigendian, pad))
    np.testing.assert_array_equal(out, M)


def test_real_realsense_frame(shared_data):
    raw = np.asarray(PILImage.open(shared_data / "rgbd_examples" / "0" / "raw_depth.png"))
    out = decode_depth(image(raw, "16UC1"))
    assert out.shape == (480, 640)
    np.testing.assert_allclose(out, raw / 1000.0, rtol=1e-6)


def _vector_png(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG written by PIL, independently of the codec under test."""
    buf = io.BytesIO()
    PILImage.fromarray(values.astype("<u2")).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth png", "16UC1; compressedDepth"])
def test_compressed_16uc1_vector(fmt):
    header = struct.pack("<iff", 0, 0.0, 0.0)
    msg = CompressedImage(format=fmt, data=header + _vector_png(MM))
    np.testing.assert_allclose(decode_depth(msg), MM / 1000.0, rtol=1e-6)


def test_compressed_32fc1_inverse_depth_vector():
    """The plugin's documented quantization: A = Z0 (Z0 + 1), B = 1 - A / max; d = A / (q - B); q = 0 invalid."""
    z0, dmax = 100.0, 10.0
    a, b = z0 * (z0 + 1), 1 - z0 * (z0 + 1) / dmax
    q = np.array([[0, 2000], [20000, 65000]], np.uint16)
    msg = CompressedImage(format="32FC1; compressedDepth png", data=struct.pack("<iff", 0, a, b) + _vector_png(q))
    out = decode_depth(msg)
    assert np.isnan(out[0, 0])
    np.testing.assert_allclose(out[q > 0], a / (q[q > 0].astype(np.float64) - b), rtol=1e-5)


def test_compressed_round_trip_on_real_frame(shared_data):
    raw = np.asarray(PILImage.open(shared_data / "rgbd_examples" / "1" / "raw_depth.png"))
    fmt, data = encode_compressed(raw)
    np.testing.assert_allclose(decode_depth(CompressedImage(format=fmt, data=data)), raw / 1000.0, rtol=1e-6)
    metres = raw.astype(np.float32) / 1000
    fmt, data = encode_compressed(metres)
    out = decode_depth(CompressedImage(format=fmt, data=data))
    ok = (metres > 0.2) & (metres < 10)
    np.testing.assert_allclose(out[ok], metres[ok], rtol=2e-3)  # inverse-depth quantization error
    assert np.isnan(out[metres == 0]).all()


@pytest.mark.parametrize(
    "msg, match",
    [
        (Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(18)), "unsupported depth encoding"),
        (Image(height=0, width=3, encoding="16UC1", step=6, data=b""), "zero-size"),
        (Image(height=2, width=3, encoding="16UC1", step=4, data=bytes(8)), "step 4 is shorter"),
        (Image(height=2, width=3, encoding="16UC1", step=6, data=bytes(11)), "11 bytes"),
        (Image(height=2, width=3, encoding="16UC1", step=6, data=bytes(13)), "13 bytes"),
        (Image(height=20000, width=20000, encoding="32FC1", step=80000, data=b""), "implausible"),
        (CompressedImage(format="16UC1; compressedDepth png", data=bytes(12)), "no image after its header"),
        (CompressedImage(format="16UC1; compressedDepth png", data=bytes(12) + b"\x89PNG\r\n\x1a\nxx"), "corrupt"),
        (CompressedImage(format="bgr8; jpeg compressed bgr8", data=bytes(40)), "unsupported compressedDepth"),
        (CompressedImage(format="16UC1; compressedDepth rvl", data=bytes(40)), "only png"),
    ],
)
def test_malformed_messages_raise_one_typed_error(msg, match):
    with pytest.raises(DepthDecodeError, match=match):
        decode_depth(msg)


def test_truncated_png_and_bad_quantization():
    fmt, data = encode_compressed(MM)
    with pytest.raises(DepthDecodeError, match="corrupt"):
        decode_depth(CompressedImage(format=fmt, data=data[: len(data) // 2]))
    png = _vector_png(MM)
    with pytest.raises(DepthDecodeError, match="quantization"):
        decode_depth(CompressedImage(format="32FC1; compressedDepth png", data=struct.pack("<iff", 0, 0.0, 1.0) + png))
