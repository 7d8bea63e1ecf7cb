"""extract --lerobot (extract/lerobot.py): bags of real depth frames (about 10 Hz, jittered stamps), JointState
(100 Hz) and Twist (50 Hz) become one LeRobot v3.0 dataset that the real LeRobotDataset loads (the oracle, in
its own venv); every row holds the class token of the frame in force and the state and command in force;
delta_timestamps windows; one episode per bag; Theia, RGB-D with --refine, Ray; resume, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from defm_ros.extract import build_encoder, extract_bag, load_dataset
from defm_ros.extract.lerobot import LeRobotOptions, assemble, build_episode, episode_key, read_signal, staging
from defm_ros.extract.sinks import iter_chunks
from defm_ros.extract.source import BagReadError, BagSource

from .helpers.bags import CMD_VEL, JOINT_STATES, JOINTS, RS_COLOR, RS_DEPTH, T0, BagWriter, header, write_robot_bag
from .helpers.bags import image as image_msg
from .helpers.lerobot import load_with_lerobot

pytest.importorskip("rosbags")

FPS = 10
CAM = "/cam/depth"
ROBOT = ["--state", JOINT_STATES, "--action", CMD_VEL]
COMMON = ["--weights", "random", "--size", "64", "--no-progress", "--lerobot", *ROBOT, "--task", "pick", "--dense"]
WINDOWS = {"action": [0, 0.1, 0.2], "observation.state": [-0.1, 0.0]}



@pytest.fixture(scope="module")
def robot_bags(tmp_path_factory, depth_pngs):
    """Two recordings (run1, run2) of the same robot: real depth frames, joints, commands."""
    root = tmp_path_factory.mktemp("robot")
    return {root / f"run{i}": write_robot_bag(root / f"run{i}", {CAM: ("16UC1", depth_pngs)}, seed=i)
            for i in (1, 2)}


@pytest.fixture
def cli():
    from defm_ros import cli as cli_pkg

    return lambda *argv: cli_pkg.main(["extract", *map(str, argv)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, robot_bags):
    """The two bags extracted in one uninterrupted run: OUT/lerobot."""
    from defm_ros import cli as cli_pkg

    out = tmp_path_factory.mktemp("reference")
    assert cli_pkg.main(["extract", *map(str, robot_bags), "--out", str(out), *COMMON]) == 0
    return out / "lerobot"


def in_force(samples: list, t: int) -> int:
    """Index of the newest of (time, value) samples at or before t, -1 if none: what the rows must hold."""
    times = [s[0] for s in samples]
    return max((i for i, s in enumerate(times) if s <= t), key=lambda i: (times[i], i), default=-1)


def expected_rows(expected: dict, camera: str) -> list[int]:
    """The grid indices k of an episode: from the first at which every topic has a message to the last at or
    before the last frame (t0 = the first frame's stamp = T0)."""
    last = (max(s for s, _ in expected[camera]) - T0) * FPS // 10**9
    return [k for k in range(last + 1)
            if all(in_force(expected[t], T0 + k * 10**9 // FPS) >= 0 for t in (camera, JOINT_STATES, CMD_VEL))]


def check_rows(rows: dict, ep_rows: np.ndarray, expected: dict, camera: str, key: str, cls: np.ndarray,
               dense: np.ndarray | None = None) -> None:
    """Every row of one episode against the recording: the frame, joints and command in force at its time."""
    ks = np.rint(rows["timestamp"][ep_rows] * FPS).astype(int)
    assert ks.tolist() == expected_rows(expected, camera)
    assert rows["frame_index"][ep_rows].tolist() == list(range(len(ep_rows)))
    for r, k in zip(ep_rows, ks, strict=True):
        t = T0 + k * 10**9 // FPS
        j = in_force(expected[camera], t)
        assert rows[f"observation.{key}_stamp_ns"][r] == expected[camera][j][0]
        np.testing.assert_allclose(rows[f"observation.{key}_embedding"][r], cls[j], atol=1e-4)
        if dense is not None:
            np.testing.assert_allclose(rows[f"observation.{key}_features"][r], dense[j], atol=1e-4)
        np.testing.assert_array_equal(rows["observation.state"][r], expected[JOINT_STATES][
            in_force(expected[JOINT_STATES], t)][1])
        np.testing.assert_array_equal(rows["action"][r], expected[CMD_VEL][in_force(expected[CMD_VEL], t)][1])


def encode_depth(encoder, expected: dict) -> tuple[np.ndarray, np.ndarray]:
    depth = np.stack([raw.astype(np.float32) * np.float32(0.001) for _, raw in expected[CAM]])
    cls, dense = encoder.encode(depth).numpy()
    return cls, dense


def test_lerobot_loads_every_row_in_force_windows_stats_and_one_episode_per_bag(reference, robot_bags, encoder,
                                                                                 tmp_path):
    rows, windows, meta = load_with_lerobot(reference, tmp_path, WINDOWS)
    assert meta["fps"] == FPS  # the camera's median rate: its stamps are jittered
    assert meta["total_episodes"] == meta["num_episodes"] == 2 and meta["tasks"] == ["pick"]
    assert [e["defm_ros/source"] for e in meta["episodes"]] == [str(b) for b in robot_bags]  # the order given
    assert meta["features"]["observation.state"]["names"] == list(JOINTS)
    assert meta["features"]["observation.cam.depth_features"]["shape"] == [128, 4, 4]
    for ep, expected in enumerate(robot_bags.values()):
        sel = np.flatnonzero(rows["episode_index"] == ep)
        assert meta["episodes"][ep]["defm_ros/rows_left_out"] == 1  # the joints start 30 ms after the camera
        check_rows(rows, sel, expected, CAM, "cam.depth", *encode_depth(encoder, expected))
        for d, delta in enumerate(WINDOWS["action"]):  # windows: the rows `delta` later, padded past the end
            steps = round(delta * FPS)
            inside = sel + steps <= sel[-1]
            np.testing.assert_array_equal(windows["action"][sel[inside], d], rows["action"][sel[inside] + steps])
            assert windows["action_is_pad"][sel, d].tolist() == (~inside).tolist()
        np.testing.assert_array_equal(windows["observation.state"][sel[1:], 0], rows["observation.state"][sel[:-1]])
        assert windows["observation.state_is_pad"][sel[0]].tolist() == [True, False]
    assert rows["index"].tolist() == list(range(len(rows["index"])))
    for col in ("action", "observation.state", "observation.cam.depth_embedding"):
        stats = meta["stats"][col]
        np.testing.assert_allclose(stats["mean"], rows[col].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats["std"], rows[col].std(0), rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(stats["min"], rows[col].min(0))
        assert stats["count"] == [len(rows[col])] and {"q01", "q99"} <= set(stats)
    dense = rows["observation.cam.depth_features"]  # maps: per channel
    np.testing.assert_allclose(np.squeeze(meta["stats"]["observation.cam.depth_features"]["mean"]),
                               dense.mean(axis=(0, 2, 3)), rtol=1e-3, atol=1e-4)


def _tables(root: Path) -> dict:
    """What two runs must agree on: every data file, the episodes (less the time it took), stats, info."""
    out = {p.relative_to(root).as_posix(): pq.read_table(p).to_pydict() for p in sorted(root.glob("data/*/*.parquet"))}
    out["episodes"] = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    out["info"] = json.loads((root / "meta/info.json").read_text())
    out["stats"] = json.loads((root / "meta/stats.json").read_text())
    return out


def _close(a, b, where: str) -> None:
    """Equal, floats to 1e-4, through nested dicts and lists."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}/{k}")
        return
    try:
        fa, fb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        assert a == b, where
        return
    np.testing.assert_allclose(fa, fb, atol=1e-4, err_msg=where)


def assert_same_dataset(a: Path, b: Path) -> None:
    _close(_tables(a), _tables(b), "")


def test_an_interrupted_job_leaves_a_dataset_that_loads_and_resumes_to_the_same(cli, capsys, robot_bags, reference,
                                                                                tmp_path, monkeypatch):
    import defm_ros.extract as extract_pkg

    bags, real = list(robot_bags), extract_pkg.extract_bag

    def stop_in_second_bag(bag, *args, **kwargs):
        def stop(result):
            raise KeyboardInterrupt

        return real(bag, *args, **({**kwargs, "on_batch": stop} if Path(bag) == bags[1] else kwargs))

    monkeypatch.setattr(extract_pkg, "extract_bag", stop_in_second_bag)
    out = tmp_path / "o"
    assert cli(*bags, "--out", out, *COMMON) == 130
    monkeypatch.setattr(extract_pkg, "extract_bag", real)
    rows, _, meta = load_with_lerobot(out / "lerobot", tmp_path / "oracle", {})
    assert meta["total_episodes"] == 1 and set(rows["episode_index"].tolist()) == {0}  # the episode finished
    assert cli(*bags, "--out", out, *COMMON) == 2  # it exists: --resume or --overwrite
    assert "--resume" in capsys.readouterr().err
    assert cli(*bags, "--out", out, *COMMON, "--resume") == 0
    assert "already made" in capsys.readouterr().out
    assert_same_dataset(out / "lerobot", reference)
    assert not (out / "lerobot" / ".staging").exists()
    assert cli(*bags, "--out", out, *COMMON, "--resume", "--fps", "5") == 2  # other settings: refused
    err = capsys.readouterr().err
    assert "other settings" in err and "fps: 10 there, 5 now" in err


def test_a_bag_without_the_named_topics_fails_alone(cli, capsys, robot_bags, depth_pngs, tmp_path):
    bare = tmp_path / "bare"
    write_robot_bag(bare, {CAM: ("16UC1", depth_pngs[:1])}, seconds=0.5, robot=False)
    good = next(iter(robot_bags))
    assert cli(bare, good, "--out", tmp_path / "o", *COMMON) == 1
    cap = capsys.readouterr()
    assert f"no messages on {JOINT_STATES}, {CMD_VEL}" in cap.err
    episodes = pq.read_table(tmp_path / "o/lerobot/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["defm_ros/source"] for e in episodes] == [str(good)]


def test_a_bag_whose_rows_differ_from_the_datasets_fails_alone(cli, capsys, robot_bags, depth_pngs, tmp_path):
    other = tmp_path / "two_joints"
    write_robot_bag(other, {CAM: ("16UC1", depth_pngs[:1])}, seconds=0.5, joints=("a", "b"))
    good = next(iter(robot_bags))
    assert cli(good, other, "--out", tmp_path / "o", *COMMON) == 1
    assert "its episode cannot join" in capsys.readouterr().err
    episodes = pq.read_table(tmp_path / "o/lerobot/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["defm_ros/source"] for e in episodes] == [str(good)]


def test_a_topic_of_another_type_is_a_usage_error_before_the_model_loads(cli, capsys, robot_bags, tmp_path,
                                                                        monkeypatch):
    import defm_ros.extract as extract_pkg

    monkeypatch.setattr(extract_pkg, "build_encoder", lambda **k: pytest.fail("the model was loaded first"))
    bag = next(iter(robot_bags))
    assert cli(bag, "--out", tmp_path / "o", "--lerobot", "--state", CAM) == 2
    assert f"{CAM} is a sensor_msgs/msg/Image" in capsys.readouterr().err
    assert cli(bag, "--out", tmp_path / "o", "--state", JOINT_STATES) == 2  # without --lerobot
    assert "only apply with --lerobot" in capsys.readouterr().err
    assert cli(bag, "--out", tmp_path / "o", "--lerobot", "--camera-key", "cam") == 2
    assert "TOPIC=NAME" in capsys.readouterr().err
    assert not (tmp_path / "o" / "lerobot").exists()


def test_a_theia_bag_gives_its_colour_embeddings(tmp_path, shared_data):
    from PIL import Image as PILImage

    from defm_ros.sample_data import color_pngs

    rgbs = [np.array(PILImage.open(p).convert("RGB"))[::4, ::4].copy() for p in color_pngs(shared_data)]
    expected = write_robot_bag(tmp_path / "colour", {"/cam/color/image_raw": ("rgb8", rgbs)}, seconds=1.0)
    enc = build_encoder(model="theia_tiny", weights="random")
    options = LeRobotOptions(root=tmp_path / "out" / "lerobot", fps=FPS, state=(JOINT_STATES,), action=(CMD_VEL,),
                             camera_keys=(("/cam/color/image_raw", "front"),))
    result = extract_bag(tmp_path / "colour", tmp_path / "out", encoder=enc, write_bag=False, lerobot=options,
                         dataset=True, progress=False)  # the frames stay in the --dataset, the episode is made of them
    assert result.complete, result.summary()
    assert len(load_dataset(tmp_path / "out" / "colour_dataset")["cls"]) == len(expected["/cam/color/image_raw"])
    added, failed = assemble(options, [episode_key(tmp_path / "out", "colour", options.root)])
    assert len(added) == 1 and failed == []
    rows, _, meta = load_with_lerobot(options.root, tmp_path / "oracle", {})
    assert meta["features"]["observation.front_embedding"]["shape"] == [192]
    cls, _ = enc.encode(np.stack([rgb for _, rgb in expected["/cam/color/image_raw"]])).numpy()
    check_rows(rows, np.arange(len(rows["index"])), expected, "/cam/color/image_raw", "front", cls)


def test_an_rgbd_bag_with_refine_gives_the_refined_depths_embeddings(cli, tmp_path, shared_data, lingbot_ckpt,
                                                                     encoder):
    from defm_ros import Refiner

    from .helpers.scenes import scene

    rgb, mm, _ = scene(shared_data, "1")
    expected = write_robot_bag(tmp_path / "rs", {RS_DEPTH: ("16UC1", [mm]), RS_COLOR: ("rgb8", [rgb])},
                               seconds=0.4)
    assert cli(tmp_path / "rs", "--out", tmp_path / "o", *COMMON[:-1], "--fps", FPS, "--refine", "lingbot",
               "--refine-weights", lingbot_ckpt, "--refine-tokens", 300, "--camera-key", f"{RS_DEPTH}=front") == 0
    rows, _, _ = load_with_lerobot(tmp_path / "o" / "lerobot", tmp_path / "oracle", {})
    refined = Refiner(weights=lingbot_ckpt, num_tokens=300).refine(rgb, mm.astype(np.float32) / 1000)
    cls = encoder.encode(refined.depth.numpy()).numpy()[0]
    check_rows(rows, np.arange(len(rows["index"])), expected, RS_DEPTH, "front",
               np.repeat(cls, len(expected[RS_DEPTH]), axis=0))


def test_the_rgbd_encoder_gives_its_joint_embeddings(tmp_path, shared_data, lingbot_ckpt):
    """The RGB-D family (lingbot_rgbd_vitl14): each row's embedding is that of the depth + colour pair in force."""
    from .helpers.scenes import scene

    rgb, mm, _ = scene(shared_data, "2")
    expected = write_robot_bag(tmp_path / "rs", {RS_DEPTH: ("16UC1", [mm]), RS_COLOR: ("rgb8", [rgb])}, seconds=0.4)
    enc = build_encoder(model="lingbot_rgbd_vitl14", weights=str(lingbot_ckpt), input_size=(140, 182))
    options = LeRobotOptions(root=tmp_path / "out" / "lerobot", fps=FPS, state=(JOINT_STATES,), action=(CMD_VEL,))
    result = extract_bag(tmp_path / "rs", tmp_path / "out", encoder=enc, write_bag=False, lerobot=options,
                         progress=False)
    assert result.complete and result.topics == [RS_DEPTH], result.summary()
    added, failed = assemble(options, [episode_key(tmp_path / "out", "rs", options.root)])
    assert len(added) == 1 and failed == []
    rows, _, meta = load_with_lerobot(options.root, tmp_path / "oracle", {})
    key = RS_DEPTH.strip("/").replace("/", ".")
    assert meta["features"][f"observation.{key}_embedding"]["shape"] == [enc.info["cls_channels"]]
    cls = enc.encode((rgb, mm.astype(np.float32) * np.float32(0.001))).numpy()[0]
    check_rows(rows, np.arange(len(rows["index"])), expected, RS_DEPTH, key,
               np.repeat(cls, len(expected[RS_DEPTH]), axis=0))


@pytest.mark.parametrize("dense", [False, True])
def test_the_staged_frames_keep_dense_maps_only_with_dense(robot_bags, encoder, tmp_path, dense):
    """Without --dense the episode's staged frames hold no dense maps (a ViT-S's are 256x its class token: disk
    that a long bag would fill before its episode is made), and its rows none."""
    bag = next(iter(robot_bags))
    options = LeRobotOptions(root=tmp_path / "out" / "lerobot", fps=FPS, state=(JOINT_STATES,), action=(CMD_VEL,),
                             dense=dense)
    result = extract_bag(bag, tmp_path / "out", encoder=encoder, write_bag=False, lerobot=options, progress=False)
    assert result.complete, result.summary()
    key = episode_key(tmp_path / "out", bag.name, options.root)
    chunks = list(iter_chunks(staging(options.root, key) / "frames"))
    assert chunks and all(("dense" in c) == dense for c in chunks)
    assert sum(len(c["cls"]) for c in chunks) == result.frames_written
    assert assemble(options, [key])[1] == []
    columns = pq.read_schema(next(options.root.glob("data/*/*.parquet"))).names
    assert ("observation.cam.depth_features" in columns) == dense and "observation.cam.depth_embedding" in columns


def test_ray_gives_the_same_dataset(cli, robot_bags, reference, tmp_path):
    ray = pytest.importorskip("ray", reason="ray (the optional extra defm_ros[ray]) is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        assert cli(*robot_bags, "--out", tmp_path / "o", *COMMON, "--ray") == 0
    finally:
        ray.shutdown()
    assert_same_dataset(tmp_path / "o" / "lerobot", reference)


def test_build_episode_rows_start_when_every_source_has_a_sample():
    frames = {"cam": (np.array([100, 0, 250]), np.arange(6, dtype=np.float32).reshape(3, 2), None)}
    state = (np.array([40, 120]), np.array([[1.0], [2.0]], np.float32), ["j"])
    cols, names, t0, left_out = build_episode(frames, {"observation.state": [state]}, fps=10**7)  # 100 ns rows
    assert t0 == 0 and left_out == 1 and names == {"observation.state": ["j"]}
    np.testing.assert_allclose(cols["timestamp"], [1e-7, 2e-7])
    assert cols["observation.cam_stamp_ns"].tolist() == [100, 100]  # at 200: the newest frame is still 100's
    np.testing.assert_array_equal(cols["observation.cam_embedding"], [[0, 1], [0, 1]])
    np.testing.assert_array_equal(cols["observation.state"], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="no time of the grid"):
        build_episode(frames, {"action": [(np.array([500]), np.ones((1, 1), np.float32), ["a"])]}, fps=10**7)



@pytest.mark.parametrize("second", [["b", "a"], ["a"]], ids=["reordered", "partial"])
def test_a_joint_state_topic_whose_joints_change_is_refused(tmp_path, second):
    """Joints in another order (or only some) would put other joints' values in a column: the bag fails."""
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        ts = bag.ts
        bag.add(JOINT_STATES, "sensor_msgs/msg/JointState")
        for k, names in enumerate((["a", "b"], ["a", "b"], second)):
            bag.write(JOINT_STATES, T0 + k, ts.types["sensor_msgs/msg/JointState"](
                header=header(ts, T0 + k, "base"), name=names, position=np.arange(len(names), dtype=float),
                velocity=np.zeros(0), effort=np.zeros(0)))
    with BagSource(path) as source, pytest.raises(BagReadError, match=re.escape(
            f"changes what its values are: ['a', 'b'] then {second}")):
        read_signal(source, JOINT_STATES, {})


def test_an_unreadable_state_message_costs_itself_and_is_reported(cli, capsys, tmp_path, depth_pngs):
    """A corrupt JointState (and one without positions) is skipped and counted: the row at its time holds the
    message before it, and the job goes on."""
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        ts = bag.ts
        bag.add(CAM, "sensor_msgs/msg/Image")
        bag.add(JOINT_STATES, "sensor_msgs/msg/JointState")
        for k in range(5):
            for j in range(10):  # 100 Hz, position j; row k's time is message (k, 0)
                t = T0 + k * 100_000_000 + j * 10_000_000
                if j == 0:
                    bag.write(CAM, t, image_msg(ts, t, "cam", "16UC1", depth_pngs[0]))
                if (k, j) == (2, 0):
                    bag.write_raw(JOINT_STATES, t, b"\x00\x01garbage")
                    continue
                position = np.zeros(0) if (k, j) == (3, 0) else np.array([float(j)])
                bag.write(JOINT_STATES, t, ts.types["sensor_msgs/msg/JointState"](
                    header=header(ts, t, "base"), name=["a"], position=position, velocity=np.zeros(0),
                    effort=np.zeros(0)))
    assert cli(path, "--out", tmp_path / "o", "--weights", "random", "--size", "64", "--no-progress", "--lerobot",
               "--fps", FPS, "--state", JOINT_STATES) == 0
    assert f"2 unreadable message(s) on {JOINT_STATES} skipped" in capsys.readouterr().out
    state = pq.read_table(tmp_path / "o/lerobot/data/chunk-000/file-000.parquet").to_pydict()["observation.state"]
    assert state == [[0.0], [0.0], [9.0], [9.0], [0.0]]  # rows 2 and 3 hold the message before the bad ones
