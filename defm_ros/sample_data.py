"""The real depth frames that ship beside the project (../shared/data, or $DEFM_ROS_DATA).

Each folder has its own unit convention, kept here so tests, demo and benchmarks agree:
defm_examples/ladders and cups are 8-bit centimetres; drawers are relative (monocular) depth;
rgbd_examples/N/raw_depth.png are 16-bit millimetres (640x480).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNITS = {"mm": 0.001, "cm": 0.01, "m": 1.0}  # a depth image's unit -> metres per stored value
DEFAULT_UNIT = {"uint16": "mm", "uint8": "cm", "float32": "m"}  # what each stored type means unless told
MODES = ("metric", "relative")


@dataclass
class DepthFrame:
    path: Path
    depth: np.ndarray  # float32 metres, or relative values when mode == "relative"
    mode: str  # "metric" or "relative"
    raw: np.ndarray  # the image as stored (uint8 cm, uint16 mm, ...)
    unit: str | None = None  # of raw, when metric
    assumed: str = ""  # how unit and mode were decided, to say to the user


def data_root() -> Path | None:
    """$DEFM_ROS_DATA, else ../shared/data from the project root; None when neither exists."""
    env = os.environ.get("DEFM_ROS_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    candidates.append(Path.cwd().parent / "shared" / "data")
    return next((c for c in candidates if c.is_dir()), None)


def _is_relative_sample(path: Path) -> bool:
    """The shipped drawers/ frames are relative depth (see the data README); no other folder is."""
    root = data_root()
    return root is not None and path.resolve().is_relative_to((root / "defm_examples" / "drawers").resolve())


def load_depth_png(path: Path, unit: str | None = None, mode: str | None = None) -> DepthFrame:
    """A depth image -> metres. The stored type gives the unit unless `unit` is given (16-bit mm,
    8-bit cm, float m); `mode` is metric unless given, or the shipped relative samples. A colour
    image (channels that differ) is refused: its first channel is not depth."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            raw = np.asarray(im)
    except (OSError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    kind = f"{raw.dtype.itemsize * 8}-bit" + (" grey stored as RGB" if raw.ndim == 3 else "")
    if raw.ndim == 3:
        if raw.shape[2] >= 3 and not ((raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all()):
            raise ValueError(f"{path} is a colour image (its channels differ), not a depth image; "
                             "DeFM takes single-channel depth (16-bit mm, 8-bit cm, or grey stored as RGB)")
        raw = raw[..., 0]
    if raw.dtype.name not in DEFAULT_UNIT:
        raise ValueError(f"{path}: depth stored as {raw.dtype} is not supported (16-bit mm, 8-bit cm, float m)")
    if mode is None:
        mode, why = ("relative", "shipped drawers/ sample") if _is_relative_sample(path) \
            else ("metric", "default")
    else:
        why = "--mode"
    if mode == "relative":
        return DepthFrame(path, raw.astype(np.float32), mode, raw, None, f"relative depth ({why})")
    unit, how = (unit, "--unit") if unit else (DEFAULT_UNIT[raw.dtype.name], f"{kind} image")
    depth = raw.astype(np.float32) * np.float32(UNITS[unit])
    return DepthFrame(path, depth, mode, raw, unit, f"metric, {unit} ({how})")


def depth_pngs(root: Path) -> list[Path]:
    """Every depth PNG under root (colour images of the RGB-D scenes are skipped)."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*.png") if not p.name.startswith("rgb"))


def sample_depth(camera_size: tuple[int, int] = (480, 640), count: int = 2) -> tuple[np.ndarray, list[str]]:
    """`count` depth frames in metres (count, *camera_size) float32 and where each came from.

    Real 640x480 frames (rgbd_examples, 16-bit mm) when the shared data exists, resized (nearest) to
    other camera sizes; else synthetic frames with NaN, +-inf and holes, so that invalid-pixel
    handling is exercised either way. Used by the ONNX self-check and the benchmarks.
    """
    h, w = camera_size
    frames, names = [], []
    root = data_root()
    for f in sorted(root.glob("rgbd_examples/*/raw_depth.png"))[:count] if root else []:
        d = load_depth_png(f).depth
        if d.shape != (h, w):
            d = _nearest(d, (h, w))
        frames.append(d)
        names.append(str(f))
    while len(frames) < count:
        rng = np.random.default_rng(len(frames))
        d = np.broadcast_to(np.linspace(0.3, 12.0, w, dtype=np.float32), (h, w)).copy()
        d += rng.random((h, w), dtype=np.float32)
        d[:, :8] = 0.0
        for k, v in enumerate((np.nan, np.inf, -np.inf, 200.0)):
            d[min(k, h - 1), min(k, w - 1)] = v
        frames.append(d)
        names.append("synthetic")
    return np.stack(frames).astype(np.float32), names


def _nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return a[(np.arange(size[0]) * a.shape[0] // size[0])][:, (np.arange(size[1]) * a.shape[1] // size[1])]


def color_pngs(root: Path) -> list[Path]:
    """The colour images of the RGB-D scenes (rgb.png / rgb.jpg), aligned with their raw_depth.png."""
    return sorted(p for p in root.glob("rgbd_examples/*/rgb.*") if p.suffix in (".png", ".jpg"))


def sample_color(camera_size: tuple[int, int] = (480, 640), count: int = 2) -> tuple[np.ndarray, list[str]]:
    """`count` uint8 RGB frames (count, *camera_size, 3) and where each came from: the real colour
    images of rgbd_examples (resized nearest to other sizes), else synthetic gradients with noise."""
    from PIL import Image

    frames, names = [], []
    root = data_root()
    for f in color_pngs(root)[:count] if root else []:
        with Image.open(f) as im:
            rgb = np.asarray(im.convert("RGB"))
        frames.append(rgb if rgb.shape[:2] == tuple(camera_size) else _nearest(rgb, camera_size))
        names.append(str(f))
    while len(frames) < count:
        rng = np.random.default_rng(len(frames))
        h, w = camera_size
        ramp = np.linspace(0, 255, w)[None, :, None] * np.array([1.0, 0.5, 0.2]) + np.linspace(0, 60, h)[:, None, None]
        frames.append(np.clip(ramp + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8))
        names.append("synthetic")
    return np.stack(frames), names


def sample_inputs(modality: str, camera_size: tuple[int, int] = (480, 640), count: int = 2) -> tuple[np.ndarray,
                                                                                                       list[str]]:
    """Sample frames for a model of `modality`: depth, colour, or the aligned RGB-D scenes packed (H, W, 4)."""
    if modality == "rgbd":
        from .preprocess.rgbd import pack

        (rgb, names), (depth, _) = sample_color(camera_size, count), sample_depth(camera_size, count)
        return pack(rgb, depth), names
    return (sample_color if modality == "color" else sample_depth)(camera_size, count)
