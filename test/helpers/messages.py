"""sensor_msgs messages built from arrays as a camera driver fills them: Image (depth and colour), CompressedImage
and CameraInfo. sensor_msgs is imported on use, so that tests which duck-type their messages need no ROS."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

ENCODINGS = {"uint16": "16UC1", "float32": "32FC1", "uint8": "rgb8"}
FILLER = 0x5A  # row padding: not zero, so that a decoder reading it as pixels is caught


def image_fields(arr: np.ndarray, encoding: str | None = None, big: bool = False, pad: int = 0,
                 **override: Any) -> dict:
    """An Image's fields for `arr` (H, W) or (H, W, C): rows in `big`-endian byte order, each followed by `pad`
    filler bytes, encoding from the dtype (uint16 16UC1, float32 32FC1, uint8 rgb8) unless given; then
    `override`, for a malformed message."""
    enc = encoding if encoding is not None else ENCODINGS[arr.dtype.name]
    raw = arr.astype(arr.dtype.newbyteorder(">" if big else "<")).view(np.uint8).reshape(arr.shape[0], -1)
    rows = np.concatenate([raw, np.full((arr.shape[0], pad), FILLER, np.uint8)], axis=1)
    fields = dict(height=arr.shape[0], width=arr.shape[1], encoding=enc, is_bigendian=big, step=rows.shape[1],
                  data=rows.tobytes())
    fields.update(override)
    return fields


def image(arr: np.ndarray, encoding: str | None = None, big: bool = False, pad: int = 0, **override: Any) -> Any:
    """A sensor_msgs/Image of `arr` (see image_fields)."""
    from sensor_msgs.msg import Image

    return Image(**image_fields(arr, encoding, big, pad, **override))


def duck_image(arr: np.ndarray, encoding: str | None = None, big: bool = False, pad: int = 0,
               **override: Any) -> SimpleNamespace:
    """The same fields on a plain object, as bag readers such as rosbags hand messages over: no ROS needed."""
    return SimpleNamespace(**image_fields(arr, encoding, big, pad, **override))


def compressed(arr: np.ndarray, codec: str | None = None) -> Any:
    """A sensor_msgs/CompressedImage of `arr`: compressedDepth PNG (codec None), else image_transport's colour
    `codec` (jpeg, png)."""
    from sensor_msgs.msg import CompressedImage

    if codec is None:
        from defm_ros.msgs.depth import encode_compressed

        fmt, data = encode_compressed(arr)
    else:
        from defm_ros.msgs.color import encode_compressed as encode_color

        fmt, data = encode_color(arr, codec)
    return CompressedImage(format=fmt, data=data)


def camera_info(k: np.ndarray, height: int, width: int) -> Any:
    """A sensor_msgs/CameraInfo with the 3x3 camera matrix `k` for a height x width image."""
    from sensor_msgs.msg import CameraInfo

    return CameraInfo(height=height, width=width, k=k.reshape(-1).tolist())

