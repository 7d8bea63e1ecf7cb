"""defm_node's parameters: defaults, descriptions, ranges and the checks behind them (SPEC §8).

Kept apart from node.py so that the launch tests check config/*.yaml against the same table the node
declares, and so that the node module stays wiring. ROS message types only, no rclpy.
"""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

# name -> (default, description, constraint). Constraint: tuple of choices, (lo, hi) range, or None.
PARAMS = {
    "model": ("defm_resnet18", "DeFM variant (see `defm-ros info`)", None),
    "weights": ("", "checkpoint .pth / exported .onnx; empty: models/, HF cache, Hub; 'random' for smoke tests", None),
    "backend": ("torch", "inference backend", ("torch", "onnxruntime")),
    "device": ("cpu", "cpu, cuda or cuda:N; preprocessing runs there too", None),
    "precision": ("fp32", "compute precision", ("fp32", "fp16", "bf16")),
    "input_size": ([224, 224], "[H, W] the depth image is resized to", None),
    "dense_level": ("P4", "BiFPN level for CNN dense maps (stride 8/16/32)", ("P3", "P4", "P5")),
    "depth_mode": ("metric", "metric depth, or relative (monocular estimates)", ("metric", "relative")),
    "depth_scale": (0.001, "metres per unit of 16-bit depth (RealSense: 0.001)", (1e-6, 1.0)),
    "depth_topic": ("~/depth", "single-camera input topic (remappable)", None),
    "cameras": ([""], "multi-camera mode: camera namespaces; input <ns>/<camera_depth_topic>", None),
    "camera_depth_topic": ("depth", "input topic inside each camera namespace", None),
    "transport": ("raw", "raw sensor_msgs/Image, or image_transport compressedDepth", ("raw", "compressedDepth")),
    "qos_reliability": ("auto", "depth subscription reliability; auto follows the publishers",
                        ("auto", "reliable", "best_effort")),
    "threads": (0, "torch CPU threads for inference; 0: torch's default (one per core). 1 stays steady when "
                "other processes share the cores", (0, 256)),
    "output_dtype": ("float32", "feature message precision (32FC<C> or 16FC<C>)", ("float32", "float16")),
    "publish_pca": (False, "also publish ~/features/pca (rgb8) for RViz/Foxglove", None),
    "batch_window_ms": (5.0, "multi-camera: wait this long for the other cameras' frames", (0.0, 200.0)),
    "stale_warn_s": (1.0, "diagnostics WARN after this long without input", (0.01, 3600.0)),
    "stale_error_s": (5.0, "diagnostics ERROR after this long without input", (0.01, 3600.0)),
}
RUNTIME = {"depth_scale", "publish_pca", "batch_window_ms", "stale_warn_s", "stale_error_s"}


def descriptor(name: str) -> ParameterDescriptor:
    """What `ros2 param describe` shows: the text, and the choices or range the node enforces."""
    default, text, constraint = PARAMS[name]
    d = ParameterDescriptor(description=text, read_only=name not in RUNTIME)
    if isinstance(constraint, tuple) and isinstance(constraint[0], str):
        d.additional_constraints = "one of: " + ", ".join(constraint)
    elif isinstance(constraint, tuple) and isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=constraint[0], to_value=constraint[1])]
    elif isinstance(constraint, tuple):
        d.integer_range = [IntegerRange(from_value=constraint[0], to_value=constraint[1], step=1)]
    return d


def check_value(name: str, value) -> str | None:
    """Why `value` is invalid for parameter `name`, or None when it is fine."""
    constraint = PARAMS[name][2]
    if isinstance(constraint, tuple) and isinstance(constraint[0], str) and value not in constraint:
        return f"{name} must be one of {list(constraint)}, got {value!r}"
    if name == "input_size" and (len(value) != 2 or min(value) < 32 or max(value) > 4096):
        return f"input_size must be [H, W] with 32 <= H, W <= 4096, got {list(value)}"
    if name == "model":
        from .models import MODELS

        if value not in MODELS:
            return f"model must be one of {list(MODELS)}, got {value!r}"
    if name == "device" and not (value == "cpu" or value == "cuda" or value.startswith("cuda:")):
        return f"device must be cpu, cuda or cuda:N, got {value!r}"
    return None
