"""What `ros2 launch defm_ros defm.launch.py` starts, as plain data, so it is tested without `launch`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .dds_profile import PROFILE_ENV, PROFILE_FILE, user_profile_set

CAMERA_PRESETS = {"realsense": "realsense.yaml", "zed": "zed.yaml", "custom": None}


@dataclass
class NodeLaunch:
    namespace: str
    parameters: list = field(default_factory=list)  # yaml paths and one dict of overrides
    remappings: list = field(default_factory=list)
    env: dict = field(default_factory=dict)  # set for every process of the launch (the camera driver too)


def node_launch(
    share: Path,
    camera: str = "realsense",
    model: str = "defm_resnet18",
    weights: str = "",
    backend: str = "torch",
    device: str = "cpu",
    namespace: str = "",
    depth_topic: str = "",
    params_file: str = "",
    large_data_profile: bool = True,
    environ: dict | None = None,
) -> NodeLaunch:
    """Launch arguments -> the defm_node process description; refuses unknown cameras up front."""
    if camera not in CAMERA_PRESETS:
        raise ValueError(f"camera must be one of {list(CAMERA_PRESETS)}, got {camera!r}")
    environ = os.environ if environ is None else environ
    params: list = []
    if CAMERA_PRESETS[camera]:
        params.append(str(share / "config" / CAMERA_PRESETS[camera]))
    if params_file:
        params.append(params_file)
    overrides = {"model": model, "weights": weights, "backend": backend, "device": device}
    if depth_topic:
        overrides["depth_topic"] = depth_topic
    params.append(overrides)
    env = {}
    profile = share / PROFILE_FILE
    if large_data_profile and not user_profile_set(environ) and profile.is_file():
        env[PROFILE_ENV] = str(profile)
    return NodeLaunch(namespace=namespace, parameters=params, env=env)
