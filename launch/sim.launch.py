"""The policy in the MuJoCo simulation: the simulation bridge and the policy node, on sim time.

    ros2 launch mvp_ros sim.launch.py [checkpoint:=DIR] [seed:=0] [lockstep:=true]
    ros2 service call /mvp_sim/reset std_srvs/srv/Trigger      # start an episode (seed, seed + 1, ...)
    ros2 topic echo /mvp_sim/episode_result                     # how it went

The simulation is rebuilt from the checkpoint's env_args. In lockstep (the default) it steps when
the policy's command for the current step arrives, so the loop behaves as `mvp eval` whatever the
machine's speed. Without a ROS install, `mvp demo` runs the same two nodes.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("mvp_ros")
    checkpoint = LaunchConfiguration("checkpoint")
    contract = LaunchConfiguration("contract")
    arguments = [
        DeclareLaunchArgument("checkpoint", default_value=PathJoinSubstitution([share, "models", "lift_lowdim"]),
                              description="policy checkpoint; its env_args build the simulation"),
        DeclareLaunchArgument("contract", default_value=PathJoinSubstitution([share, "config", "panda_sim_contract.yaml"]),
                              description="observation contract of the simulated robot"),
        DeclareLaunchArgument("policy_params_file", default_value=PathJoinSubstitution([share, "config", "policy_node.yaml"]),
                              description="the policy node's parameters"),
        DeclareLaunchArgument("sim_params_file", default_value=PathJoinSubstitution([share, "config", "sim_node.yaml"]),
                              description="the simulation node's parameters"),
        DeclareLaunchArgument("device", default_value="auto", description="torch device: auto, cpu or cuda"),
        DeclareLaunchArgument("seed", default_value="0", description="seed of the first episode"),
        DeclareLaunchArgument("lockstep", default_value="true", description="step when the command arrives (else at the rate)"),
    ]
    simulation = Node(
        package="mvp_ros",
        executable="sim_node",
        name="mvp_sim",
        output="screen",
        parameters=[
            LaunchConfiguration("sim_params_file"),
            {
                "checkpoint": checkpoint,
                "contract": contract,
                "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
                "lockstep": ParameterValue(LaunchConfiguration("lockstep"), value_type=bool),
            },
        ],
    )
    policy = Node(
        package="mvp_ros",
        executable="policy_node",
        name="mvp_policy",
        output="screen",
        parameters=[
            LaunchConfiguration("policy_params_file"),
            {
                "checkpoint": checkpoint,
                "contract": contract,
                "device": LaunchConfiguration("device"),
                "use_sim_time": True,
                "reset_topic": "/mvp_sim/episode_start",
                "inference_timeout_s": 1.0,  # lockstep: the simulation waits, so wall-clock time is no hazard
            },
        ],
    )
    return LaunchDescription([*arguments, simulation, policy])
