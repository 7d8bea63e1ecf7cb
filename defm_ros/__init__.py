"""defm_ros: DeFM depth foundation features for ROS 2 robots.

`from defm_ros import Encoder` is the public entry point; torch is imported only when it is used,
so that policies can decode feature messages (defm_ros.features) without it.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Encoder", "Features", "__version__"]


def __getattr__(name: str):
    if name in ("Encoder", "Features"):
        from . import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module 'defm_ros' has no attribute {name!r}")
