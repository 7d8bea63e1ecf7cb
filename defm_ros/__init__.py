"""defm_ros: foundation features for ROS 2 robots (DeFM on depth, Theia on colour, LingBot-Depth on RGB-D).

`from defm_ros import Encoder` (and `Refiner`) are the public entry points; torch is imported only when used,
so that policies can decode feature messages (defm_ros.features) without it.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Encoder", "Features", "Refined", "Refiner", "__version__"]


def __getattr__(name: str):
    if name in ("Encoder", "Features"):
        from . import encoder

        return getattr(encoder, name)
    if name in ("Refiner", "Refined"):
        from . import refiner

        return getattr(refiner, name)
    raise AttributeError(f"module 'defm_ros' has no attribute {name!r}")
