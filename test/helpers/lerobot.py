"""The LeRobot oracle, run in its own venv (.venv-lerobot, built by `make test`: lerobot's pins clash with ours):
a dataset loaded by the real LeRobotDataset, as a policy's data loader sees it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / ".venv-lerobot" / "bin" / "python"
SCRIPT = ROOT / "test" / "fixtures" / "lerobot_load.py"


def load_with_lerobot(root: Path, tmp: Path, delta_timestamps: dict[str, list[float]]) -> tuple[dict, dict, dict]:
    """(rows, windows, meta) of the dataset at `root` as LeRobotDataset gives them (fixtures/lerobot_load.py);
    skips when the oracle venv is absent (`make test` builds it)."""
    if not ORACLE.exists():
        pytest.skip(f"the LeRobot oracle venv is absent ({ORACLE}); `make oracle` (or `make test`) builds it")
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp / "hf_cache"),
           "HF_LEROBOT_HOME": str(tmp / "lerobot_home"), "PYTHONPATH": ""}
    done = subprocess.run([str(ORACLE), str(SCRIPT), str(root), str(tmp), json.dumps(delta_timestamps)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"LeRobotDataset could not load {root}:\n{done.stderr[-4000:]}"
    with np.load(tmp / "rows.npz") as rows, np.load(tmp / "windows.npz") as windows:
        return dict(rows), dict(windows), json.loads((tmp / "meta.json").read_text())
