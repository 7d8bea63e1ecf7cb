"""The LeRobot v3.0 writer (extract/lerobot_format.py): statistics as LeRobot computes and aggregates them, episodes
appended so that the real LeRobotDataset (the oracle) loads the dataset after each, meta/episodes over several
files, leftovers of a killed append removed, settings and columns that differ refused."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from defm_ros.extract import lerobot_format
from defm_ros.extract.lerobot_format import LeRobotWriter, aggregate, check_settings, column_stats, read_episodes

from .helpers.lerobot import load_with_lerobot


def episode(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"timestamp": (np.arange(n) / 10).astype(np.float32), "frame_index": np.arange(n, dtype=np.int64),
            "observation.cam_embedding": rng.normal(size=(n, 8)).astype(np.float32),
            "observation.cam_features": rng.normal(size=(n, 4, 2, 3)).astype(np.float16),
            "observation.state": rng.normal(size=(n, 3)).astype(np.float32)}


def test_column_stats_and_their_aggregate_are_those_of_the_rows():
    a, b = np.random.default_rng(0).normal(size=(40, 3)), np.random.default_rng(1).normal(2, 3, size=(60, 3))
    sa, sb, both = column_stats(a), column_stats(b), np.concatenate([a, b])
    np.testing.assert_allclose(sa["q50"], np.median(a, 0))
    assert sa["count"].tolist() == [40] and sa["mean"].shape == (3,)
    agg = aggregate(sa, sb)
    for k, want in (("mean", both.mean(0)), ("std", both.std(0)), ("min", both.min(0)), ("max", both.max(0))):
        np.testing.assert_allclose(agg[k], want, rtol=1e-10)
    np.testing.assert_allclose(agg["q10"], (sa["q10"] * 40 + sb["q10"] * 60) / 100)  # LeRobot's estimate
    assert agg["count"].tolist() == [100] and column_stats(np.arange(5))["mean"].shape == (1,)
    maps = np.random.default_rng(2).normal(size=(6, 4, 2, 3))  # per channel, as LeRobot keeps image stats
    per_channel = column_stats(maps)
    assert per_channel["mean"].shape == (4, 1, 1) and per_channel["count"].tolist() == [6]
    np.testing.assert_allclose(per_channel["std"][:, 0, 0], maps.std(axis=(0, 2, 3)))
    np.testing.assert_allclose(per_channel["q90"][:, 0, 0], np.quantile(np.moveaxis(maps, 1, 0).reshape(4, -1), 0.9,
                                                                        axis=1))


def test_episodes_appended_load_in_lerobot_with_their_rows_and_stats(tmp_path):
    w = LeRobotWriter(tmp_path / "ds")
    eps = [episode(7, 0), episode(5, 1)]
    for i, cols in enumerate(eps):
        assert w.append(cols, {"observation.state": ["a", "b", "c"]}, 10, "pick" if i else "place",
                        {"defm_ros/episode": f"e{i}"}) == i
    rows, _, meta = load_with_lerobot(tmp_path / "ds", tmp_path / "oracle", {})
    assert meta["total_episodes"] == 2 and meta["total_frames"] == 12 and meta["tasks"] == ["place", "pick"]
    assert rows["task_index"].tolist() == [0] * 7 + [1] * 5 and rows["index"].tolist() == list(range(12))
    assert [e["dataset_from_index"] for e in meta["episodes"]] == [0, 7]
    for k in ("observation.cam_embedding", "observation.cam_features", "observation.state"):
        want = np.concatenate([e[k] for e in eps])
        np.testing.assert_array_equal(rows[k], want.astype(np.float32))
        axes = (0, 2, 3) if want.ndim == 4 else 0
        np.testing.assert_allclose(np.squeeze(meta["stats"][k]["mean"]), want.astype(np.float64).mean(axes),
                                   rtol=1e-5, atol=1e-6)
    assert meta["features"]["observation.state"]["names"] == ["a", "b", "c"]


def test_what_a_killed_append_left_is_removed_and_the_dataset_loads(tmp_path):
    root = tmp_path / "ds"
    LeRobotWriter(root).append(episode(4, 0), {}, 10, "", {})
    orphan = root / "data/chunk-000/file-001.parquet"  # written, then killed before the metadata
    orphan.write_bytes((root / "data/chunk-000/file-000.parquet").read_bytes())
    (root / "meta/.info.json.tmp").write_text("{")
    w = LeRobotWriter(root)
    assert not orphan.exists() and not (root / "meta/.info.json.tmp").exists()
    assert len(read_episodes(root)) == 1
    w.append(episode(3, 1), {}, 10, "", {})
    rows, _, meta = load_with_lerobot(root, tmp_path / "oracle", {})
    assert meta["total_frames"] == len(rows["index"]) == 7


def test_meta_episodes_spread_over_files_load_in_order_and_a_killed_appends_rows_go(tmp_path, monkeypatch):
    """Each file of meta/episodes holds EPISODES_PER_FILE rows (an append rewrites only the last); LeRobot reads
    them in order, and rows or files of an episode that info.json lacks are dropped by the next writer."""
    monkeypatch.setattr(lerobot_format, "EPISODES_PER_FILE", 2)
    root, w = tmp_path / "ds", LeRobotWriter(tmp_path / "ds")
    for i in range(3):
        w.append(episode(2 + i, i), {}, 10, "", {"defm_ros/episode": f"e{i}"})
    files = sorted(root.glob("meta/episodes/*/*.parquet"))
    assert [p.relative_to(root / "meta/episodes").as_posix() for p in files] == [
        "chunk-000/file-000.parquet", "chunk-000/file-001.parquet"]
    assert [[r["meta/episodes/file_index"] for r in pq.read_table(p).to_pylist()] for p in files] == [[0, 0], [1]]
    killed = pq.read_table(files[1]).to_pylist()  # episode 3's row written, then killed before info.json
    pq.write_table(pa.Table.from_pylist([*killed, {**killed[0], "episode_index": 3}]), files[1])
    orphan = root / "meta/episodes/chunk-000/file-002.parquet"
    orphan.write_bytes(files[0].read_bytes())
    w = LeRobotWriter(root)
    assert not orphan.exists() and pq.read_metadata(files[1]).num_rows == 1
    rows, _, meta = load_with_lerobot(root, tmp_path / "oracle", {})
    assert [e["episode_index"] for e in meta["episodes"]] == [0, 1, 2] and meta["total_frames"] == len(rows["index"])
    w.append(episode(4, 3), {}, 10, "", {"defm_ros/episode": "e3"})
    w.append(episode(5, 4), {}, 10, "", {"defm_ros/episode": "e4"})
    assert [e["defm_ros/episode"] for e in read_episodes(root, ["defm_ros/episode"])] == [f"e{i}" for i in range(5)]
    rows, _, meta = load_with_lerobot(root, tmp_path / "oracle2", {})
    assert [e["dataset_from_index"] for e in meta["episodes"]] == [0, 2, 5, 9, 13] and len(rows["index"]) == 18
    assert rows["episode_index"].tolist() == [i for i, n in enumerate((2, 3, 4, 4, 5)) for _ in range(n)]


def test_other_settings_and_other_columns_are_refused(tmp_path):
    check_settings(tmp_path, {"fps": 10, "model": "m"})
    check_settings(tmp_path, {"fps": 10, "model": "m"})
    with pytest.raises(ValueError, match="fps: 10 there, 5 now"):
        check_settings(tmp_path, {"fps": 5, "model": "m"})
    assert json.loads((tmp_path / "meta/defm_ros.json").read_text()) == {"fps": 10, "model": "m"}
    w = LeRobotWriter(tmp_path)
    w.append(episode(3, 0), {}, 10, "", {})
    other = episode(3, 1)
    other["observation.state"] = other["observation.state"][:, :2]
    with pytest.raises(ValueError, match="columns differ"):
        w.append(other, {}, 10, "", {})
