"""Launch logic and config presets (launch itself is not installable here; its logic is plain Python)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from defm_ros.launch_config import PROFILE_ENV, node_launch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("camera, topic", [("realsense", "/camera/camera/depth/image_rect_raw"),
                                           ("zed", "/zed/zed_node/depth/depth_registered")])
def test_presets_point_at_the_drivers_default_topics(camera, topic):
    spec = node_launch(ROOT, camera=camera, model="defm_vit_s14", device="cuda", environ={})
    preset = yaml.safe_load(Path(spec.parameters[0]).read_text())["/**"]["ros__parameters"]
    assert preset["depth_topic"] == topic
    assert spec.parameters[-1] == {"model": "defm_vit_s14", "weights": "", "backend": "torch", "device": "cuda"}
    assert spec.env == {PROFILE_ENV: str(ROOT / "config" / "fastdds_large_data.xml")}


def test_user_profile_and_custom_camera_are_respected():
    spec = node_launch(ROOT, camera="custom", depth_topic="/my/depth", environ={PROFILE_ENV: "/etc/mine.xml"})
    assert spec.env == {} and spec.parameters == [{"model": "defm_resnet18", "weights": "", "backend": "torch",
                                                   "device": "cpu", "depth_topic": "/my/depth"}]
    with pytest.raises(ValueError, match="camera must be one of"):
        node_launch(ROOT, camera="kinect")


def test_a_user_profile_under_either_name_wins_in_launch_and_node():
    from defm_ros.dds_profile import apply_large_data_profile

    for name in (PROFILE_ENV, "FASTDDS_DEFAULT_PROFILES_FILE"):  # Fast DDS 2.x and 3.x spellings
        assert node_launch(ROOT, environ={name: "/etc/mine.xml"}).env == {}
        environ = {name: "/etc/mine.xml"}
        assert apply_large_data_profile(environ) is None and environ == {name: "/etc/mine.xml"}
    environ: dict = {}
    assert apply_large_data_profile(environ) == str(ROOT / "config" / "fastdds_large_data.xml")
    assert environ == {PROFILE_ENV: str(ROOT / "config" / "fastdds_large_data.xml")}


def test_preset_values_pass_the_nodes_validation():
    from defm_ros.node_params import PARAMS, check_value

    for f in ("realsense.yaml", "zed.yaml", "multi_camera.yaml"):
        params = yaml.safe_load((ROOT / "config" / f).read_text())["/**"]["ros__parameters"]
        for k, v in params.items():
            assert k in PARAMS, (f, k)
            assert check_value(k, v) is None, (f, k, v)


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((ROOT / "launch" / "defm.launch.py").read_text())
    args = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGS")
    names = {k.value for k in args.value.keys}
    assert {"camera", "model", "weights", "backend", "device", "namespace"} <= names
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
