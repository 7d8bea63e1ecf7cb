"""Every list of choices, every default and the one input-size rule, defined once.

The Encoder, the CLI, the node's parameter descriptors and the launch file all read them from here,
so a new backend, precision or size limit is one edit. No torch, no rclpy: importable from anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DEFAULT_MODEL = "defm_resnet18"
DEFAULT_BACKEND = "torch"
DEFAULT_DEVICE = "cpu"
PRECISIONS = ("fp32", "fp16", "bf16")
ONNX_PRECISIONS = ("fp32", "fp16")  # what an exported graph can hold; bf16 runs in torch only
DEFAULT_PRECISION = "fp32"
DENSE_LEVELS = {"P3": 8, "P4": 16, "P5": 32}  # BiFPN level -> stride of the CNN dense map
DEFAULT_DENSE_LEVEL = "P4"
DEPTH_MODES = ("metric", "relative")
DEFAULT_DEPTH_MODE = "metric"
OUTPUT_DTYPES = ("float32", "float16")  # feature message precision: 32FC<C> or 16FC<C>
DEFAULT_DTYPE = "float32"
BAG_COMPRESSIONS = ("none", "zstd")  # feature bags: mcap chunk compression (ros2 bag and Foxglove read both)
DEFAULT_COMPRESSION = "none"
TRANSPORTS = ("raw", "compressedDepth", "compressed")  # image_transport: compressedDepth for depth, compressed
# (JPEG/PNG) for colour
RELIABILITIES = ("auto", "reliable", "best_effort")
REFINE = ("none", "lingbot")  # depth refinement in front of a depth model (LingBot-Depth)
DEFAULT_REFINER = "lingbot_depth_vitl14"
DEFAULT_TOKENS = 1200  # the refiner's patch tokens: upstream's resolution_level 0 (0..9 -> 1200..3600 tokens)
DEFAULT_DEPTH_SCALE = 0.001  # metres per unit of 16-bit depth: millimetres, as RealSense and ZED publish
# Encoder(**backend_options): what each backend takes beyond model, device and precision
BACKEND_OPTIONS = {
    "torch": ("channels_last", "compile", "fused_attention", "tf32"),
    "onnxruntime": ("trt", "trt_cache_dir", "trt_max_batch", "threads", "spin"),
}
BACKENDS = tuple(BACKEND_OPTIONS)
DEFAULT_INPUT_SIZE = (224, 224)
INPUT_SIDE = (14, 4096)  # one ViT patch .. larger than any depth camera
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """`value` if it is one of `choices`, else ValueError naming the parameter and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_device(device: str) -> str:
    """cpu, cuda or cuda:N (whether it is available is the backend's question, not the spelling's)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return device


def check_input_size(size: Sequence[int]) -> tuple[int, int]:
    """(H, W) with each side in INPUT_SIDE; models then crop (ViT, to multiples of 14) or pad (CNN, 32)."""
    lo, hi = INPUT_SIDE
    try:
        h, w = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        h = w = 0
        ok = False
    if not ok or not (lo <= h <= hi and lo <= w <= hi):
        shown = list(size) if isinstance(size, (list, tuple)) else size
        raise ValueError(f"input size must be [H, W] with {lo} <= H, W <= {hi}, got {shown!r}")
    return h, w


def parse_size(text: str) -> tuple[int, int]:
    """'224' or '224x308' (H x W), checked by check_input_size."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"size must be N or HxW (e.g. 224 or 224x308), got {text!r}") from None
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2:
        raise ValueError(f"size must be N or HxW (e.g. 224 or 224x308), got {text!r}")
    return check_input_size(sides)
