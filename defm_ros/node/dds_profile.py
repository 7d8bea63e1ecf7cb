"""The shipped Fast DDS large-data profile, and when to apply it (README: why the node follows QoS).

A process only gets whole 614 KB frames across Fast DDS's shared memory with a larger segment than the
default 512 KB, and only the publisher's profile decides. A profile the user chose always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
PROFILE_ENVS = (PROFILE_ENV, "FASTDDS_DEFAULT_PROFILES_FILE")  # Fast DDS 2.x name, and 3.x's
PROFILE_FILE = Path("config") / "fastdds_large_data.xml"


def user_profile_set(environ: dict) -> bool:
    """Whether the user already chose a Fast DDS profile (under either variable name)."""
    return any(environ.get(k) for k in PROFILE_ENVS)


def large_data_profile() -> Path | None:
    """The shipped Fast DDS large-data profile (config/fastdds_large_data.xml), installed or in-tree."""
    here = Path(__file__).resolve().parents[2] / PROFILE_FILE
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        shared = Path(get_package_share_directory("defm_ros")) / PROFILE_FILE
        return shared if shared.is_file() else None
    except Exception:
        return None


def apply_large_data_profile(environ: dict = os.environ) -> str | None:
    """Use the large-data profile for this process's DDS participant unless the user chose one."""
    if user_profile_set(environ):
        return None
    profile = large_data_profile()
    if profile is not None:
        environ[PROFILE_ENV] = str(profile)
        return str(profile)
    return None
