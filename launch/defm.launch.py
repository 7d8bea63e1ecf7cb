"""ros2 launch defm_ros defm.launch.py camera:=realsense model:=defm_resnet18 [weights:= backend:= device:=
namespace:= depth_topic:= params_file:= large_data_profile:=true]

Thin adapter: the logic lives in defm_ros.launch_config (tested without `launch`). The large-data
Fast DDS profile is set for every process of this launch, so a camera driver included here gets it
too: only the publisher's profile decides whether 614 KB frames arrive (see README)."""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from defm_ros.launch_config import node_launch
from launch import LaunchDescription

ARGS = {
    "camera": ("realsense", "realsense | zed | custom (custom: set depth_topic or params_file)"),
    "model": ("defm_resnet18", "DeFM variant"),
    "weights": ("", "checkpoint path; empty: models/, HF cache, Hub"),
    "backend": ("torch", "torch | onnxruntime"),
    "device": ("cpu", "cpu | cuda | cuda:N"),
    "namespace": ("", "node namespace"),
    "depth_topic": ("", "override the preset's depth topic"),
    "params_file": ("", "extra parameter file (e.g. config/multi_camera.yaml)"),
    "large_data_profile": ("true", "apply config/fastdds_large_data.xml to this launch's processes"),
}


def _setup(context):
    values = {k: LaunchConfiguration(k).perform(context) for k in ARGS}
    values["large_data_profile"] = values["large_data_profile"].lower() == "true"
    spec = node_launch(Path(get_package_share_directory("defm_ros")), **values)
    actions = [SetEnvironmentVariable(k, v) for k, v in spec.env.items()]
    actions.append(Node(package="defm_ros", executable="defm_node", name="defm_node", namespace=spec.namespace,
                        parameters=spec.parameters, remappings=spec.remappings, output="screen", emulate_tty=True))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
        + [OpaqueFunction(function=_setup)]
    )
