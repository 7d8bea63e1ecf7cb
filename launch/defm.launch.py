"""ros2 launch defm_ros defm.launch.py camera:=realsense model:=defm_resnet18 [weights:= backend:= device:=
namespace:= depth_topic:= params_file:= large_data_profile:=true autostart:=true]

Thin adapter: the arguments and the logic live in defm_ros.node.launch_config (tested without `launch`).
The large-data Fast DDS profile is set for every process of this launch, so a camera driver included
here gets it too: only the publisher's profile decides whether 614 KB frames arrive (see README).
With autostart:=false the node waits unconfigured for `ros2 lifecycle set /defm_node configure`."""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from defm_ros.node.launch_config import LAUNCH_ARGS, node_launch
from launch import LaunchDescription


def _setup(context):
    values = {k: LaunchConfiguration(k).perform(context) for k in LAUNCH_ARGS}
    spec = node_launch(Path(get_package_share_directory("defm_ros")), **values)
    actions = [SetEnvironmentVariable(k, v) for k, v in spec.env.items()]
    actions.append(LifecycleNode(package="defm_ros", executable="defm_node", name="defm_node",
                                 namespace=spec.namespace, parameters=spec.parameters, remappings=spec.remappings,
                                 output="screen", emulate_tty=True))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in LAUNCH_ARGS.items()]
        + [OpaqueFunction(function=_setup)]
    )
