"""Feature arrays <-> sensor_msgs/Image (SPEC §5), importable without rclpy or torch.

Dense maps travel as h x w images with C float channels ("32FC<C>", or "16FC<C>" for half
precision), row-major HWC, little-endian; class tokens as 1 x 1 images. OpenCV (and so
cv_bridge) stops at 512 channels, so policies should decode with from_msg, which returns views
of the message buffer instead of copies.
"""

from __future__ import annotations

import copy
import re
import sys
import time
import warnings
from typing import Any

import numpy as np

_ENCODING = re.compile(r"^(32|16)FC(\d+)$")
_DTYPES = {"32": np.dtype("<f4"), "16": np.dtype("<f2")}
MAX_CHANNELS = 65536


class FeatureDecodeError(ValueError):
    """A message that is not a well-formed feature map; the text says why."""


def encoding_for(channels: int, dtype: np.dtype | str = np.float32) -> str:
    bits = {np.dtype(np.float32): "32", np.dtype(np.float16): "16"}[np.dtype(dtype)]
    return f"{bits}FC{channels}"


def to_hwc_bytes(array: Any, layout: str = "chw", dtype: np.dtype | str = np.float32) -> tuple[np.ndarray, int]:
    """A (C, h, w) / (h, w, C) / (C,) feature array -> contiguous little-endian HWC array, channels."""
    if hasattr(array, "detach"):  # torch tensor, without importing torch
        array = array.detach().cpu().numpy()
    a = np.asarray(array)
    if a.ndim == 1:
        a = a[None, None, :]
    elif a.ndim == 3:
        if layout == "chw":
            a = a.transpose(1, 2, 0)
        elif layout != "hwc":
            raise ValueError(f"layout must be 'chw' or 'hwc', got {layout!r}")
    else:
        raise ValueError(f"features must be (C,), (C, h, w) or (h, w, C), got shape {a.shape}")
    out = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return out, out.shape[2]


def to_msg(array: Any, header: Any = None, layout: str = "chw", dtype: np.dtype | str = np.float32) -> Any:
    """Dense map (C, h, w) or class token (C,) -> sensor_msgs/Image stamped with `header`."""
    from sensor_msgs.msg import Image

    hwc, channels = to_hwc_bytes(array, layout, dtype)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = hwc.shape[0], hwc.shape[1]
    msg.encoding = encoding_for(channels, dtype)
    msg.is_bigendian = False
    msg.step = hwc.shape[1] * channels * hwc.itemsize
    msg.data = hwc.tobytes()
    return msg


def from_msg(msg: Any, layout: str = "chw", as_torch: bool = False) -> Any:
    """A feature Image -> array view of its buffer: (C, h, w) for layout "chw", (h, w, C) for "hwc".

    No copy is made for little-endian messages without row padding (what to_msg writes). A class
    token message gives (C, 1, 1); use `.reshape(-1)` for (C,).
    """
    m = _ENCODING.match(str(msg.encoding))
    if not m:
        raise FeatureDecodeError(f"encoding {msg.encoding!r} is not a feature map (expected 32FC<C> or 16FC<C>)")
    channels = int(m.group(2))
    if not 0 < channels <= MAX_CHANNELS:
        raise FeatureDecodeError(f"implausible channel count {channels}")
    dtype = _DTYPES[m.group(1)]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise FeatureDecodeError(f"zero-size feature map ({width}x{height})")
    row = width * channels * dtype.itemsize
    if step < row:
        raise FeatureDecodeError(f"step {step} is shorter than a row of {width} x {channels} channels ({row} bytes)")
    if len(msg.data) != step * height:
        raise FeatureDecodeError(f"data has {len(msg.data)} bytes, but step*height = {step * height}")
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row]
    if step != row:
        buf = np.ascontiguousarray(buf)
    if bool(msg.is_bigendian) != (sys.byteorder == "big"):
        hwc = buf.view(dtype.newbyteorder(">" if msg.is_bigendian else "<")).astype(dtype.newbyteorder("="))
    else:
        hwc = buf.view(dtype.newbyteorder("="))
    hwc = hwc.reshape(height, width, channels)
    if layout == "chw":
        out = hwc.transpose(2, 0, 1)
    elif layout == "hwc":
        out = hwc
    else:
        raise ValueError(f"layout must be 'chw' or 'hwc', got {layout!r}")
    if as_torch:
        torch = _torch()
        return torch.from_numpy(out) if out.flags.writeable else torch.from_numpy(out.copy())
    return out


def _torch() -> Any:
    """torch, imported here only if the caller has not (seconds, in what is often a policy's first callback)."""
    if "torch" in sys.modules:
        return sys.modules["torch"]
    t0 = time.perf_counter()
    import torch

    warnings.warn(f"from_msg(as_torch=True) imported torch ({time.perf_counter() - t0:.1f} s in this call); "
                  "import torch at start-up so that no callback pays for it", RuntimeWarning, stacklevel=3)
    return torch


def feature_msgs(header: Any, cls: Any, dense: Any, dtype: np.dtype | str = np.float32,
                 pca_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """One frame's §5 messages, all stamped with `header`: "dense", "cls", and with `pca_size` (H, W)
    "pca", the dense map's 3 principal components as an rgb8 image of that size."""
    msgs = {"dense": to_msg(dense, header, dtype=dtype), "cls": to_msg(cls, header, dtype=dtype)}
    if pca_size is not None:
        from sensor_msgs.msg import Image

        from .pca import pca_rgb

        rgb = pca_rgb(dense, out_size=pca_size)
        msgs["pca"] = Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                            step=rgb.shape[1] * 3, data=rgb.tobytes())
    return msgs


REFINED_INFO, REFINED_POINTS = "depth_refined/camera_info", "depth_refined/points"  # beside ~/depth_refined


def restamped(msg: Any, header: Any) -> Any:
    """A shallow copy of `msg` (e.g. the input camera_info) with `header`: the refined depth's camera_info, whose
    header equals the depth's exactly, as image_transport's camera convention and message_filters pair them."""
    out = copy.copy(msg)
    out.header = header
    return out


def refined_msgs(header: Any, depth: np.ndarray, mask: np.ndarray, camera_info: Any = None,
                 points: np.ndarray | None = None) -> dict[str, Any]:
    """A refiner's output as SPEC §5 has it, keyed by topic below the camera's namespace, all stamped with the
    input's header: "depth_refined" (32FC1 metres, NaN where invalid), "depth_refined_mask" (mono8, 255 valid,
    0 invalid); with `camera_info`, REFINED_INFO (it, restamped); with `points` (H, W, 3), REFINED_POINTS (an
    organised PointCloud2, msgs.points)."""
    from sensor_msgs.msg import Image

    d = np.ascontiguousarray(depth, dtype="<f4")
    m = np.where(mask, 255, 0).astype(np.uint8)
    h, w = d.shape
    msgs = {"depth_refined": Image(header=header, height=h, width=w, encoding="32FC1", is_bigendian=False,
                                   step=w * 4, data=d.tobytes()),
            "depth_refined_mask": Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=False,
                                        step=w, data=m.tobytes())}
    if camera_info is not None:
        msgs[REFINED_INFO] = restamped(camera_info, header)
    if points is not None:
        from .msgs.points import points_msg

        msgs[REFINED_POINTS] = points_msg(header, points)
    return msgs
