"""`mvp sim-node`: the robosuite simulation as a ROS 2 node, the stand-in for a robot.

The environment is rebuilt from the `env_args` of a checkpoint or a Robomimic HDF5 dataset (plus
the cameras the contract's image keys name). Every step the node publishes, in this order:
  /clock                      rosgraph_msgs/Clock: the simulation time (one control period per step)
  the contract's topics       JointState (arm and gripper joints by name), the end-effector
                              PoseStamped, the object state, rgb8 Images (right side up) or
                              CompressedImages (PNG or JPEG: `compressed_image_format`),
                              stamped with that time (see mvp_ros.ros.sim_messages)
  ~/success                   std_msgs/Bool: whether the task is solved now
and it applies the latest command from the contract's action topic, or, with several outputs
(`action.outputs`), from each output's topic (Float64MultiArray or JointTrajectory, whose first
point is read by joint name), each part placed at its names in the action. An output with no new
command for a step holds by its own safe action (`hold`: its last command with the motion dims
zeroed; before any command, the contract's `initial` values and zeros elsewhere; `constant`).

Stepping:
  lockstep (default)  after publishing step k the node waits for the next command (of every
                      output), then steps (or, after `lockstep_timeout_s` of wall time, holds
                      what did not come and steps). Simulation
                      time advances with the loop, not the wall clock, so the policy node on
                      use_sim_time behaves as in `mvp eval` on any machine, however slow.
  free run            steps at the control rate in wall time, applying whatever command arrived.

Episodes: `~/reset` (std_srvs/Trigger) starts an episode seeded with the parameter `seed`, then
increments that parameter, so successive resets walk through seeds S, S+1, ...; set the parameter
(`ros2 param set`, or `-p seed:=S`) to choose. In lockstep the episode starts once the last
observation published has been answered (the policy ticks on an episode's final step too). An
episode ends at success or after `max_steps`
steps; the node then publishes `~/episode_result` (diagnostic_msgs/DiagnosticStatus: seed, success,
steps, held steps; reliable, transient local) and waits for the next reset. At the start of each
episode it publishes `~/episode_start` (std_msgs/Int64, the seed), which the policy node's
`reset_topic` follows to reset its policy with the same seed as `mvp eval` does; in lockstep the
episode's first observations wait until every subscriber has acknowledged it.

    mvp sim-node --checkpoint models/lift_lowdim --contract config/panda_sim_contract.yaml --ros-args -p autostart:=true
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.subscription import MessageInfo
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from std_msgs.msg import Bool, Float64MultiArray, Int64
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from mvp_ros.data.contract import Contract, ImageObservation, JointStateObservation, MessageError, load_contract
from mvp_ros.ros.diagnostics import RollingTimes, Throttle, diagnostic_array, status
from mvp_ros.ros.node_main import add_ros_args_argument, console_main, overrides, ros_context
from mvp_ros.ros.parameters import ParameterSpec, declare_parameters
from mvp_ros.ros.qos import EVENT_QOS, RELIABLE_QOS
from mvp_ros.ros.sim_messages import (COMPRESSED_IMAGE_FORMATS, JPEG_QUALITY, BridgeError, ContractMessages,
                                     JointGroup)

NODE_NAME = "mvp_sim"
COMMAND_TYPES = {"std_msgs/msg/Float64MultiArray": Float64MultiArray, "trajectory_msgs/msg/JointTrajectory": JointTrajectory}
DIAGNOSTICS_PERIOD_S = 1.0
IMAGE_SUFFIX = "_image"

PARAMETERS: dict[str, ParameterSpec] = {
    "checkpoint": ParameterSpec("", "policy checkpoint whose env_args build the environment"),
    "dataset": ParameterSpec("", "Robomimic HDF5 whose env_args build the environment (when no checkpoint is given)"),
    "contract": ParameterSpec("", "observation contract: the topics to publish and the command topic to apply"),
    "lockstep": ParameterSpec(True, "wait for the command of each step before stepping; false: step at the control rate"
                                    " in wall time"),
    "lockstep_timeout_s": ParameterSpec(2.0, "lockstep: wall seconds to wait for a command before holding and stepping anyway",
                                        minimum=0.001, maximum=3600.0),
    "seed": ParameterSpec(0, "seed of the next episode ~/reset starts (then incremented); at start-up also the"
                             " environment's construction seed, as in mvp eval",
                          minimum=0, maximum=2**32 - 1),
    "max_steps": ParameterSpec(0, "steps per episode; 0: the env_args horizon", minimum=0, maximum=10_000_000),
    "compressed_image_format": ParameterSpec("png", "how the contract's sensor_msgs/CompressedImage keys are encoded:"
                                                    f" png (lossless) or jpeg (lossy, quality {JPEG_QUALITY})",
                                             choices=COMPRESSED_IMAGE_FORMATS),
    "autostart": ParameterSpec(False, "start an episode at start-up instead of waiting for ~/reset"),
}


class SimNode(Node):
    def __init__(self, parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__(NODE_NAME, parameter_overrides=parameter_overrides or [])
        declare_parameters(self, PARAMETERS)
        self.contract = load_contract(_required(self, "contract"))
        self.env = bridge_env(self._env_args(), self.contract, self.get_parameter("seed").value)
        action = self.contract.action
        self.outputs, self.output_dims = action.streams(), action.slices()
        types = sorted({output.msgtype for output in self.outputs})
        if len(action.names) != self.env.action_dim or not set(types) <= set(COMMAND_TYPES):
            raise BridgeError(
                f"the simulation takes {self.env.action_dim}-dim commands as Float64MultiArray or JointTrajectory; the"
                f" contract's action is {' and '.join(types)} with {len(action.names)} names"
            )
        self.period_ns = round(1e9 / self.env.control_rate_hz)
        self.max_steps = self.get_parameter("max_steps").value or self.env.horizon
        self.lockstep = self.get_parameter("lockstep").value
        self.lockstep_timeout_s = self.get_parameter("lockstep_timeout_s").value
        observation = self.env.reset(seed=0)
        self.messages = ContractMessages(self.contract, observation, _joint_groups(self.env),
                                         self.get_parameter("compressed_image_format").value)
        first_messages = self.messages.build(observation, Time().to_msg())
        _check_joint_keys(self.contract, observation, first_messages)

        self.clock_publisher = self.create_publisher(ClockMsg, "/clock", RELIABLE_QOS)
        self.topic_publishers = {
            topic: self.create_publisher(type(message), topic, RELIABLE_QOS) for topic, message in first_messages.items()
        }
        self.success_publisher = self.create_publisher(Bool, "~/success", RELIABLE_QOS)
        self.episode_start_publisher = self.create_publisher(Int64, "~/episode_start", EVENT_QOS)
        self.episode_result_publisher = self.create_publisher(DiagnosticStatus, "~/episode_result", EVENT_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
        for index, output in enumerate(self.outputs):
            self.create_subscription(COMMAND_TYPES[output.msgtype], output.topic,
                                     lambda msg, info, index=index: self._on_command(index, msg, info), RELIABLE_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))

        self.sim_time_ns = 0
        self.episode: dict[str, Any] | None = None  # seed, steps, held_steps of the running episode
        self.episodes = self.successes = self.rejected_commands = self.early_commands = 0
        self.step_ms = RollingTimes()
        self._reject_log = Throttle()
        self._commands: list[np.ndarray | None] = [None] * len(self.outputs)  # per output, since the last observation
        self._applied: np.ndarray | None = None
        self._published_at = -math.inf
        self._published_at_ns = 0  # system clock, as DDS stamps a command's reception
        self._due_at = 0.0
        self._next_seed: int | None = None
        self.clock_publisher.publish(ClockMsg(clock=Time(nanoseconds=self.sim_time_ns).to_msg()))
        self.get_logger().info(
            f"{self.env.env_args['env_name']} at {self.env.control_rate_hz:g} Hz, {'lockstep' if self.lockstep else 'free run'};"
            f" publishing {sorted(self.topic_publishers)}, applying {[output.topic for output in self.outputs]}"
        )
        if self.get_parameter("autostart").value:
            self.request_episode()

    def _env_args(self) -> dict:
        checkpoint, dataset = self.get_parameter("checkpoint").value, self.get_parameter("dataset").value
        if checkpoint:
            from mvp_ros.policy.checkpoint_files import read_checkpoint_document

            env_args, source = read_checkpoint_document(checkpoint).get("env_args"), f"checkpoint {checkpoint}"
        elif dataset:
            from mvp_ros.data.robomimic import read_env_args

            env_args, source = read_env_args(dataset), f"dataset {dataset}"
        else:
            raise BridgeError("no environment: set parameter 'checkpoint' or 'dataset' (whose env_args build it)")
        if not env_args:
            raise BridgeError(f"{source} stores no env_args, so the simulation cannot be rebuilt from it")
        return env_args

    # ---- episodes -------------------------------------------------------------------------------

    def request_episode(self) -> int:
        """Schedule an episode seeded with the parameter `seed` (then incremented); its seed.

        In lockstep it starts once the last observation published has been answered (or the wait
        timed out), so the policy's tick on the previous episode's end never meets the new one.
        """
        seed = self.get_parameter("seed").value
        self.set_parameters([Parameter("seed", value=seed + 1)])
        if self.episode is not None:
            self._finish_episode("reset")
        self._next_seed = seed
        return seed

    def _start_episode(self, seed: int) -> None:
        self._next_seed = None
        self.episode = {"seed": seed, "steps": 0, "held_steps": 0}
        self._applied = None
        self._due_at = time.perf_counter()
        observation = self.env.reset(seed=seed)
        self.episode_start_publisher.publish(Int64(data=seed))
        if self.lockstep:
            # The policy resets on this message: received after the episode's first observations
            # (they travel on other topics), its first command would come from the last episode's state.
            self.episode_start_publisher.wait_for_all_acked(Duration(seconds=self.lockstep_timeout_s))
        self._publish_step(observation)

    def _finish_episode(self, outcome: str) -> None:
        success = outcome == "success"
        self.episodes += 1
        self.successes += success
        values = dict(self.episode, success=success, episode=self.episodes)
        level = DiagnosticStatus.OK if success else DiagnosticStatus.WARN
        self.episode_result_publisher.publish(
            status(f"{NODE_NAME}: episode", level, outcome, self.env.env_args["env_name"], values)
        )
        self.get_logger().info(
            f"episode {self.episodes} (seed {self.episode['seed']}): {outcome} after {self.episode['steps']} steps")
        self.episode = None

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = self.request_episode()
        response.success, response.message = True, f"episode {self.episodes + 1} starts with seed {seed}"
        return response

    # ---- stepping -------------------------------------------------------------------------------

    def step_if_due(self) -> None:
        """Step when the command arrived (lockstep) or the period is over (free run); start a
        requested episode once the last observation was answered."""
        now = time.perf_counter()
        answered = (not self.lockstep or all(part is not None for part in self._commands)
                    or now - self._published_at >= self.lockstep_timeout_s)
        if self._next_seed is not None:
            if answered:
                self._start_episode(self._next_seed)
            return
        if self.episode is None or not answered or (not self.lockstep and now < self._due_at):
            return
        action, held = self._action()
        self.episode["held_steps"] += held
        started = time.perf_counter()
        observation, _, done, info = self.env.step(action)
        self.step_ms.add((time.perf_counter() - started) * 1e3)
        self._applied = action
        self.episode["steps"] += 1
        self._publish_step(observation)
        if info["success"]:
            self._finish_episode("success")
        elif done or self.episode["steps"] >= self.max_steps:
            self._finish_episode("failure")

    def _action(self) -> tuple[np.ndarray, bool]:
        """The step's action, each output's command at its names, and whether an output held: one that
        sent none since the last observation takes its safe action (zeros where that has no value)."""
        parts = []
        for output, dims, command in zip(self.outputs, self.output_dims, self._commands):
            if command is None:
                command = output.safe_action(None if self._applied is None else self._applied[dims])
                command = np.zeros(len(output.names)) if command is None else command
            parts.append(command)
        action = np.clip(np.concatenate(parts), self.env.action_low, self.env.action_high)
        return action, any(command is None for command in self._commands)

    def _publish_step(self, observation: dict[str, np.ndarray]) -> None:
        # /clock first, then the observations stamped with it: a node on sim time receives its
        # clock no later than the samples of that instant (so receive-stamped keys get it too).
        self.sim_time_ns += self.period_ns
        stamp = Time(nanoseconds=self.sim_time_ns).to_msg()
        self._commands = [None] * len(self.outputs)
        self._published_at_ns = time.time_ns()
        self.clock_publisher.publish(ClockMsg(clock=stamp))
        for topic, message in self.messages.build(observation, stamp).items():
            self.topic_publishers[topic].publish(message)
        self.success_publisher.publish(Bool(data=self.env.is_success()))
        self._published_at = time.perf_counter()
        self._due_at = max(self._due_at + self.period_ns / 1e9, self._published_at)  # free run: no drift

    def _on_command(self, output: int, msg: Float64MultiArray | JointTrajectory, info: MessageInfo) -> None:
        if 0 < info["received_timestamp"] < self._published_at_ns:
            # Received before the step it would answer was published (e.g. a policy watchdog's safe
            # action during a slow reset, read only now): it answers nothing.
            self.early_commands += 1
            return
        try:
            command = self.outputs[output].extract(msg)
        except MessageError as error:
            self.rejected_commands += 1
            if self._reject_log.ready(type(error)):
                self.get_logger().warning(f"rejected a command: {error}")
            return
        self._commands[output] = command

    def _publish_diagnostics(self) -> None:
        values = {
            "episodes": self.episodes,
            "successes": self.successes,
            "running_episode_seed": "none" if self.episode is None else self.episode["seed"],
            "rejected_commands": self.rejected_commands,
            "early_commands": self.early_commands,
            "step_ms_p50": self.step_ms.percentile(50),
            "step_ms_p99": self.step_ms.percentile(99),
            "sim_time_s": self.sim_time_ns / 1e9,
        }
        message = "idle" if self.episode is None else f"episode running, step {self.episode['steps']}"
        self.diagnostics_publisher.publish(diagnostic_array(
            self.get_clock().now().to_msg(),
            status(f"{NODE_NAME}: simulation", DiagnosticStatus.OK, message, self.env.env_args["env_name"], values),
        ))

    def close(self) -> None:
        if self.episode is not None:
            self._finish_episode("stopped")
        self.env.close()


def _required(node: Node, name: str) -> str:
    value = node.get_parameter(name).value
    if not value:
        raise BridgeError(f"parameter {name!r} is empty")
    return value


def bridge_env(env_args: dict, contract: Contract, seed: int):
    """The environment of `env_args`, with the cameras the contract's image keys name added, built
    as `mvp eval --seed SEED` builds it (robosuite draws Lift's cube size when it builds the model)."""
    from mvp_ros.sim.envs import build_env  # robosuite: imported only by the node that simulates

    images = {key: spec for key, spec in contract.observations.items() if isinstance(spec, ImageObservation)}
    env_args = copy.deepcopy(env_args)
    kwargs = env_args.get("env_kwargs", {})
    cameras = [key.removesuffix(IMAGE_SUFFIX) for key in images if key.endswith(IMAGE_SUFFIX)]
    missing = [camera for camera in cameras if camera not in kwargs.get("camera_names", [])]
    if missing:
        sizes = {spec.shape[:2] for spec in images.values()}
        if len(sizes) > 1 or (kwargs.get("use_camera_obs") and (kwargs["camera_heights"], kwargs["camera_widths"]) not in sizes):
            raise BridgeError(f"the contract's images {sorted(images)} must share one size with the environment's cameras")
        (height, width), = sizes
        kwargs.update(use_camera_obs=True, has_offscreen_renderer=True, camera_names=[*kwargs.get("camera_names", []), *missing],
                      camera_heights=height, camera_widths=width, camera_depths=False)
    return build_env(env_args, seed, offscreen_render=False)


def _check_joint_keys(contract: Contract, observation: dict[str, np.ndarray], messages: dict[str, Any]) -> None:
    """A JointState key that is also a simulator observation (robot0_joint_pos, robot0_gripper_qpos)
    must read back, through the contract, the simulator's own value."""
    for key, spec in contract.observations.items():
        if isinstance(spec, JointStateObservation) and key in observation:
            published = spec.extract(messages[spec.topic])
            if not np.allclose(published, observation[key]):
                raise BridgeError(f"contract key {key!r} reads joints {list(spec.joints)} ({spec.field}) as"
                                  f" {published.tolist()}, but the simulation's {key} is {observation[key].tolist()}")


def _joint_groups(env) -> list[JointGroup]:
    """The arm's and the gripper's joints (robosuite names them robot0_joint1, gripper0_right_finger_joint1, ...)."""
    robot = env.unwrapped.robots[0]
    if len(robot.gripper) != 1:
        raise BridgeError(f"the simulation bridge publishes robots with one gripper; this one has {len(robot.gripper)}")
    prefix = robot.robot_model.naming_prefix
    (gripper,) = robot.gripper.values()
    return [JointGroup(tuple(robot.robot_model.joints), f"{prefix}joint_pos", f"{prefix}joint_vel"),
            JointGroup(tuple(gripper.joints), f"{prefix}gripper_qpos", f"{prefix}gripper_qvel")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="checkpoint whose env_args build the environment (parameter 'checkpoint')")
    parser.add_argument("--dataset", help="Robomimic HDF5 whose env_args build the environment (parameter 'dataset')")
    parser.add_argument("--contract", help="observation contract YAML (parameter 'contract')")
    parser.add_argument("--seed", type=int, help="seed of the first episode (parameter 'seed')")
    add_ros_args_argument(parser)


def run(args: argparse.Namespace) -> int:
    given = {"checkpoint": args.checkpoint, "dataset": args.dataset, "contract": args.contract, "seed": args.seed}
    with ros_context("mvp sim-node", args.ros_args, NODE_NAME) as stop:
        node = SimNode(overrides(given))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.005)
                node.step_if_due()
        finally:
            node.close()
            node.destroy_node()
    return 0


main = console_main("sim-node")  # `ros2 run mvp_ros sim_node`: the same as `mvp sim-node`


if __name__ == "__main__":
    sys.exit(main())
