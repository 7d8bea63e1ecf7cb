"""What the launch files start, as plain data, so it is tested without `launch`.

The launch arguments are declared here (those that set node parameters take their defaults from the node's
parameter table, params.PARAMS); the launch files only hand their values on. defm.launch.py: one node, on
depth or colour as its model takes (node_launch); depth_and_color.launch.py: DeFM on depth and Theia on
colour from one camera, as two nodes in their own namespaces (depth_and_color).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import BACKENDS, DEFAULT_MODEL, REFINE
from ..models import get_spec
from .dds_profile import PROFILE_ENV, PROFILE_FILE, user_profile_set
from .params import PARAMS


def _param(name: str, text: str) -> tuple[str, str]:
    """A launch argument that sets the node parameter `name`: its default, spelled as launch arguments are."""
    default = PARAMS[name][0]
    return str(default).lower() if isinstance(default, bool) else str(default), text


# camera -> modality -> its driver's default topics (config/*.yaml)
CAMERA_PRESETS = {
    "realsense": {"depth": "realsense.yaml", "color": "realsense_color.yaml", "rgbd": "realsense_rgbd.yaml"},
    "zed": {"depth": "zed.yaml", "color": "zed_color.yaml", "rgbd": "zed_rgbd.yaml"},
    "custom": {},
}
DEFAULT_COLOR_MODEL = "theia_small"
# name -> (default, description), as `ros2 launch defm_ros defm.launch.py --show-args` lists them
LAUNCH_ARGS = {
    "camera": ("realsense", " | ".join(CAMERA_PRESETS) + " (custom: set depth_topic or params_file)"),
    "model": _param("model", "DeFM (depth) or Theia (colour) variant (defm-ros info lists them)"),
    "weights": _param("weights", "checkpoint path; empty: models/, HF cache, Hub"),
    "backend": _param("backend", " | ".join(BACKENDS)),
    "device": _param("device", "cpu | cuda | cuda:N"),
    "namespace": ("", "node namespace"),
    "depth_topic": ("", "override the preset's depth topic (DeFM models)"),
    "image_topic": ("", "override the preset's colour topic (Theia models)"),
    "params_file": ("", "extra parameter file (e.g. config/multi_camera.yaml)"),
    "large_data_profile": ("true", "apply config/fastdds_large_data.xml to this launch's processes"),
    "autostart": _param("autostart", "configure and activate at start-up; false: drive it with `ros2 lifecycle set`"),
    "refine": _param("refine", " | ".join(REFINE) + ": refine raw depth from aligned colour before a DeFM model"),
    "refine_weights": _param("refine_weights", "the refiner's model.pt; empty: models/<refine_model>/, HF cache, Hub"),
    "publish_points": _param("publish_points", "with refine: also publish ~/depth_refined/points (PointCloud2)"),
}
BOOL_ARGS = ("large_data_profile", "autostart", "publish_points")
# depth_and_color.launch.py: the same, with a model (and weights) per node
PAIR_ARGS = {k: v for k, v in LAUNCH_ARGS.items() if k not in ("model", "weights", "namespace", "depth_topic",
                                                                "image_topic", "params_file", "refine",
                                                                "refine_weights", "publish_points")}
PAIR_ARGS.update({
    "depth_model": (DEFAULT_MODEL, "DeFM variant for the depth node (namespace defm)"),
    "color_model": (DEFAULT_COLOR_MODEL, "Theia variant for the colour node (namespace theia); non-commercial "
                    "research only"),
    "depth_weights": ("", "the depth node's checkpoint"),
    "color_weights": ("", "the colour node's checkpoint"),
})
PAIR_NAMESPACES = {"depth": "defm", "color": "theia"}


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
    preset = CAMERA_PRESETS[a["camera"]].get("rgbd" if a["refine"] != "none" else get_spec(a["model"]).modality)
    if preset:
        params.append(str(share / "config" / preset))
    if a["params_file"]:
        params.append(a["params_file"])
    overrides = {k: a[k] for k in ("model", "weights", "backend", "device", "refine", "refine_weights")}
    overrides.update((k, flags[k]) for k in ("autostart", "publish_points"))
    overrides.update({k: a[k] for k in ("depth_topic", "image_topic") if a[k]})
    params.append(overrides)
    env = {}
    profile = share / PROFILE_FILE
    if flags["large_data_profile"] and not user_profile_set(environ) and profile.is_file():
        env[PROFILE_ENV] = str(profile)
    return NodeLaunch(namespace=a["namespace"], parameters=params, env=env)


def depth_and_color(share: Path, environ: dict | None = None, **args: str) -> list[NodeLaunch]:
    """DeFM on the camera's depth and Theia on its colour: two nodes, namespaces defm and theia
    (features on /defm/defm_node/features/* and /theia/defm_node/features/*)."""
    if unknown := set(args) - set(PAIR_ARGS):
        raise ValueError(f"unknown launch arguments {sorted(unknown)}; known: {list(PAIR_ARGS)}")
    a = {k: str(args.get(k, default)) for k, (default, _) in PAIR_ARGS.items()}
    shared = {k: a[k] for k in ("camera", "backend", "device", "large_data_profile", "autostart")}
    nodes = []
    for modality, namespace in PAIR_NAMESPACES.items():
        model, weights = a[f"{modality}_model"], a[f"{modality}_weights"]
        if get_spec(model).modality != modality:
            raise ValueError(f"{modality}_model must be a {modality} model, got {model!r} "
                             f"(a {get_spec(model).modality} model)")
        nodes.append(node_launch(share, environ, model=model, weights=weights, namespace=namespace, **shared))
    return nodes
