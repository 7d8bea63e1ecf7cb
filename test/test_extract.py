"""Offline extraction (SPEC §7): bags in every format -> feature bag + dataset equal to Encoder.encode,
headers and log times kept, malformed messages skipped, resumable, interrupt-safe, damaged bags."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from defm_ros.extract import (
    BagReadError,
    ExtractInterrupted,
    OutputMismatchError,
    build_encoder,
    extract_bag,
    load_dataset,
)
from defm_ros.features import from_msg

from .helpers.bags import (
    CAMERAS,
    DEPTH_TOPICS,
    RS_DEPTH,
    N,
    read_features,
    write_bag,
    write_colour_bag,
    write_rgbd_bag,
)
from .helpers.scenes import scene

rosbags = pytest.importorskip("rosbags")

REJECTED = {"bad depth image": 1, "undecodable message": 1}



@pytest.fixture(scope="module")
def bags(tmp_path_factory, depth_pngs):
    root = tmp_path_factory.mktemp("bags")
    paths = {"ros1": root / "run.bag", "sqlite3": root / "run_db3", "mcap": root / "run_mcap"}
    expected = {kind: write_bag(path, kind, depth_pngs) for kind, path in paths.items()}
    return paths, expected


def custom_data(bag_dir: Path) -> dict:
    from ruamel.yaml import YAML

    meta = YAML(typ="safe").load((bag_dir / "metadata.yaml").read_text())
    return meta["rosbag2_bagfile_information"]["custom_data"]


def check_outputs(out: Path, name: str, expected: dict, encoder, dataset: bool = True) -> None:
    """Every valid frame once, in both outputs, equal to Encoder.encode on the same depth."""
    feats = read_features(out / f"{name}_features")
    assert sorted(feats) == sorted(f"{c}/features/{k}" for c in CAMERAS.values() for k in ("cls", "dense", "info"))
    ds = load_dataset(out / f"{name}_dataset") if dataset else None
    for topic, frames in expected.items():
        dense_msgs, cls_msgs = feats[f"{topic}/features/dense"], feats[f"{topic}/features/cls"]
        assert [t for t, _ in dense_msgs] == [f[0] for f in frames]  # log times kept, no duplicates
        assert [t for t, _ in cls_msgs] == [f[0] for f in frames]
        (info_t, info_msg), = feats[f"{topic}/features/info"]  # exactly once
        assert json.loads(info_msg.data)["model"] == "defm_resnet18" and info_t == frames[0][0]
        ref = encoder.encode(np.stack([f[3] for f in frames]))
        ref_cls, ref_dense = ref.numpy()
        for i, ((_, dmsg), (_, cmsg)) in enumerate(zip(dense_msgs, cls_msgs, strict=True)):
            for msg in (dmsg, cmsg):
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                assert (stamp, msg.header.frame_id) == (frames[i][1], frames[i][2])
            assert dmsg.encoding == f"32FC{ref_dense.shape[1]}" and (cmsg.height, cmsg.width) == (1, 1)
            np.testing.assert_allclose(from_msg(dmsg), ref_dense[i], atol=1e-4)
            np.testing.assert_allclose(from_msg(cmsg).reshape(-1), ref_cls[i], atol=1e-4)
        if ds is not None:
            sel = np.flatnonzero(np.asarray(ds["topics"])[ds["topic"]] == topic)
            assert ds["log_time_ns"][sel].tolist() == [f[0] for f in frames]
            assert ds["stamp_ns"][sel].tolist() == [f[1] for f in frames]
            assert set(ds["frame_id"][sel]) == {frames[0][2]}
            np.testing.assert_allclose(ds["dense"][sel], ref_dense, atol=1e-4)
            np.testing.assert_allclose(ds["cls"][sel], ref_cls, atol=1e-4)
    if ds is not None:
        assert ds["info"]["model"] == "defm_resnet18" and ds["info"]["random_weights"] is True
        assert len(ds["stamp_ns"]) == sum(len(f) for f in expected.values())


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "inline"])
@pytest.mark.parametrize("kind", ["ros1", "sqlite3", "mcap"])
def test_every_format_gives_features_equal_to_the_encoder(tmp_path, bags, encoder, kind, prefetch):
    paths, expected = bags
    result = extract_bag(paths[kind], tmp_path, encoder=encoder, dataset=True, batch=4, progress=False,
                         prefetch=prefetch)
    assert result.topics == DEPTH_TOPICS  # the rgb8 topic is not depth
    assert result.complete and not result.interrupted
    assert result.rejected == REJECTED  # skipped and counted, not fatal
    assert result.frames_written == 3 * N and result.frames_total == 3 * N + 2
    assert result.frames_per_s > 0 and result.bag_duration_s > 0 and result.realtime_factor > 0
    name = "run" if kind == "ros1" else paths[kind].name
    check_outputs(tmp_path, name, expected[kind], encoder)
    assert custom_data(tmp_path / f"{name}_features")["defm_ros.complete"] == "true"
    assert json.loads((tmp_path / f"{name}_dataset" / "dataset.json").read_text())["complete"] is True


def test_topic_choice_half_precision_and_dataset_only(tmp_path, bags, encoder):
    paths, expected = bags
    result = extract_bag(paths["mcap"], tmp_path, encoder=encoder, topics=["/zed/depth"], write_bag=False,
                         dataset=True, dtype="float16", progress=False)
    assert result.topics == ["/zed/depth"] and result.frames_written == N
    assert not (tmp_path / "run_mcap_features").exists()
    ds = load_dataset(tmp_path / "run_mcap_dataset")
    assert ds["dense"].dtype == np.float16 and ds["topics"] == ["/zed/depth"]
    ref = encoder.encode(np.stack([f[3] for f in expected["mcap"]["/zed/depth"]])).dense.numpy()
    np.testing.assert_allclose(ds["dense"].astype(np.float32), ref, atol=1e-2, rtol=1e-2)
    with pytest.raises(BagReadError, match="no topic"):
        extract_bag(paths["mcap"], tmp_path / "x", encoder=encoder, topics=["/nope"], progress=False)


def test_interrupted_and_limited_runs_resume_without_duplicates(tmp_path, bags, encoder):
    paths, expected = bags
    bag, out = paths["mcap"], tmp_path / "out"
    opts = dict(encoder=encoder, dataset=True, batch=2, segment_frames=3, chunk_frames=3, progress=False)
    first = extract_bag(bag, out, limit=4, **opts)
    assert first.limited and not first.complete and first.frames_written == 4
    assert custom_data(out / "run_mcap_features")["defm_ros.complete"] == "false"  # flagged partial
    assert len(read_features(out / "run_mcap_features")["/cam/depth/features/cls"]) >= 1
    with pytest.raises(FileExistsError):
        extract_bag(bag, out, **opts)  # no silent overwrite

    def stop_after_one_batch(result):
        raise KeyboardInterrupt

    with pytest.raises(ExtractInterrupted) as info:
        extract_bag(bag, out, resume=True, on_batch=stop_after_one_batch, **opts)
    second = info.value.result
    assert second.interrupted and second.frames_present == 4 and second.frames_written == 2
    # readable right after the interrupt, and still flagged partial
    assert custom_data(out / "run_mcap_features")["defm_ros.complete"] == "false"
    assert len(load_dataset(out / "run_mcap_dataset")["stamp_ns"]) == 6
    assert not (out / "run_mcap_features" / ".partial").exists()

    # a killed run leaves an unfinished segment and a temporary chunk behind
    junk = out / "run_mcap_features" / ".partial" / "run_mcap_features_9"
    junk.mkdir(parents=True)
    (junk / "run_mcap_features_9.mcap").write_bytes(b"\x89MCAP0\r\n truncated")
    (out / "run_mcap_dataset" / ".chunk_000099.tmp.npz").write_bytes(b"partial")

    third = extract_bag(bag, out, resume=True, **opts)
    assert third.complete and third.frames_present == 6 and third.frames_written == 3 * N - 6
    assert any("discarded segment" in n for n in third.notes)
    check_outputs(out, "run_mcap", expected["mcap"], encoder)
    assert custom_data(out / "run_mcap_features")["defm_ros.complete"] == "true"

    again = extract_bag(bag, out, resume=True, **opts)  # nothing left to do
    assert again.complete and again.frames_written == 0 and again.frames_present == 3 * N
    with pytest.raises(OutputMismatchError, match="dtype"):
        extract_bag(bag, out, resume=True, **{**opts, "dtype": "float16"})


def test_bag_output_resumes_when_dataset_is_added_later(tmp_path, bags, encoder):
    paths, expected = bags
    extract_bag(paths["sqlite3"], tmp_path, encoder=encoder, progress=False)
    result = extract_bag(paths["sqlite3"], tmp_path, encoder=encoder, dataset=True, resume=True, progress=False)
    assert result.frames_written == 3 * N  # only for the dataset: the bag already held them
    check_outputs(tmp_path, "run_db3", expected["sqlite3"], encoder)


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
        storage = next(p for p in dst.iterdir() if p.suffix in (".mcap", ".db3"))
    else:
        shutil.copy(src, dst)
        storage = dst
    os.truncate(storage, int(storage.stat().st_size * fraction))
    return dst


def test_truncated_mcap_is_processed_up_to_the_damage(tmp_path, bags, encoder):
    paths, _ = bags
    bag = _truncate(paths["mcap"], tmp_path / "cut", 0.6)
    (bag / "metadata.yaml").unlink()  # as when the recorder was killed
    result = extract_bag(bag, tmp_path / "out", encoder=encoder, dataset=True, progress=False)
    assert result.source_truncated and 0 < result.frames_written < 3 * N
    assert any("metadata.yaml" in n for n in result.notes) and any("truncated" in n for n in result.notes)
    assert "damaged" in result.summary()
    assert custom_data(tmp_path / "out" / "cut_features")["defm_ros.source_truncated"] == "true"
    assert len(load_dataset(tmp_path / "out" / "cut_dataset")["stamp_ns"]) == result.frames_written


@pytest.mark.parametrize("kind", ["ros1", "sqlite3"])
def test_truncated_bag_without_index_gives_a_clear_error(tmp_path, bags, encoder, kind):
    paths, _ = bags
    bag = _truncate(paths[kind], tmp_path / ("cut.bag" if kind == "ros1" else "cut"), 0.5)
    with pytest.raises(BagReadError, match="reindex|recover"):
        extract_bag(bag, tmp_path / "out", encoder=encoder, progress=False)


# -- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    """`defm-ros extract ...` through the real dispatcher (exit codes included)."""
    from defm_ros import cli as cli_pkg

    return lambda *argv: cli_pkg.main(["extract", *map(str, argv)])


def test_cli_help_and_usage_errors(cli, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli("--help")
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--topic", "--dataset", "--batch", "--resume", "--model", "--weights", "--size"):
        assert option in text
    with pytest.raises(SystemExit) as exc:
        cli(tmp_path)  # --out missing
    assert exc.value.code == 2
    assert cli(tmp_path / "missing.bag", "--out", tmp_path) == 2
    assert cli(tmp_path, "--out", tmp_path, "--no-bag") == 2
    capsys.readouterr()


def test_cli_refuses_what_is_not_a_bag_before_loading_a_model(cli, capsys, tmp_path, monkeypatch):
    import defm_ros.extract as extract_pkg

    monkeypatch.setattr(extract_pkg, "build_encoder", lambda **k: pytest.fail("the model was loaded first"))
    (tmp_path / "frame.png").write_bytes(b"\x89PNG")
    assert cli(tmp_path / "frame.png", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "is not a bag" in err and "recover" not in err and "reindex" not in err
    assert cli(tmp_path, "--out", tmp_path / "o") == 2  # a folder with no bag in it
    assert "not a rosbag2 folder" in capsys.readouterr().err


def test_cli_a_named_topic_without_the_models_input_is_an_error(cli, capsys, tmp_path, bags):
    paths, _ = bags
    assert cli(paths["mcap"], "--out", tmp_path / "o", "--weights", "random", "--size", "64", "--no-progress",
               "--topic", "/cam/color") == 1
    err = capsys.readouterr().err
    assert "/cam/color carries no depth images" in err and "defm_resnet18" in err


def test_cli_runs_resumes_and_reports(cli, capsys, tmp_path, bags):
    paths, _ = bags
    common = ["--out", tmp_path / "o", "--weights", "random", "--size", "64", "--no-progress", "--dataset"]
    assert cli(paths["mcap"], paths["ros1"], *common, "--limit", "3") == 0
    assert "stopped at --limit" in capsys.readouterr().out
    assert cli(paths["mcap"], *common) == 2  # outputs exist: --resume or --overwrite
    assert cli(paths["mcap"], paths["ros1"], *common, "--resume") == 0
    text = capsys.readouterr().out
    assert "complete" in text and "already present" in text and "malformed" in text and "real time" in text
    assert len(load_dataset(tmp_path / "o" / "run_dataset")["stamp_ns"]) == 3 * N


def test_cli_interrupt_exits_130_and_unreadable_bag_exits_1(cli, capsys, tmp_path, bags, monkeypatch):
    import defm_ros.extract as extract_pkg

    paths, _ = bags
    real = extract_pkg.extract_bag

    def interrupted(*args, **kwargs):
        def stop(result):
            raise KeyboardInterrupt

        return real(*args, **{**kwargs, "on_batch": stop})

    monkeypatch.setattr(extract_pkg, "extract_bag", interrupted)
    common = ["--out", tmp_path / "o", "--weights", "random", "--size", "64", "--no-progress"]
    assert cli(paths["mcap"], *common) == 130
    assert "INTERRUPTED" in capsys.readouterr().out
    assert custom_data(tmp_path / "o" / "run_mcap_features")["defm_ros.complete"] == "false"
    monkeypatch.setattr(extract_pkg, "extract_bag", real)
    cut = _truncate(paths["ros1"], tmp_path / "cut.bag", 0.5)
    assert cli(cut, *common) == 1
    assert "reindex" in capsys.readouterr().err


def test_segment_closed_but_not_listed_is_recovered(tmp_path, bags, encoder, monkeypatch):
    from defm_ros.extract import FeatureBag

    paths, expected = bags
    real, calls = FeatureBag._list_segment, []

    def crash_on_second(self, seg):
        calls.append(seg)
        if len(calls) == 2:
            raise SystemExit("killed between moving a segment and listing it")
        return real(self, seg)

    monkeypatch.setattr(FeatureBag, "_list_segment", crash_on_second)
    with pytest.raises(SystemExit):
        extract_bag(paths["mcap"], tmp_path, encoder=encoder, segment_frames=5, progress=False)
    monkeypatch.setattr(FeatureBag, "_list_segment", real)
    result = extract_bag(paths["mcap"], tmp_path, encoder=encoder, segment_frames=5, resume=True, progress=False)
    assert result.complete and result.frames_present == 10
    assert any("closed but did not list" in n for n in result.notes)
    check_outputs(tmp_path, "run_mcap", expected["mcap"], encoder, dataset=False)


def test_a_theia_model_extracts_the_colour_topics(tmp_path, shared_data):
    from PIL import Image as PILImage

    from defm_ros.sample_data import color_pngs

    rgbs = [np.array(PILImage.open(p).convert("RGB")) for p in color_pngs(shared_data)]
    expected = write_colour_bag(tmp_path / "colour", rgbs)
    enc = build_encoder(model="theia_tiny", weights="random")
    result = extract_bag(tmp_path / "colour", tmp_path / "out", encoder=enc, dataset=True, progress=False)
    assert result.topics == ["/cam/color/image_raw", "/cam2/color/image_raw/compressed"]  # not the depth
    assert result.complete and result.frames_written == 8
    feats = read_features(tmp_path / "out" / "colour_features")
    assert sorted(feats) == sorted(f"{c}/features/{k}" for c in expected for k in ("cls", "dense", "info"))
    ds = load_dataset(tmp_path / "out" / "colour_dataset")
    assert ds["meta"]["modality"] == ds["info"]["modality"] == "color" and ds["dense"].shape[1:] == (192, 14, 14)
    for camera, frames in expected.items():
        ref_cls, ref_dense = enc.encode(np.stack([rgb for _, rgb in frames])).numpy()
        dense = feats[f"{camera}/features/dense"]
        assert [t for t, _ in dense] == [t for t, _ in frames]
        for (_, msg), want in zip(dense, ref_dense, strict=True):
            np.testing.assert_allclose(from_msg(msg), want, atol=1e-4)
        sel = np.flatnonzero(np.asarray(ds["topics"])[ds["topic"]] == camera)
        np.testing.assert_allclose(ds["cls"][sel], ref_cls, atol=1e-4)


def test_cli_extract_with_theia_takes_the_colour_topic_of_a_depth_bag(cli, capsys, tmp_path, bags):
    paths, _ = bags
    common = ["--out", tmp_path / "o", "--weights", "random", "--no-progress", "--model", "theia_tiny", "--dataset"]
    assert cli(paths["mcap"], *common) == 0
    assert "complete; wrote 6 frames" in capsys.readouterr().out
    ds = load_dataset(tmp_path / "o" / "run_mcap_dataset")
    assert ds["topics"] == ["/cam/color"] and ds["meta"]["modality"] == "color"


# -- RGB-D: refinement in front of DeFM, and the RGB-D encoder ---------------------------------------------


def test_refined_extraction_pairs_refines_and_writes_the_refined_depth(tmp_path, rgbd_bag, lingbot_ckpt, encoder):
    from defm_ros import Refiner

    path, expected = rgbd_bag
    refiner = Refiner(weights=lingbot_ckpt, num_tokens=300)
    result = extract_bag(path, tmp_path, encoder=encoder, refiner=refiner, dataset=True, progress=False)
    assert result.topics == [RS_DEPTH] and result.frames_written == 2, result.summary()
    assert result.rejected == {"bad depth + colour pair": 1, "unpaired message (no partner with its stamp)": 1}
    feats = read_features(tmp_path / "rs_features")
    cam = RS_DEPTH
    assert {f"{cam}/depth_refined", f"{cam}/depth_refined_mask", f"{cam}/features/dense"} <= set(feats)
    ds = load_dataset(tmp_path / "rs_dataset")
    assert ds["depth_refined"].shape == (2, 480, 640) and ds["depth_refined_mask"].dtype == bool
    assert ds["info"]["refined_by"]["model"] == "lingbot_depth_vitl14"
    for i, (log_time, stamp, rgb, depth) in enumerate(expected):
        ref = refiner.refine(rgb, depth)
        (t, msg), = [(t, m) for t, m in feats[f"{cam}/depth_refined"] if t == log_time]
        got = np.frombuffer(msg.data, "<f4").reshape(480, 640)
        np.testing.assert_allclose(got, ref.depth.numpy(), rtol=1e-5, equal_nan=True)
        np.testing.assert_allclose(ds["depth_refined"][i], ref.depth.numpy(), rtol=1e-5, equal_nan=True)
        want = encoder.encode(ref.depth.numpy())
        dense = next(m for t, m in feats[f"{cam}/features/dense"] if t == log_time)
        np.testing.assert_allclose(from_msg(dense), want.dense[0].numpy(), atol=1e-4)
        assert ds["stamp_ns"][i] == stamp


@pytest.fixture(scope="module")
def rgbd_bag_with_info(tmp_path_factory, shared_data):
    """rgbd_bag's recording with the colour camera's camera_info beside the colour (scenes 1 and 2's K)."""
    scenes = [scene(shared_data, s) for s in ("1", "2")]
    path = tmp_path_factory.mktemp("rgbd_info") / "rs"
    return path, write_rgbd_bag(path, [s[:2] for s in scenes], [s[2] for s in scenes]), [s[2] for s in scenes]


@pytest.mark.parametrize("points", [False, True])
def test_refined_extraction_writes_the_camera_info_and_points(tmp_path, rgbd_bag_with_info, lingbot_ckpt, encoder,
                                                               points):
    """--refine: <topic>/depth_refined/camera_info is the camera's, with the refined depth's header (one per
    refined frame); --points: <topic>/depth_refined/points is the Refiner's `.points` for that K (1e-5)."""
    from defm_ros import Refiner
    from defm_ros.msgs.points import points_from_msg

    path, expected, ks = rgbd_bag_with_info
    refiner = Refiner(weights=lingbot_ckpt, num_tokens=300)
    result = extract_bag(path, tmp_path, encoder=encoder, refiner=refiner, progress=False, points=points)
    assert result.frames_written == 2 and not [n for n in result.notes if "camera_info" in n], result.notes
    assert result.rejected == {"bad depth + colour pair": 1, "unpaired message (no partner with its stamp)": 1}
    feats = read_features(tmp_path / "rs_features")
    cam = RS_DEPTH
    assert len(feats[f"{cam}/depth_refined/camera_info"]) == 2
    assert (f"{cam}/depth_refined/points" in feats) is points
    for (log_time, _, rgb, depth), k in zip(expected, ks, strict=True):
        image, = [m for t, m in feats[f"{cam}/depth_refined"] if t == log_time]
        info, = [m for t, m in feats[f"{cam}/depth_refined/camera_info"] if t == log_time]
        assert info.header == image.header and (info.height, info.width) == (480, 640)
        np.testing.assert_array_equal(info.k, k.reshape(-1))
        if points:
            cloud, = [m for t, m in feats[f"{cam}/depth_refined/points"] if t == log_time]
            assert cloud.header == image.header
            want = refiner.refine(rgb, depth, intrinsics=k).points.numpy()
            np.testing.assert_allclose(points_from_msg(cloud), want, rtol=0, atol=1e-5, equal_nan=True)


def test_points_need_a_refiner_and_a_camera_info(tmp_path, rgbd_bag, lingbot_ckpt, encoder, cli):
    """Without camera_info the refined depth is still written, and the report says what is missing; points
    without a refiner are refused, in Python and on the command line (a usage error)."""
    from defm_ros import Refiner

    path, _ = rgbd_bag
    refiner = Refiner(weights=lingbot_ckpt, num_tokens=300)
    result = extract_bag(path, tmp_path, encoder=encoder, refiner=refiner, progress=False, points=True)
    assert result.frames_written == 2 and any(f"{RS_DEPTH}: no camera_info beside" in n and "and points" in n
                                              for n in result.notes), result.notes
    feats = read_features(tmp_path / "rs_features")
    assert f"{RS_DEPTH}/depth_refined" in feats and not {f"{RS_DEPTH}/depth_refined/camera_info",
                                                         f"{RS_DEPTH}/depth_refined/points"} & set(feats)
    with pytest.raises(ValueError, match="--points needs --refine"):
        extract_bag(path, tmp_path / "o", encoder=encoder, progress=False, points=True)
    assert cli(path, "--out", tmp_path / "o", "--points", "--weights", "random") == 2


def test_cli_refine_with_points(cli, capsys, tmp_path, rgbd_bag_with_info, lingbot_ckpt):
    path, _, _ = rgbd_bag_with_info
    assert cli(path, "--out", tmp_path, "--weights", "random", "--size", "64", "--no-progress", "--refine",
               "lingbot", "--refine-weights", lingbot_ckpt, "--refine-tokens", "300", "--points") == 0
    assert "complete; wrote 2 frames" in capsys.readouterr().out
    feats = read_features(tmp_path / "rs_features")
    assert len(feats[f"{RS_DEPTH}/depth_refined/points"]) == len(feats[f"{RS_DEPTH}/depth_refined/camera_info"]) == 2


def test_the_rgbd_encoder_extracts_the_aligned_pairs(tmp_path, rgbd_bag, lingbot_ckpt):
    path, expected = rgbd_bag
    enc = build_encoder(model="lingbot_rgbd_vitl14", weights=str(lingbot_ckpt), input_size=(140, 182))
    result = extract_bag(path, tmp_path, encoder=enc, dataset=True, write_bag=False, progress=False)
    assert result.frames_written == 2 and result.topics == [RS_DEPTH]
    ds = load_dataset(tmp_path / "rs_dataset")
    assert ds["meta"]["modality"] == "rgbd" and ds["dense"].shape == (2, 384, 10, 13)
    for i, (_, _, rgb, depth) in enumerate(expected):
        np.testing.assert_allclose(ds["dense"][i], enc.encode((rgb, depth)).dense[0].numpy(), atol=1e-4)



def test_cli_the_readmes_export_then_extract_with_its_defaults(cli, capsys, caplog, tmp_path, bags):
    """`defm-ros export --camera-size 480x640` then `extract --backend onnxruntime --weights FILE` at
    extract's default batch (8): the export has a dynamic batch. A topic of another size fails clearly."""
    from defm_ros import cli as cli_pkg

    paths, _ = bags
    onnx = tmp_path / "r18_480x640.onnx"
    assert cli_pkg.main(["export", "-m", "defm_resnet18", "--weights", "random", "--size", "64",
                         "--camera-size", "480x640", "-o", str(onnx), "--no-check"]) == 0
    capsys.readouterr()
    common = ["--out", tmp_path / "o", "--backend", "onnxruntime", "--weights", onnx, "--no-progress"]
    assert cli(paths["mcap"], *common, "--topic", "/cam/depth") == 0
    assert "complete" in capsys.readouterr().out
    assert cli(paths["mcap"], *common, "--topic", "/zed/depth", "--overwrite") == 1  # 320x240 frames
    assert "exported for 480x640 input, got 240x320; export it for this camera size" in caplog.text
    assert "Traceback" not in caplog.text + capsys.readouterr().err


def test_a_one_frame_bag_reports_no_real_time_factor_and_locks_stay_out_of_sight(tmp_path, depth_pngs, encoder):
    bag = tmp_path / "one.mcap"
    write_bag(bag, "mcap", depth_pngs[:1], count=1)  # one frame per topic, within nanoseconds
    result = extract_bag(bag, tmp_path / "o", encoder=encoder, topics=["/cam/depth"], progress=False)
    assert result.complete and result.frames_written == 1
    assert "real time unknown: the recording spans no time" in result.summary() and "0.0x" not in result.summary()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".locks", "one_features"]


def test_an_empty_dataset_has_the_shapes_of_its_frames(tmp_path, encoder):
    from defm_ros.extract.sinks import FeatureDataset

    ds = FeatureDataset(tmp_path / "d", encoder.info, {}, "none.mcap", "float16")
    ds.open(resume=False)
    ds.commit(complete=True)
    data = load_dataset(tmp_path / "d")
    c, (h, w) = encoder.info["dense_channels"], encoder.info["dense_size"]
    assert data["dense"].shape == (0, c, h, w) and data["dense"].dtype == np.float16
    assert data["cls"].shape == (0, encoder.info["cls_channels"]) and data["stamp_ns"].dtype == np.int64


def test_zstd_feature_bags_hold_the_same_messages_in_compressed_chunks(tmp_path, bags, encoder):
    from mcap.reader import make_reader

    paths, _ = bags
    plain = extract_bag(paths["mcap"], tmp_path / "plain", encoder=encoder, progress=False)
    packed = extract_bag(paths["mcap"], tmp_path / "zstd", encoder=encoder, progress=False, compression="zstd")
    assert plain.complete and packed.complete
    files = {kind: next(Path(r.outputs["bag"]).glob("*.mcap")) for kind, r in (("plain", plain), ("zstd", packed))}
    for kind, want in (("plain", {""}), ("zstd", {"zstd"})):
        with open(files[kind], "rb") as f:
            assert {c.compression for c in make_reader(f).get_summary().chunk_indexes} == want
    assert files["zstd"].stat().st_size < 0.9 * files["plain"].stat().st_size
    a, b = read_features(Path(plain.outputs["bag"])), read_features(Path(packed.outputs["bag"]))
    assert a.keys() == b.keys()
    for topic in a:
        assert len(a[topic]) == len(b[topic])
        for (ta, ma), (tb, mb) in zip(a[topic], b[topic], strict=True):
            same = ma.data == mb.data if topic.endswith("/info") else np.array_equal(from_msg(ma), from_msg(mb))
            assert ta == tb and same, topic
    with pytest.raises(ValueError, match="compression must be one of"):
        extract_bag(paths["mcap"], tmp_path / "bad", encoder=encoder, progress=False, compression="lz5")


def test_cli_draws_no_progress_bar_into_a_log(cli, capsys, tmp_path, bags):
    """stderr is not a terminal here (a log file, CI): the bar's redraws would interleave with results."""
    paths, _ = bags
    assert cli(paths["mcap"], "--out", tmp_path / "o", "--weights", "random", "--size", "64") == 0
    captured = capsys.readouterr()
    assert "complete" in captured.out and "%|" not in captured.err + captured.out and "\r" not in captured.err


def test_prefetch_keeps_order_stays_bounded_and_raises_where_the_reader_failed():
    import threading
    import time

    from defm_ros.extract.prefetch import Prefetch

    made = []

    def items():
        for i in range(20):
            made.append(i)
            if i == 15:
                raise BagReadError("unreadable part-way")
            yield i

    got, reader = [], Prefetch(items, depth=3)
    with pytest.raises(BagReadError, match="part-way"):
        for item in reader:
            if not got:
                time.sleep(0.3)  # a slow forward pass: the reader waits, at most `depth` items ahead
                assert len(made) <= 1 + 3 + 1
            got.append(item)
    reader.close()
    assert got == list(range(15))
    assert not any(t.name == "extract-reader" for t in threading.enumerate())


def test_prefetch_close_stops_the_reader_and_closes_its_iterator_on_its_thread():
    import threading

    from defm_ros.extract.prefetch import Prefetch

    closed_on = []

    def items():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed_on.append(threading.current_thread().name)

    reader = Prefetch(items, depth=2)
    assert [x for x, _ in zip(reader, range(5), strict=False)] == [0, 1, 2, 3, 4]
    reader.close()
    assert closed_on == ["extract-reader"]
