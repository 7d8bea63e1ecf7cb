"""Launch logic and config presets (launch itself is not installable here; its logic is plain Python)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from defm_ros.node.launch_config import LAUNCH_ARGS, PAIR_ARGS, PROFILE_ENV, depth_and_color, node_launch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("camera, topic", [("realsense", "/camera/camera/depth/image_rect_raw"),
                                           ("zed", "/zed/zed_node/depth/depth_registered")])
def test_presets_point_at_the_drivers_default_topics(camera, topic):
    spec = node_launch(ROOT, camera=camera, model="defm_vit_s14", device="cuda", environ={})
    preset = yaml.safe_load(Path(spec.parameters[0]).read_text())["/**"]["ros__parameters"]
    assert preset["depth_topic"] == topic
    assert spec.parameters[-1] == {"model": "defm_vit_s14", "weights": "", "backend": "torch", "device": "cuda",
                                   "refine": "none", "refine_weights": "", "autostart": True,
                                   "publish_points": False}
    assert spec.env == {PROFILE_ENV: str(ROOT / "config" / "fastdds_large_data.xml")}


def test_user_profile_and_custom_camera_are_respected():
    spec = node_launch(ROOT, camera="custom", depth_topic="/my/depth", environ={PROFILE_ENV: "/etc/mine.xml"})
    assert spec.env == {} and spec.parameters == [{"model": "defm_resnet18", "weights": "", "backend": "torch",
                                                   "device": "cpu", "refine": "none", "refine_weights": "",
                                                   "autostart": True, "publish_points": False,
                                                   "depth_topic": "/my/depth"}]
    with pytest.raises(ValueError, match="camera must be one of"):
        node_launch(ROOT, camera="kinect")
    with pytest.raises(ValueError, match="unknown launch arguments"):
        node_launch(ROOT, modle="defm_vit_s14")
    with pytest.raises(ValueError, match="autostart must be true or false"):
        node_launch(ROOT, autostart="yes")


def test_autostart_false_reaches_the_node():
    spec = node_launch(ROOT, autostart="false", large_data_profile="False", environ={})
    assert spec.parameters[-1]["autostart"] is False and spec.env == {}


def test_a_user_profile_under_either_name_wins_in_launch_and_node():
    from defm_ros.node.dds_profile import apply_large_data_profile

    for name in (PROFILE_ENV, "FASTDDS_DEFAULT_PROFILES_FILE"):  # Fast DDS 2.x and 3.x spellings
        assert node_launch(ROOT, environ={name: "/etc/mine.xml"}).env == {}
        environ = {name: "/etc/mine.xml"}
        assert apply_large_data_profile(environ) is None and environ == {name: "/etc/mine.xml"}
    environ: dict = {}
    assert apply_large_data_profile(environ) == str(ROOT / "config" / "fastdds_large_data.xml")
    assert environ == {PROFILE_ENV: str(ROOT / "config" / "fastdds_large_data.xml")}


def test_preset_values_pass_the_nodes_validation():
    from defm_ros.node.params import PARAMS, check_value

    for f in ("realsense.yaml", "zed.yaml", "multi_camera.yaml", "realsense_color.yaml", "zed_color.yaml",
              "realsense_rgbd.yaml", "zed_rgbd.yaml"):
        params = yaml.safe_load((ROOT / "config" / f).read_text())["/**"]["ros__parameters"]
        for k, v in params.items():
            assert k in PARAMS, (f, k)
            assert check_value(k, v) is None, (f, k, v)


def test_launch_file_declares_the_documented_arguments():
    """The launch file declares LAUNCH_ARGS, starts a lifecycle node, and passes every argument on."""
    assert {"camera", "model", "weights", "backend", "device", "namespace", "autostart"} <= set(LAUNCH_ARGS)
    tree = ast.parse((ROOT / "launch" / "defm.launch.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert {"LAUNCH_ARGS", "node_launch", "LifecycleNode", "DeclareLaunchArgument"} <= names
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    readme = (ROOT / "README.md").read_text()
    assert all(f"{name}:=" in readme for name in LAUNCH_ARGS), [n for n in LAUNCH_ARGS if f"{n}:=" not in readme]


@pytest.mark.parametrize(("camera", "topic"), [("realsense", "/camera/camera/color/image_raw"),
                                               ("zed", "/zed/zed_node/rgb/image_rect_color")])
def test_a_colour_model_gets_the_colour_preset(camera, topic):
    spec = node_launch(ROOT, camera=camera, model="theia_small", environ={})
    preset = yaml.safe_load(Path(spec.parameters[0]).read_text())["/**"]["ros__parameters"]
    assert preset["image_topic"] == topic and "depth_topic" not in preset


def test_depth_and_colour_from_one_camera_as_two_nodes():
    depth, color = depth_and_color(ROOT, camera="realsense", device="cuda", environ={})
    assert (depth.namespace, color.namespace) == ("defm", "theia")
    assert depth.parameters[0].endswith("realsense.yaml") and color.parameters[0].endswith("realsense_color.yaml")
    assert depth.parameters[-1]["model"] == "defm_resnet18" and color.parameters[-1]["model"] == "theia_small"
    assert depth.parameters[-1]["device"] == color.parameters[-1]["device"] == "cuda"
    assert depth.env == color.env == {PROFILE_ENV: str(ROOT / "config" / "fastdds_large_data.xml")}
    with pytest.raises(ValueError, match="color_model must be a color model"):
        depth_and_color(ROOT, color_model="defm_vit_s14")
    with pytest.raises(ValueError, match="depth_model must be a depth model"):
        depth_and_color(ROOT, depth_model="theia_tiny")
    tree = ast.parse((ROOT / "launch" / "depth_and_color.launch.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert {"PAIR_ARGS", "depth_and_color", "LifecycleNode"} <= names
    readme = (ROOT / "README.md").read_text()
    assert "depth_and_color.launch.py" in readme and all(f"{k}:=" in readme for k in ("depth_model", "color_model"))
    assert set(PAIR_ARGS) >= {"camera", "depth_model", "color_model", "device", "autostart"}


@pytest.mark.parametrize(("camera", "depth", "color"), [
    ("realsense", "/camera/camera/aligned_depth_to_color/image_raw", "/camera/camera/color/image_raw"),
    ("zed", "/zed/zed_node/depth/depth_registered", "/zed/zed_node/rgb/image_rect_color")])
def test_refining_takes_the_aligned_preset(camera, depth, color):
    spec = node_launch(ROOT, camera=camera, refine="lingbot", publish_points="true", environ={})
    preset = yaml.safe_load(Path(spec.parameters[0]).read_text())["/**"]["ros__parameters"]
    assert (preset["depth_topic"], preset["image_topic"]) == (depth, color)
    assert "camera_info" in preset["camera_info_topic"]
    assert spec.parameters[-1]["refine"] == "lingbot" and spec.parameters[-1]["publish_points"] is True
    rgbd = node_launch(ROOT, camera=camera, model="lingbot_rgbd_vitl14", environ={})
    assert rgbd.parameters[0] == spec.parameters[0]  # the RGB-D encoder takes the same aligned topics
