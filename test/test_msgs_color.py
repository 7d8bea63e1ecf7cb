"""Colour messages -> uint8 RGB: every encoding and compressed format, row padding, and malformed input."""

from __future__ import annotations

import io
import types

import numpy as np
import pytest
from PIL import Image

from defm_ros.msgs.color import ColorDecodeError, decode_color, encode_compressed

from .helpers.messages import duck_image

RGB = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize(("encoding", "pixels"), [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, np.full((6, 5, 1), 255, np.uint8)], -1)),
    ("bgra8", np.concatenate([RGB[..., ::-1], np.zeros((6, 5, 1), np.uint8)], -1)),
])
@pytest.mark.parametrize("pad", [0, 3])
def test_raw_encodings_give_rgb(encoding, pixels, pad):
    got = decode_color(duck_image(np.ascontiguousarray(pixels), encoding, pad=pad))
    assert got.dtype == np.uint8 and got.shape == (6, 5, 3)
    np.testing.assert_array_equal(got, RGB)


def test_rgb8_without_padding_is_a_view():
    msg = duck_image(RGB, "rgb8")
    assert np.shares_memory(decode_color(msg), np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_compressed_formats(codec):
    smooth = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 64, 3)).copy()
    fmt, data = encode_compressed(smooth, codec)
    got = decode_color(types.SimpleNamespace(format=fmt, data=data))
    assert got.shape == (48, 64, 3) and got.dtype == np.uint8
    if codec == "png":
        np.testing.assert_array_equal(got, smooth)
    else:
        assert np.abs(got.astype(int) - smooth).mean() < 3
    for plain in (codec, f"bgr8; {codec} compressed bgr8"):  # what drivers also publish
        assert decode_color(types.SimpleNamespace(format=plain, data=data)).shape == (48, 64, 3)


def test_grey_and_palette_pngs_are_converted_to_rgb():
    for mode in ("L", "P"):
        out = io.BytesIO()
        Image.fromarray(RGB[..., 0]).convert(mode).save(out, format="PNG")
        assert decode_color(types.SimpleNamespace(format="png", data=out.getvalue())).shape == (6, 5, 3)


def _png16() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((6, 5), 1000, np.uint16)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(("msg", "says"), [
    (duck_image(RGB, "16UC1"), "that is depth: run a DeFM model"),
    (duck_image(RGB, "mono8"), "unsupported colour encoding 'mono8'"),
    (duck_image(RGB, ""), "unsupported colour encoding"),
    (duck_image(RGB, "rgb8", step=5 * 3 - 1), "shorter than a rgb8 row"),
    (duck_image(RGB, "rgb8", data=b"\0" * 10), "data has 10 bytes"),
    (duck_image(RGB, "rgb8", height=0, data=b""), "zero-size"),
    (duck_image(RGB, "rgb8", height=20000, width=20000, step=60000, data=b""), "implausible image size"),
    (types.SimpleNamespace(format="16UC1; compressedDepth png", data=b"x"), "compressedDepth (depth)"),
    (types.SimpleNamespace(format="tiff", data=b"x"), "expected jpeg or png"),
    (types.SimpleNamespace(format="jpeg", data=b""), "holds no data"),
    (types.SimpleNamespace(format="jpeg", data=b"not a jpeg at all"), "corrupt compressed image"),
    (types.SimpleNamespace(format="png", data=encode_compressed(RGB, "png")[1][:40]), "corrupt compressed image"),
    (types.SimpleNamespace(format="png", data=_png16()), "16/32-bit: depth?"),
])
def test_malformed_messages_say_why(msg, says):
    with pytest.raises(ColorDecodeError, match=says.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        decode_color(msg)


def test_a_forged_header_is_refused_before_decoding():
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    forged = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
              + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))
    with pytest.raises(ColorDecodeError, match="truncated or corrupt"):
        decode_color(types.SimpleNamespace(format="png", data=forged))
