"""What `ros2 launch defm_ros defm.launch.py` starts, as plain data, so it is tested without `launch`.

The launch arguments are declared here (defaults and choices from choices.py); the launch file only
hands their values to node_launch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .choices import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEFAULT_MODEL
from .dds_profile import PROFILE_ENV, PROFILE_FILE, user_profile_set

CAMERA_PRESETS = {"realsense": "realsense.yaml", "zed": "zed.yaml", "custom": None}
# name -> (default, description), as `ros2 launch defm_ros defm.launch.py --show-args` lists them
LAUNCH_ARGS = {
    "camera": ("realsense", " | ".join(CAMERA_PRESETS) + " (custom: set depth_topic or params_file)"),
    "model": (DEFAULT_MODEL, "DeFM variant (defm-ros info lists them)"),
    "weights": ("", "checkpoint path; empty: models/, HF cache, Hub"),
    "backend": (DEFAULT_BACKEND, " | ".join(BACKENDS)),
    "device": (DEFAULT_DEVICE, "cpu | cuda | cuda:N"),
    "namespace": ("", "node namespace"),
    "depth_topic": ("", "override the preset's depth topic"),
    "params_file": ("", "extra parameter file (e.g. config/multi_camera.yaml)"),
    "large_data_profile": ("true", "apply config/fastdds_large_data.xml to this launch's processes"),
    "autostart": ("true", "configure and activate at start-up; false: drive it with `ros2 lifecycle set`"),
}
BOOL_ARGS = ("large_data_profile", "autostart")


@dataclass
class NodeLaunch:
    namespace: str
    parameters: list = field(default_factory=list)  # yaml paths and one dict of overrides
    remappings: list = field(default_factory=list)
    env: dict = field(default_factory=dict)  # set for every process of the launch (the camera driver too)


def _flag(name: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {text!r}")
    return text.lower() == "true"


def node_launch(share: Path, environ: dict | None = None, **args: str) -> NodeLaunch:
    """Launch argument values (strings, as `launch` gives them) -> the defm_node process description.

    Missing arguments take LAUNCH_ARGS' defaults; unknown ones and unknown cameras are refused up front.
    """
    if unknown := set(args) - set(LAUNCH_ARGS):
        raise ValueError(f"unknown launch arguments {sorted(unknown)}; known: {list(LAUNCH_ARGS)}")
    a = {k: str(args.get(k, default)) for k, (default, _) in LAUNCH_ARGS.items()}
    if a["camera"] not in CAMERA_PRESETS:
        raise ValueError(f"camera must be one of {list(CAMERA_PRESETS)}, got {a['camera']!r}")
    flags = {k: _flag(k, a[k]) for k in BOOL_ARGS}
    environ = os.environ if environ is None else environ
    params: list = []
    if CAMERA_PRESETS[a["camera"]]:
        params.append(str(share / "config" / CAMERA_PRESETS[a["camera"]]))
    if a["params_file"]:
        params.append(a["params_file"])
    overrides = {k: a[k] for k in ("model", "weights", "backend", "device")}
    overrides["autostart"] = flags["autostart"]
    if a["depth_topic"]:
        overrides["depth_topic"] = a["depth_topic"]
    params.append(overrides)
    env = {}
    profile = share / PROFILE_FILE
    if flags["large_data_profile"] and not user_profile_set(environ) and profile.is_file():
        env[PROFILE_ENV] = str(profile)
    return NodeLaunch(namespace=a["namespace"], parameters=params, env=env)
