"""The policy in the MuJoCo simulation: the simulation bridge and the policy node, on sim time.

    ros2 launch mvp_ros sim.launch.py [checkpoint:=DIR] [seed:=0] [lockstep:=true] [namespace:=NS]
    ros2 service call /mvp_sim/reset std_srvs/srv/Trigger      # start an episode (seed, seed + 1, ...)
    ros2 topic echo /mvp_sim/episode_result                     # how it went

The simulation is rebuilt from the checkpoint's env_args. In lockstep (the default) it steps when
the policy's command for the current step arrives, so the loop behaves as `mvp eval` whatever the
machine's speed. Without a ROS install, `mvp demo` runs the same two nodes.

The policy node is a lifecycle node that launch configures and activates (`autostart`), as in
policy.launch.py. Under `namespace:=NS` both nodes move into NS with their services and the
simulation's episode topics (`/NS/mvp_sim/reset`, `/NS/mvp_sim/episode_start`, which the policy
follows by the relative name `mvp_sim/episode_start`). The topics the contract names are absolute and
stay where the contract says, and the simulation publishes /clock, which is global: to run several
simulations at once, give each its own ROS_DOMAIN_ID.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from mvp_ros.ros.launch_actions import lifecycle_autostart_actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("mvp_ros")
    checkpoint = LaunchConfiguration("checkpoint")
    contract = LaunchConfiguration("contract")
    namespace = LaunchConfiguration("namespace")
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
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of both nodes and their services (the contract's topics are absolute)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure the policy node, then activate it; false: leave it unconfigured"),
    ]
    simulation = Node(
        package="mvp_ros",
        executable="sim_node",
        name="mvp_sim",
        namespace=namespace,
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
    policy = LifecycleNode(
        package="mvp_ros",
        executable="policy_node",
        name="mvp_policy",
        namespace=namespace,
        output="screen",
        parameters=[
            LaunchConfiguration("policy_params_file"),
            {
                "checkpoint": checkpoint,
                "contract": contract,
                "device": LaunchConfiguration("device"),
                "use_sim_time": True,
                "reset_topic": "mvp_sim/episode_start",  # relative: the simulation's ~/episode_start in the same namespace
                "inference_timeout_s": 1.0,  # lockstep: the simulation waits, so wall-clock time is no hazard
                "autostart": False,  # launch drives the transitions (lifecycle_autostart_actions)
            },
        ],
    )
    autostart = IfCondition(LaunchConfiguration("autostart"))
    return LaunchDescription([*arguments, simulation, policy, *lifecycle_autostart_actions(policy, autostart)])
