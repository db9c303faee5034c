"""Run the MVP policy node on a robot (or a simulation), with a real ROS 2 install.

    ros2 launch mvp_ros policy.launch.py checkpoint:=/path/to/checkpoint device:=cuda
    ros2 launch mvp_ros policy.launch.py params_file:=my_robot.yaml use_sim_time:=true namespace:=arm

The policy node is a lifecycle node, started as launch_ros's LifecycleNode. With `autostart:=true`
(the default) launch asks it to configure and, once configured, to activate; with
`autostart:=false` it waits unconfigured for `ros2 lifecycle set /mvp_policy configure` or a
lifecycle manager. Launch drives the transitions, so the node's own `autostart` parameter (for
`mvp policy-node` without launch) is set to false here. A configure that fails leaves the node
unconfigured and logs why. `ros2 lifecycle set /mvp_policy deactivate` or the `~/stop` service stops
it, publishing the contract's safe action.

Names under a namespace: the node's services (`~/start`, `~/stop`, `~/reset`, the lifecycle
services) move with `namespace`. The topics the contract names are absolute and stay where the
contract says, since the contract describes one robot's topics: to run several robots, give each its
contract or remap the topics. /diagnostics and /clock are global, as for every ROS 2 node. The
parameters file is keyed `/**`, so it applies whatever the node's name and namespace.

Without a ROS install the same node runs as
`mvp policy-node --ros-args --params-file config/policy_node.yaml`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from mvp_ros.ros.launch_actions import lifecycle_autostart_actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("mvp_ros")
    arguments = [
        DeclareLaunchArgument("checkpoint", default_value=PathJoinSubstitution([share, "models", "lift_lowdim"]),
                              description="policy checkpoint directory (model.safetensors + config.json)"),
        DeclareLaunchArgument("contract", default_value=PathJoinSubstitution([share, "config", "panda_sim_contract.yaml"]),
                              description="observation contract YAML of the robot"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "policy_node.yaml"]),
                              description="the policy node's parameters (config/policy_node.yaml documents them)"),
        DeclareLaunchArgument("device", default_value="auto", description="torch device: auto, cpu or cuda"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="tick on /clock (simulation)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its services (the contract's topics are absolute)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure the node, then activate it; false: leave it unconfigured"),
    ]
    policy = LifecycleNode(
        package="mvp_ros",
        executable="policy_node",
        name="mvp_policy",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": LaunchConfiguration("checkpoint"),
                "contract": LaunchConfiguration("contract"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "autostart": False,  # launch drives the transitions (lifecycle_autostart_actions)
            },
        ],
    )
    autostart = IfCondition(LaunchConfiguration("autostart"))
    return LaunchDescription([*arguments, policy, *lifecycle_autostart_actions(policy, autostart)])
