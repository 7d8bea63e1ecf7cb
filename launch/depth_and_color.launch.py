"""ros2 launch defm_ros depth_and_color.launch.py camera:=realsense depth_model:=defm_resnet18
color_model:=theia_small [depth_weights:= color_weights:= backend:= device:= autostart:= large_data_profile:=]

DeFM on the camera's depth and Theia on its colour, as two lifecycle nodes in their own namespaces:
features on /defm/defm_node/features/* and /theia/defm_node/features/*. Theia's code and weights are
for non-commercial research only. The logic lives in defm_ros.node.launch_config (tested without `launch`)."""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from defm_ros.node.launch_config import PAIR_ARGS, depth_and_color
from launch import LaunchDescription


def _setup(context):
    values = {k: LaunchConfiguration(k).perform(context) for k in PAIR_ARGS}
    specs = depth_and_color(Path(get_package_share_directory("defm_ros")), **values)
    actions = [SetEnvironmentVariable(k, v) for k, v in specs[0].env.items()]
    for spec in specs:
        actions.append(LifecycleNode(package="defm_ros", executable="defm_node", name="defm_node",
                                     namespace=spec.namespace, parameters=spec.parameters,
                                     remappings=spec.remappings, output="screen", emulate_tty=True))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in PAIR_ARGS.items()]
        + [OpaqueFunction(function=_setup)]
    )
