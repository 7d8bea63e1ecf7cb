"""Fleet extraction on a local Ray (ray.init(num_cpus=2)): bags of several formats and robots, a
corrupt bag that fails alone, a task killed mid-bag that is retried and completes without duplicate
frames, and outputs equal to a single-process extract of the same bags."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray (the optional extra defm_ros[ray]) is not installed")

from defm_ros.extract import BagReadError, extract_bag, load_dataset  # noqa: E402
from defm_ros.extract.fleet import extract_fleet, report  # noqa: E402

from .helpers.bags import write_bag  # noqa: E402

ENCODER = {"model": "defm_resnet18", "weights": "random", "input_size": (64, 64)}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, depth_pngs):
    """Two robots whose bags share a name (run), a third with a ROS 1 bag, and a corrupt bag."""
    root = tmp_path_factory.mktemp("fleet")
    bags = [root / "robot_a" / "run.mcap", root / "robot_b" / "run", root / "robot_c" / "run.bag"]
    for bag, kind in zip(bags, ("mcap", "sqlite3", "ros1"), strict=True):
        bag.parent.mkdir(parents=True, exist_ok=True)
        write_bag(bag, kind, depth_pngs)
    broken = root / "robot_d" / "broken.db3"
    broken.parent.mkdir()
    broken.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)  # a header, then garbage
    return root, [*bags, broken]


def _single_process(bag: Path, out: Path) -> dict:
    from defm_ros.extract import build_encoder

    result = extract_bag(bag, out, encoder=build_encoder(**ENCODER), dataset=True, progress=False)
    assert result.complete
    return load_dataset(next(out.glob("*_dataset")))


def _equal(a: dict, b: dict) -> None:
    keys = set(zip(a["topic"], a["stamp_ns"], strict=True))
    assert len(a["stamp_ns"]) == len(b["stamp_ns"]) == len(keys)  # no frame twice
    np.testing.assert_array_equal(a["stamp_ns"], b["stamp_ns"])
    np.testing.assert_allclose(a["dense"], b["dense"], atol=1e-5)
    np.testing.assert_allclose(a["cls"], b["cls"], atol=1e-5)


def test_fleet_outputs_equal_single_process_and_a_corrupt_bag_fails_alone(cluster, fleet, tmp_path):
    root, bags = fleet
    results = extract_fleet(bags, tmp_path / "out", address=None, encoder_options=ENCODER, dataset=True,
                            progress=False)
    assert isinstance(results[3], BagReadError) and "broken.db3" in str(results[3])
    assert all(r.complete and r.frames_written > 0 for r in results[:3])
    for bag in bags[:3]:  # same-named bags of two robots: outputs mirror the folders
        robot = bag.parent.name
        got = load_dataset(next((tmp_path / "out" / robot).glob("*_dataset")))
        _equal(got, _single_process(bag, tmp_path / "single" / robot))
    text = report(bags, results)
    assert text.count("complete;") == 3 and "broken.db3: FAILED" in text and "real time" in text


def test_a_task_killed_mid_bag_is_retried_and_resumes_without_duplicates(cluster, fleet, tmp_path):
    root, bags = fleet
    marker = tmp_path / "killed_once"

    def kill_once(result) -> None:  # runs in the actor after each written batch
        if not marker.exists():
            marker.write_text("x")
            os._exit(1)  # the actor's process dies mid-bag, as on a preempted node

    results = extract_fleet(bags[:1], tmp_path / "out", address=None, encoder_options=ENCODER, dataset=True,
                            batch=2, progress=False, on_batch=kill_once)
    assert marker.exists() and results[0].complete  # the retry resumed what the killed run left
    got = load_dataset(next((tmp_path / "out").glob("*_dataset")))
    _equal(got, _single_process(bags[0], tmp_path / "single"))


def test_cli_ray_writes_the_same_outputs_and_reports_every_bag(cluster, fleet, tmp_path, capsys):
    from defm_ros import cli

    root, bags = fleet
    code = cli.main(["extract", *map(str, bags), "--out", str(tmp_path / "o"), "--ray", "--weights", "random",
                     "--size", "64", "--no-progress", "--dataset"])
    out = capsys.readouterr().out
    assert code == 1  # the corrupt bag
    assert out.count("complete;") == 3 and "broken.db3: FAILED: " in out and "cannot open" in out
    assert "Traceback" not in out and "ray::" not in out
    for robot in ("robot_a", "robot_b", "robot_c"):
        assert load_dataset(next((tmp_path / "o" / robot).glob("*_dataset")))["complete"]


def test_refined_extraction_on_ray_equals_single_process(cluster, tmp_path, rgbd_bag, lingbot_ckpt):
    """extract --refine lingbot on Ray: each actor holds its own Refiner; the refined depth and the
    features equal a single-process extract of the same bag."""
    from defm_ros import Refiner
    from defm_ros.extract import build_encoder

    path, _ = rgbd_bag
    refine = {"weights": str(lingbot_ckpt), "num_tokens": 300}
    (result,) = extract_fleet([path], tmp_path / "ray", address=None, encoder_options=ENCODER, refiner_options=refine,
                              dataset=True, write_bag=False, progress=False)
    assert result.complete and result.frames_written == 2, result
    single = extract_bag(path, tmp_path / "one", encoder=build_encoder(**ENCODER), refiner=Refiner(**refine),
                         dataset=True, write_bag=False, progress=False)
    assert single.frames_written == 2
    got, want = (load_dataset(next((tmp_path / d).glob("*_dataset"))) for d in ("ray", "one"))
    _equal(got, want)
    np.testing.assert_allclose(got["depth_refined"], want["depth_refined"], rtol=1e-5, equal_nan=True)
    assert got["info"]["refined_by"]["model"] == "lingbot_depth_vitl14"
    from defm_ros import cli

    code = cli.main(["extract", str(path), "--out", str(tmp_path / "cli"), "--ray", "--weights", "random", "--size",
                     "64", "--refine", "lingbot", "--refine-weights", str(lingbot_ckpt), "--refine-tokens", "300",
                     "--dataset", "--no-bag", "--no-progress"])
    assert code == 0
    by_cli = load_dataset(next((tmp_path / "cli").glob("*_dataset")))
    _equal(by_cli, want)
    np.testing.assert_allclose(by_cli["depth_refined"], want["depth_refined"], rtol=1e-5, equal_nan=True)
