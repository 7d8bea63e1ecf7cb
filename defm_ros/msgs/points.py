"""Organised point clouds <-> sensor_msgs/PointCloud2, with no rclpy needed: the refined depth's `points`.

The layout depth_image_proc's point_cloud_xyz publishes and nvblox, RTAB-Map, RViz and PCL read: one point per
depth pixel (height x width, row-major), fields x, y, z float32 little-endian at offsets 0, 4, 8, NaN where the
depth is invalid (so is_dense is false). The message classes are the caller's (rclpy's sensor_msgs, or a
rosbags typestore's for a feature bag): anything shaped like PointCloud2 and PointField.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
FIELDS = ("x", "y", "z")
POINT = np.dtype("<f4")


class PointsDecodeError(ValueError):
    """A PointCloud2 that is not an organised x, y, z float32 cloud; the text says why."""


def points_msg(header: Any, points: Any, cloud_type: Any = None, field_type: Any = None) -> Any:
    """(H, W, 3) points in metres (NaN: invalid) -> an organised PointCloud2 with `header`.
    `cloud_type`, `field_type`: a rosbags typestore's PointCloud2 and PointField (data as a numpy array, as
    rosbags serializes it); None: sensor_msgs' (data as an array.array, which rclpy takes without a copy)."""
    p = np.ascontiguousarray(points, dtype=POINT)
    if p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"points must be (H, W, 3), got {p.shape}")
    data: Any = p.reshape(-1).view(np.uint8)
    if cloud_type is None or field_type is None:
        from sensor_msgs.msg import PointCloud2, PointField

        cloud_type, field_type = PointCloud2, PointField
        data, buf = array.array("B"), data
        data.frombytes(buf.data)
    h, w, _ = p.shape
    fields = [field_type(name=n, offset=i * POINT.itemsize, datatype=FLOAT32, count=1) for i, n in enumerate(FIELDS)]
    step = 3 * POINT.itemsize
    return cloud_type(header=header, height=h, width=w, fields=fields, is_bigendian=False, point_step=step,
                      row_step=w * step, data=data, is_dense=bool(np.isfinite(p).all()))


def points_from_msg(msg: Any) -> np.ndarray:
    """An organised PointCloud2 holding x, y, z float32 (other fields skipped) -> (H, W, 3) float32."""
    offsets = {f.name: int(f.offset) for f in msg.fields if int(f.datatype) == FLOAT32 and int(f.count) == 1}
    if missing := [n for n in FIELDS if n not in offsets]:
        raise PointsDecodeError(f"no float32 field(s) {missing} (fields: {[f.name for f in msg.fields]})")
    h, w, step, row = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    if h < 1 or w < 1 or max(offsets.values()) + POINT.itemsize > step or row < w * step or len(msg.data) != row * h:
        raise PointsDecodeError(f"{w}x{h} points of {step} bytes (fields at {offsets}), rows of {row}: not "
                                f"{len(msg.data)} bytes of data")
    order = ">" if msg.is_bigendian else "<"
    rows = np.frombuffer(msg.data, np.uint8).reshape(h, row)[:, : w * step].reshape(h, w, step)
    return np.stack([np.ascontiguousarray(rows[..., offsets[n]:offsets[n] + 4]).view(f"{order}f4")[..., 0]
                     for n in FIELDS], axis=-1).astype(np.float32)


def camera_matrix(info: Any) -> np.ndarray:
    """A sensor_msgs/CameraInfo's K (row-major, 9 values) -> the (3, 3) camera matrix in pixels of its image.
    ValueError for a camera that is not calibrated (a driver without calibration publishes K = 0)."""
    k = np.asarray(info.k, np.float64)
    if k.shape != (9,) or not np.isfinite(k).all() or k[0] <= 0 or k[4] <= 0:
        raise ValueError(f"camera_info has no usable camera matrix K (fx={k.ravel()[:1]}, fy={k.ravel()[4:5]}): "
                         "is the camera calibrated?")
    return k.reshape(3, 3)
