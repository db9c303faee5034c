"""Run the MVP policy node on a robot (or a simulation), with a real ROS 2 install.

    ros2 launch mvp_ros policy.launch.py checkpoint:=/path/to/checkpoint device:=cuda
    ros2 launch mvp_ros policy.launch.py params_file:=my_robot.yaml use_sim_time:=true

The node is a lifecycle node that configures and activates itself (parameter `autostart`);
`ros2 lifecycle set /mvp_policy deactivate` or `ros2 service call /mvp_policy/stop std_srvs/srv/Trigger`
stops it, publishing the contract's safe action. Without a ROS install the same node runs as
`mvp policy-node --ros-args --params-file config/policy_node.yaml`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


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
    ]
    policy = Node(
        package="mvp_ros",
        executable="policy_node",
        name="mvp_policy",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": LaunchConfiguration("checkpoint"),
                "contract": LaunchConfiguration("contract"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
    )
    return LaunchDescription([*arguments, policy])
