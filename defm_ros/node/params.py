"""defm_node's parameters: defaults, descriptions, ranges and the checks behind them (SPEC §8).

Kept apart from node.py so that the launch tests check config/*.yaml against the same table the node
declares, and so that the node module stays wiring. Choices and defaults come from config.py.
ROS message types only, no rclpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..config import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_DENSE_LEVEL,
    DEFAULT_DEPTH_MODE,
    DEFAULT_DEPTH_SCALE,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_MODEL,
    DEFAULT_PRECISION,
    DEFAULT_REFINER,
    DEFAULT_TOKENS,
    DENSE_LEVELS,
    DEPTH_MODES,
    OUTPUT_DTYPES,
    PRECISIONS,
    REFINE,
    RELIABILITIES,
    TRANSPORTS,
    check_device,
    check_input_size,
)
from ..inputs import INPUTS
from ..models import MODELS, REFINERS

# name -> (default, description, constraint). Constraint: tuple of choices, (lo, hi) range, or None.
PARAMS = {
    "autostart": (True, "configure and activate at start-up; false: wait for the lifecycle services", None),
    "model": (DEFAULT_MODEL, "DeFM (depth) or Theia (colour) variant (see `defm-ros info`)", None),
    "weights": ("", "checkpoint .pth / exported .onnx; empty: models/, HF cache, Hub; 'random' for smoke tests", None),
    "backend": (DEFAULT_BACKEND, "inference backend", BACKENDS),
    "device": (DEFAULT_DEVICE, "cpu, cuda or cuda:N; preprocessing runs there too", None),
    "strict_device": (False, "fail activation instead of falling back (loudly) to the CPU when the device, "
                      "provider or precision is not available", None),
    "precision": (DEFAULT_PRECISION, "compute precision", PRECISIONS),
    "input_size": ([0, 0], "[H, W] the network input; [0, 0]: the model's (224x224; LingBot RGB-D 420x560)", None),
    "dense_level": (DEFAULT_DENSE_LEVEL, "BiFPN level for CNN dense maps (stride 8/16/32)", tuple(DENSE_LEVELS)),
    "depth_mode": (DEFAULT_DEPTH_MODE, "metric depth, or relative (monocular estimates)", DEPTH_MODES),
    "depth_scale": (DEFAULT_DEPTH_SCALE, "metres per unit of 16-bit depth (RealSense: 0.001)", (1e-6, 1.0)),
    "depth_topic": ("~/depth", "single-camera depth input topic (remappable), for DeFM models", None),
    "image_topic": ("~/image", "single-camera colour input topic (remappable), for Theia models", None),
    "cameras": ([""], "multi-camera mode: camera namespaces; input <ns>/<camera_depth_topic> (or image)", None),
    "camera_depth_topic": ("depth", "depth topic inside each camera namespace", None),
    "camera_image_topic": ("color/image_raw", "colour topic inside each camera namespace", None),
    "camera_info_topic": ("~/camera_info", "the colour camera's camera_info, for RGB-D inputs (remappable)", None),
    "camera_info_rel_topic": ("color/camera_info", "camera_info topic inside each camera namespace", None),
    "pair_tolerance_ms": (0.0, "RGB-D inputs: colour, depth and camera_info pair when their stamps differ by at "
                          "most this (0: equal stamps, as aligned RealSense/ZED topics have)", (0.0, 1000.0)),
    "refine": ("none", "refine raw depth before a depth model: lingbot (LingBot-Depth, from aligned colour)",
               REFINE),
    "refine_model": (DEFAULT_REFINER, f"refiner: {' or '.join(REFINERS)}", None),
    "refine_weights": ("", "refiner checkpoint model.pt; empty: models/<refine_model>/, HF cache, Hub", None),
    "refine_tokens": (DEFAULT_TOKENS, "refiner patch tokens (upstream 1200..3600: finer and slower)", (64, 10000)),
    "transport": ("raw", "raw sensor_msgs/Image, or image_transport compressedDepth (depth) / compressed "
                  "(colour)", TRANSPORTS),
    "qos_reliability": ("auto", "depth subscription reliability; auto follows the publishers", RELIABILITIES),
    "threads": (0, "torch CPU threads for inference; 0: torch's default (one per core). 1 stays steady when "
                "other processes share the cores", (0, 256)),
    "output_dtype": (DEFAULT_DTYPE, "feature message precision (32FC<C> or 16FC<C>)", OUTPUT_DTYPES),
    "publish_pca": (False, "also publish ~/features/pca (rgb8) for RViz/Foxglove", None),
    "publish_points": (False, "with refine: also publish ~/depth_refined/points (PointCloud2, organised x, y, z; "
                       "back-projected only while someone subscribes)", None),
    "batch_window_ms": (5.0, "multi-camera: wait this long for the other cameras' frames", (0.0, 200.0)),
    "stale_warn_s": (1.0, "diagnostics WARN after this long without input", (0.01, 3600.0)),
    "stale_error_s": (5.0, "diagnostics ERROR after this long without input", (0.01, 3600.0)),
}
# Changeable at any time; the others only while the node is unconfigured (they shape what configure loads).
RUNTIME = {"depth_scale", "publish_pca", "batch_window_ms", "stale_warn_s", "stale_error_s"}


def descriptor(name: str) -> ParameterDescriptor:
    """What `ros2 param describe` shows: the text, and the choices or range the node enforces."""
    default, text, constraint = PARAMS[name]
    when = "" if name in RUNTIME else " (set while unconfigured)"
    d = ParameterDescriptor(description=text + when)
    if isinstance(constraint, tuple) and isinstance(constraint[0], str):
        d.additional_constraints = "one of: " + ", ".join(constraint)
    elif isinstance(constraint, tuple) and isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=constraint[0], to_value=constraint[1])]
    elif isinstance(constraint, tuple):
        d.integer_range = [IntegerRange(from_value=constraint[0], to_value=constraint[1], step=1)]
    return d


def usage() -> str:
    """`defm_node --help`: how to pass parameters, and each one's default and meaning."""
    lines = ["usage: defm_node [--ros-args -p NAME:=VALUE ... | --params-file FILE] (or: ros2 launch defm_ros "
             "defm.launch.py)", "", "DeFM / Theia / LingBot features from camera topics (a lifecycle node).",
             "", "parameters:"]
    for name, (default, text, constraint) in PARAMS.items():
        choices = f"; one of {', '.join(constraint)}" if isinstance(constraint, tuple) and isinstance(
            constraint[0], str) else ""
        lines.append(f"  {name:<22} {default!r:<24} {text}{choices}")
    return "\n".join(lines)


def check_value(name: str, value: Any) -> str | None:
    """Why `value` is invalid for parameter `name`, or None when it is fine (ranges: the descriptor's)."""
    constraint = PARAMS[name][2]
    if isinstance(constraint, tuple) and isinstance(constraint[0], str) and value not in constraint:
        return f"{name} must be one of {list(constraint)}, got {value!r}"
    try:
        if name == "input_size" and list(value) != [0, 0]:
            check_input_size(value)
        elif name == "device":
            check_device(value)
    except ValueError as exc:
        return f"{name}: {exc}"
    if name == "model" and value not in MODELS:
        return f"model must be one of {list(MODELS)}, got {value!r}"
    if name == "refine_model" and value not in REFINERS:
        return f"refine_model must be one of {list(REFINERS)}, got {value!r}"
    return None


def check_all(p: Mapping[str, Any]) -> list[str]:
    """Every problem with a full parameter set, including the rules that span two parameters."""
    problems = [msg for name, value in p.items() if name in PARAMS and (msg := check_value(name, value))]
    if p["stale_warn_s"] >= p["stale_error_s"]:
        problems.append("stale_warn_s must be smaller than stale_error_s")
    if p["refine"] != "none" and p["model"] in MODELS and MODELS[p["model"]].modality != "depth":
        problems.append(f"refine feeds refined depth to a depth model; {p['model']} takes "
                        f"{MODELS[p['model']].modality}")
    if p["publish_points"] and p["refine"] == "none":
        problems.append("publish_points publishes the refined depth's points: set refine too (e.g. refine:=lingbot)")
    if p["model"] in MODELS:
        kind = INPUTS[input_modality(p)]
        if p["transport"] not in kind.transports:
            problems.append(f"transport {p['transport']} does not carry {kind.modality}, which {p['model']} takes; "
                            f"use {' or '.join(kind.transports)}")
    return problems


def refusal(changes: list[tuple[str, Any]], state: str, node: str = "/defm_node") -> str | None:
    """Why a set_parameters call is refused, or None: a bad value, or a parameter that shapes the model
    (read at configure) while the node is configured."""
    for name, value in changes:
        if name not in RUNTIME and state != "unconfigured":
            return (f"{name} is read-only while the node is {state}: it is read at configure; deactivate and "
                    f"clean up first (ros2 lifecycle set {node} cleanup)")
        if (why := check_value(name, value)) is not None:
            return why
    return None


def input_modality(p: Mapping[str, Any]) -> str:
    """What the node subscribes to: the model's modality, or aligned colour + depth to refine first."""
    return "rgbd" if p["refine"] != "none" else MODELS[p["model"]].modality


def encoder_args(p: Mapping[str, Any]) -> dict[str, Any]:
    """Encoder(**encoder_args(p)): the model the parameters describe, opened at activate (lazy)."""
    return {"model": p["model"], "weights": p["weights"] or None, "backend": p["backend"], "device": p["device"],
            "input_size": tuple(p["input_size"]) if any(p["input_size"]) else None, "precision": p["precision"],
            "dense_level": p["dense_level"], "depth_mode": p["depth_mode"], "strict": p["strict_device"],
            "lazy": True}


def refiner_args(p: Mapping[str, Any]) -> dict[str, Any] | None:
    """Refiner(**refiner_args(p)), or None with `refine:=none`."""
    if p["refine"] == "none":
        return None
    return {"model": p["refine_model"], "weights": p["refine_weights"] or None, "device": p["device"],
            "precision": p["precision"], "num_tokens": p["refine_tokens"], "strict": p["strict_device"], "lazy": True}
