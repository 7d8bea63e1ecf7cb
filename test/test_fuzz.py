"""Property tests: whatever bytes and headers arrive, the decoders answer with an array or a typed error.

decode_depth may only raise DepthDecodeError and from_msg only FeatureDecodeError: never IndexError,
MemoryError, struct.error, zlib or PIL errors, which would take a node down. Valid messages must
decode to the right shape and values. Messages are real sensor_msgs classes where their field types
allow the case; duck-typed objects (as bag readers such as rosbags yield) carry what they cannot,
e.g. negative sizes. No rclpy context is needed.
"""

from __future__ import annotations

import io
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message packages are not installed")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from defm_ros.features import FeatureDecodeError, from_msg, to_msg  # noqa: E402
from defm_ros.msgs.depth import COMPRESSED_HEADER, DepthDecodeError, decode_depth, encode_compressed  # noqa: E402

FUZZ = settings(max_examples=2000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
U32 = 2**32 - 1
DEPTH_ENCODINGS = ["16UC1", "mono16", "32FC1"]
ITEMSIZE = {"16UC1": 2, "mono16": 2, "32FC1": 4}

# sizes around the interesting edges: 0, small, just past the codec's limit, the uint32 ceiling
dims = st.one_of(st.integers(0, 40), st.sampled_from([16384, 16385, 20000, 2**31 - 1, U32]), st.integers(0, U32))
encodings = st.one_of(
    st.sampled_from(DEPTH_ENCODINGS + ["8UC1", "16UC3", "32FC2", "64FC1", "rgb8", "bgra8", "16SC1", "", " 16UC1",
                                       "16uc1", "32FC1\n", "16UC1; compressedDepth png"]),
    st.text(max_size=12),
)
payloads = st.binary(max_size=2048)


def _image(cls_or_ns, **fields):
    """A real sensor_msgs/Image when the values fit its uint32/str fields, else a duck-typed one."""
    fits = all(0 <= fields[k] <= U32 for k in ("height", "width", "step"))
    if cls_or_ns and fits:
        return Image(**fields)
    return SimpleNamespace(header=None, **fields)


def _ok_or_typed(fn, msg, error):
    try:
        return fn(msg)
    except error:
        return None
    # any other exception propagates and fails the test, which is the point


# --- decode_depth: sensor_msgs/Image -----------------------------------------------------------------------


@FUZZ
@given(real=st.booleans(), height=dims, width=dims, step=st.one_of(dims, st.integers(-2**40, -1)),
       encoding=encodings, big=st.integers(0, 255), data=payloads,
       neg=st.sampled_from([None, "height", "width"]))
def test_decode_image_only_raises_typed_errors(real, height, width, step, encoding, big, data, neg):
    fields = dict(height=height, width=width, step=step, encoding=encoding, is_bigendian=big, data=data)
    if neg:
        fields[neg] = -fields[neg] - 1
    msg = _image(real, **fields)
    out = _ok_or_typed(decode_depth, msg, DepthDecodeError)
    if out is not None:
        assert out.dtype == np.float32 and out.shape == (height, width)
        assert encoding in ITEMSIZE and len(data) == step * height and step >= width * ITEMSIZE[encoding]


@st.composite
def valid_images(draw):
    enc = draw(st.sampled_from(DEPTH_ENCODINGS))
    h, w = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    big = draw(st.booleans())
    pad = draw(st.integers(0, 9))  # any row padding, odd ones included
    size = h * w * ITEMSIZE[enc]
    arr = np.frombuffer(draw(st.binary(min_size=size, max_size=size)), "<f4" if enc == "32FC1" else "<u2")
    arr = arr.reshape(h, w).astype(np.float32 if enc == "32FC1" else np.uint16)
    if enc == "32FC1":  # invalid and negative depths as ZED reports them, besides whatever the bytes say
        special = np.array([np.nan, np.inf, -np.inf, -1.0, 0.0], np.float32)
        mask = np.frombuffer(draw(st.binary(min_size=h * w, max_size=h * w)), np.uint8).reshape(h, w)
        arr = np.where(mask < 40, special[mask % 5], arr).astype(np.float32)
    raw = arr.astype(arr.dtype.newbyteorder(">" if big else "<")).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([raw, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=enc, is_bigendian=big, step=rows.shape[1], data=rows.tobytes())
    return msg, arr


@FUZZ
@given(case=valid_images(), scale=st.sampled_from([0.001, 0.0001, 1.0]),
       lie=st.sampled_from([None, None, "height", "width", "step", "data", "encoding"]),
       delta=st.integers(-3, 3), cut=st.integers(1, 64))
def test_valid_images_decode_exactly_and_lies_are_refused(case, scale, lie, delta, cut):
    msg, arr = case
    if lie is None:
        out = decode_depth(msg, scale)
        assert out.shape == arr.shape and out.dtype == np.float32
        want = arr if arr.dtype == np.float32 else arr.astype(np.float32) * np.float32(scale)
        np.testing.assert_array_equal(out, want)
        return
    if lie == "data":
        data = bytes(msg.data)
        msg.data = data[:-cut] if delta < 0 else data + bytes(cut)
    elif lie == "encoding":
        msg.encoding = {"16UC1": "32FC1", "mono16": "32FC1", "32FC1": "16UC1"}[msg.encoding]
    else:
        setattr(msg, lie, max(0, getattr(msg, lie) + delta))
    out = _ok_or_typed(lambda m: decode_depth(m, scale), msg, DepthDecodeError)
    if out is not None:  # a lie that is still self-consistent (e.g. 32FC1 read as padded 16UC1) decodes
        assert out.shape == (msg.height, msg.width)
        assert len(msg.data) == msg.step * msg.height


# --- decode_depth: compressedDepth CompressedImage -----------------------------------------------------------


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(arr, mode=mode).save(out, format="PNG", compress_level=1)
    return out.getvalue()


@st.composite
def compressed_payloads(draw):
    """Header + payload, from valid through subtly broken to garbage."""
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    arr = np.frombuffer(draw(st.binary(min_size=2 * h * w, max_size=2 * h * w)), "<u2").reshape(h, w).copy()
    kind = draw(st.sampled_from(["png16", "png8", "rgb", "truncated", "flipped", "garbage", "ihdr_lie", "short"]))
    if kind == "png8":
        png = _png((arr >> 8).astype(np.uint8))
    elif kind == "rgb":
        png = _png(np.stack([(arr >> 8).astype(np.uint8)] * 3, axis=-1))
    else:
        png = _png(arr)
    if kind == "truncated":
        png = png[: draw(st.integers(0, len(png) - 1))]
    elif kind == "flipped":
        b = bytearray(png)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
        png = bytes(b)
    elif kind == "garbage":
        png = draw(st.binary(max_size=256))
    elif kind == "ihdr_lie":  # a valid CRC over a forged size: only the payload size gives it away
        import zlib

        ihdr = struct.pack(">II", draw(dims), draw(dims)) + png[24:29]
        png = png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]
    header = COMPRESSED_HEADER.pack(draw(st.integers(-2**31, 2**31 - 1)),
                                    draw(st.floats(width=32)), draw(st.floats(width=32)))
    if draw(st.booleans()):  # the header the plugin writes
        header = COMPRESSED_HEADER.pack(0, 10100.0, 1.0 - 10100.0 / 10.0)
    data = header + png
    if kind == "short":
        data = data[: draw(st.integers(0, COMPRESSED_HEADER.size))]
    return data, arr if kind == "png16" else None


formats = st.one_of(
    st.sampled_from(["16UC1; compressedDepth png", "32FC1; compressedDepth png", "16UC1; compressedDepth",
                     "32FC1; compressedDepth", "16UC1; compressedDepth rvl", "rgb8; jpeg compressed bgr8", "png",
                     "", "8UC1; compressedDepth png", "16UC1;compressedDepth png", ";", "32FC1;"]),
    st.text(max_size=30),
)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # forged sizes; refused all the same
@FUZZ
@given(fmt=formats, payload=compressed_payloads(), real=st.booleans())
def test_decode_compressed_only_raises_typed_errors(fmt, payload, real):
    data, arr = payload
    msg = CompressedImage(format=fmt, data=data) if real else SimpleNamespace(header=None, format=fmt, data=data)
    out = _ok_or_typed(decode_depth, msg, DepthDecodeError)
    if out is not None:
        assert out.dtype == np.float32 and out.ndim == 2 and out.size > 0
    if arr is not None and fmt in ("16UC1; compressedDepth png", "16UC1; compressedDepth"):
        np.testing.assert_array_equal(out, arr.astype(np.float32) * np.float32(0.001))


@settings(max_examples=300, deadline=None, database=None)
@given(h=st.integers(1, 16), w=st.integers(1, 16), seed=st.integers(0, 2**32 - 1))
def test_valid_compressed_32fc1_decodes_to_shape(h, w, seed):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.2, 9.0, (h, w)).astype(np.float32)  # 10 m range, quantization 100: >= 0.16 m
    depth[rng.random((h, w)) < 0.2] = np.nan
    fmt, data = encode_compressed(depth)
    out = decode_depth(CompressedImage(format=fmt, data=data))
    assert out.shape == (h, w) and out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(depth))  # invalid stays invalid, valid stays close
    np.testing.assert_allclose(out[~np.isnan(out)], depth[~np.isnan(depth)], rtol=0.02)


# --- features.from_msg --------------------------------------------------------------------------------------

feature_encodings = st.one_of(
    st.builds(lambda b, c: f"{b}FC{c}", st.sampled_from(["32", "16", "64", "8"]),
              st.one_of(st.integers(0, 8), st.sampled_from([512, 1024, 65536, 65537, 10**30]))),
    st.sampled_from(["32FC", "FC3", "32FC-1", "32FC3\n", "32FC٣", "16UC1", "rgb8", ""]),
    st.text(max_size=10),
)


@FUZZ
@given(real=st.booleans(), height=dims, width=dims, step=st.one_of(dims, st.integers(-2**40, -1)),
       encoding=feature_encodings, big=st.integers(0, 255), data=payloads, layout=st.sampled_from(["chw", "hwc"]))
def test_from_msg_only_raises_typed_errors(real, height, width, step, encoding, big, data, layout):
    msg = _image(real, height=height, width=width, step=step, encoding=encoding, is_bigendian=big, data=data)
    out = _ok_or_typed(lambda m: from_msg(m, layout=layout), msg, FeatureDecodeError)
    if out is not None:
        c = out.shape[0] if layout == "chw" else out.shape[2]
        assert out.shape == ((c, height, width) if layout == "chw" else (height, width, c))
        assert len(data) == step * height


@st.composite
def feature_maps(draw):
    c, h, w = draw(st.integers(1, 12)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = np.dtype(draw(st.sampled_from(["<f4", "<f2"])))
    size = c * h * w * dtype.itemsize
    return np.frombuffer(draw(st.binary(min_size=size, max_size=size)), dtype).reshape(c, h, w).astype(dtype.str[1:])


@FUZZ
@given(arr=feature_maps(), big=st.booleans(), pad=st.integers(0, 5), via_to_msg=st.booleans())
def test_valid_feature_maps_round_trip(arr, big, pad, via_to_msg):
    c, h, w = arr.shape
    if via_to_msg and not big and not pad:
        msg = to_msg(arr, dtype=arr.dtype)
    else:
        hwc = arr.transpose(1, 2, 0).astype(arr.dtype.newbyteorder(">" if big else "<"))
        raw = np.ascontiguousarray(hwc).reshape(h, -1).view(np.uint8)
        rows = np.concatenate([raw, np.zeros((h, pad), np.uint8)], axis=1)
        bits = "16" if arr.dtype == np.float16 else "32"
        msg = Image(height=h, width=w, encoding=f"{bits}FC{c}", is_bigendian=big, step=rows.shape[1],
                    data=rows.tobytes())
    out = from_msg(msg)
    assert out.shape == (c, h, w) and out.dtype == arr.dtype.newbyteorder("=")
    np.testing.assert_array_equal(out, arr)
    assert from_msg(msg, layout="hwc").shape == (h, w, c)

