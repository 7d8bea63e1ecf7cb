"""The LeRobot dataset format, v3.0, written with pyarrow alone (no torch, no lerobot): what `LeRobotDataset`
loads. The facts come from lerobot 0.4.4 (lerobot/datasets/utils.py, lerobot_dataset.py, compute_stats.py), which
the tests use as the oracle:

    meta/info.json                          codebase_version "v3.0", fps, features, totals, path patterns
    meta/stats.json                         per feature: min, max, mean, std, count, q01 q10 q50 q90 q99
    meta/tasks.parquet                      task text (index) -> task_index
    meta/episodes/chunk-CCC/file-FFF.parquet one row per episode: length, tasks, where its rows are; here
                                            EPISODES_PER_FILE rows per file
    data/chunk-CCC/file-FFF.parquet         the rows; here one file per episode

Episodes are only ever appended, each as one step that keeps the dataset loadable: its data file first, then the
metadata, info.json last; what a killed append left behind (files, a meta/episodes row) the next writer removes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .guards import write_atomic

CODEBASE_VERSION = "v3.0"
CHUNK_SIZE = 1000  # files per chunk folder
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PER_FILE = 100  # an append rewrites only the last file: rewriting them all was quadratic in episodes
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's q01 ... q99, for its QUANTILES normalisation
STANDARD = ("timestamp", "frame_index", "episode_index", "index", "task_index")
TASK_INDEX_COLUMN = "__index_level_0__"  # pandas' name for an unnamed index
SETTINGS = "meta/defm_ros.json"  # what must match for an episode to join (not read by LeRobot)


def _write_parquet(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    write_atomic(path, lambda f: pq.write_table(table, f, compression="snappy"))


def _write_json(path: Path, doc: Any) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(doc, indent=4).encode("utf8")))


def feature(values: np.ndarray, names: list[str] | None = None) -> dict[str, Any]:
    """info.json's description of a column of `values` (N, ...): dtype, shape of one row, names."""
    return {"dtype": values.dtype.name, "shape": list(values.shape[1:]) or [1], "names": names}


def to_arrow(values: np.ndarray) -> Any:
    """A column as the `datasets` feature LeRobot declares for it reads it: a scalar per row (shape [1]), a
    fixed-size list (a vector), or nested lists (Array2D/3D)."""
    import pyarrow as pa

    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    if values.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    for size in reversed(values.shape[2:]):
        flat = pa.ListArray.from_arrays(np.arange(0, len(flat) + 1, size, dtype=np.int32), flat)
    return pa.ListArray.from_arrays(np.arange(0, len(flat) + 1, values.shape[1], dtype=np.int32), flat)


def column_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's statistics of one column over its rows: per element of a vector (shape [C]; [1] for scalars),
    per channel of a map [C, h, w] (shape [C, 1, 1], as LeRobot keeps them for images: they broadcast over the
    map, and per-element statistics of a dense map would outweigh the map itself)."""
    v = values.astype(np.float64)
    if v.ndim > 2:
        x, shape = np.moveaxis(v, 1, -1).reshape(-1, v.shape[1]), (v.shape[1],) + (1,) * (v.ndim - 2)
    else:
        x, shape = v.reshape(len(v), -1), v.shape[1:] or (1,)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    stats.update({f"q{round(q * 100):02d}": v for q, v in zip(QUANTILES, np.quantile(x, QUANTILES, axis=0),
                                                               strict=True)})
    out = {k: s.reshape(shape) for k, s in stats.items()}
    out["count"] = np.array([len(values)])
    return out


def aggregate(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The statistics of two sets of rows from theirs: means and quantiles weighted by count, the variance by
    the parallel algorithm (LeRobot's aggregate_stats; its quantiles are likewise count-weighted estimates)."""
    na, nb = float(a["count"][0]), float(b["count"][0])
    n = na + nb
    mean = (a["mean"] * na + b["mean"] * nb) / n
    var = ((a["std"] ** 2 + (a["mean"] - mean) ** 2) * na + (b["std"] ** 2 + (b["mean"] - mean) ** 2) * nb) / n
    out = {"min": np.minimum(a["min"], b["min"]), "max": np.maximum(a["max"], b["max"]), "mean": mean,
           "std": np.sqrt(var), "count": np.array([int(n)])}
    out.update({k: (a[k] * na + b[k] * nb) / n for k in a if k.startswith("q")})
    return out


def _stats_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    return {f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()}


def check_settings(root: Path, settings: dict[str, Any]) -> None:
    """Record what every episode of the dataset at `root` must share (the features' origin, fps, ...), or refuse
    (ValueError) when it was made with other settings."""
    have = Path(root) / SETTINGS
    if not have.exists():
        _write_json(have, settings)
        return
    old = json.loads(have.read_text(encoding="utf8"))
    if diff := sorted(k for k in {**old, **settings} if old.get(k) != settings.get(k)):
        detail = ", ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in diff)
        raise ValueError(f"LeRobot dataset {root} was made with other settings ({detail}); use the same "
                         f"settings, --overwrite, or another --out")


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf8")) if path.exists() else None


def read_episodes(root: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of meta/episodes (all columns, or only `columns`), in episode order (those info.json counts)."""
    import pyarrow.parquet as pq

    info = _load_json(Path(root) / "meta/info.json")
    if info is None:
        return []
    paths = sorted(Path(root).glob("meta/episodes/*/*.parquet"))
    return [r for p in paths for r in pq.read_table(p, columns=columns).to_pylist()][: info["total_episodes"]]


def _episodes_file(ep: int) -> tuple[int, int]:
    """The (chunk, file) of meta/episodes that holds episode `ep`."""
    return divmod(ep // EPISODES_PER_FILE, CHUNK_SIZE)


class LeRobotWriter:
    """A LeRobot v3.0 dataset at `root`, opened to append episodes (one writer at a time)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.info = _load_json(self.root / "meta/info.json")
        self._clean()

    def _clean(self) -> None:
        """Remove what a killed append left: temporary files, and the data files and meta/episodes rows of
        episodes info.json lacks."""
        import pyarrow.parquet as pq

        done = 0 if self.info is None else self.info["total_episodes"]
        for path in [*self.root.glob("data/*/.*.tmp"), *self.root.glob("meta/**/.*.tmp"),
                     *(p for p in self.root.glob("data/*/*.parquet") if _file_number(p) >= done),
                     *(p for p in self.root.glob("meta/episodes/*/*.parquet")
                       if _file_number(p) * EPISODES_PER_FILE >= done)]:
            path.unlink()
        last = self._episodes_path(done)
        if last.exists() and pq.read_metadata(last).num_rows > done % EPISODES_PER_FILE:  # a row info.json lacks
            _write_parquet(last, self._episodes_with(done, None))

    def append(self, columns: dict[str, np.ndarray], names: dict[str, list[str] | None], fps: int, task: str,
               extra: dict[str, Any]) -> int:
        """Add one episode: `columns` (name -> (N, ...) array) with timestamp and frame_index among them; index,
        episode_index and task_index are added here. `extra`: more meta/episodes columns (scalars). Returns its
        episode_index."""
        import pyarrow as pa

        ep, start = (0, 0) if self.info is None else (self.info["total_episodes"], self.info["total_frames"])
        n = len(columns["timestamp"])
        tasks = self._tasks()
        task_index = tasks.setdefault(task, len(tasks))
        cols = {**columns, "episode_index": np.full(n, ep, np.int64), "index": np.arange(start, start + n,
                dtype=np.int64), "task_index": np.full(n, task_index, np.int64)}
        features = {k: feature(v, names.get(k)) for k, v in cols.items()}
        if self.info is not None and self.info["features"] != features:
            raise ValueError(f"this episode's columns differ from the dataset's: {features} vs "
                             f"{self.info['features']}")
        _write_parquet(self.root / DATA_PATH.format(chunk_index=ep // CHUNK_SIZE, file_index=ep % CHUNK_SIZE),
                       pa.table({k: to_arrow(v) for k, v in cols.items()}))
        stats = {k: column_stats(v) for k, v in cols.items()}
        meta_chunk, meta_file = _episodes_file(ep)
        row = {"episode_index": ep, "tasks": [task], "length": n, "data/chunk_index": ep // CHUNK_SIZE,
               "data/file_index": ep % CHUNK_SIZE, "dataset_from_index": start, "dataset_to_index": start + n,
               "meta/episodes/chunk_index": meta_chunk, "meta/episodes/file_index": meta_file, **extra,
               **{f"stats/{f}/{k}": v.tolist() for f, s in stats.items() for k, v in s.items()}}
        _write_parquet(self._episodes_path(ep), self._episodes_with(ep, row))
        _write_parquet(self.root / "meta/tasks.parquet", _tasks_table(tasks))
        old = _load_json(self.root / "meta/stats.json") if ep else None
        if old is not None:
            stats = {k: aggregate({s: np.asarray(v) for s, v in old[k].items()}, stats[k]) for k in stats}
        _write_json(self.root / "meta/stats.json", _stats_json(stats))
        self.info = _info(fps, features, ep + 1, start + n, len(tasks))
        _write_json(self.root / "meta/info.json", self.info)
        return ep

    def _episodes_path(self, ep: int) -> Path:
        chunk, file = _episodes_file(ep)
        return self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file)

    def _episodes_with(self, ep: int, row: dict[str, Any] | None) -> Any:
        """Episode `ep`'s file of meta/episodes as a table: its rows before `ep`, then `row` (if any)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path, k = self._episodes_path(ep), ep % EPISODES_PER_FILE
        before = pq.read_table(path).slice(0, k) if k and path.exists() else None
        if row is None:
            return before
        new = pa.Table.from_pylist([row], schema=None if before is None else before.schema)
        return new if before is None else pa.concat_tables([before, new])

    def _tasks(self) -> dict[str, int]:
        import pyarrow.parquet as pq

        path = self.root / "meta/tasks.parquet"
        if not path.exists():
            return {}
        t = pq.read_table(path).to_pydict()
        return dict(zip(t[TASK_INDEX_COLUMN], t["task_index"], strict=True))


def _tasks_table(tasks: dict[str, int]) -> Any:
    """meta/tasks.parquet as pandas writes a DataFrame indexed by the task text (LeRobot reads it with pandas,
    which restores the index from the schema's "pandas" metadata)."""
    import pyarrow as pa

    pandas_meta = {"index_columns": [TASK_INDEX_COLUMN], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": None, "field_name": TASK_INDEX_COLUMN, "pandas_type": "unicode", "numpy_type": "object",
         "metadata": None}]}
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()),
                      TASK_INDEX_COLUMN: pa.array(list(tasks), pa.string())})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def _file_number(path: Path) -> int:
    """.../chunk-CCC/file-FFF.parquet -> its number (data: its episode)."""
    return int(path.parent.name.split("-")[1]) * CHUNK_SIZE + int(path.stem.split("-")[1])


def _info(fps: int, features: dict[str, Any], episodes: int, frames: int, tasks: int) -> dict[str, Any]:
    return {"codebase_version": CODEBASE_VERSION, "robot_type": None, "total_episodes": episodes,
            "total_frames": frames, "total_tasks": tasks, "chunks_size": CHUNK_SIZE, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": fps, "splits": {"train": f"0:{episodes}"},
            "data_path": DATA_PATH, "video_path": None, "features": features}
