"""The ROS tick part of `mvp bench`: the policy node in its own process, driven over real DDS.

A synthetic observation publisher (this process) plays the robot driver: every control period it
publishes /clock, then every contract topic stamped with that time (the lockstep of
`mvp sim-node`), and a command subscriber (this process too) takes the node's answers. The node
runs on that sim time, so each command (a JointTrajectory stamped with the node's clock) names the
tick it answers; with several action outputs (every one a JointTrajectory) a tick is answered when
each output's command for it has arrived, and its times are those of the last to arrive:
  latency       observations published (from the first message of the tick, so the driver's own
                publishing counts too) -> command received: two DDS hops, the node's executor and
                its wait for a complete observation, inference, the limits. "Received" is the
                reception time DDS records for the command (rmw MessageInfo), so this process's own
                Python executor, which a C++ controller on a robot would not have, is not counted;
                the time to this process's callback is reported beside it.
  missed tick   no command received before the next period began
The node's publication time of each command (DDS source timestamp) splits the latency, and its
diagnostics give its own figure (observation ready -> command published). All times are on the
system clock, which DDS stamps with. The schedule runs on the wall clock and never waits for a late
command, as a robot would not.
"""
from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.subscription import MessageInfo
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from mvp_ros.data.contract import Contract, ImageObservation, JointStateObservation, PoseObservation, load_contract
from mvp_ros.resources import package_file
from mvp_ros.ros.diagnostics import values_of
from mvp_ros.ros.node_process import isolated_ros_environment, start_node_process, stop_node_process
from mvp_ros.ros.parent_node import ParentNode
from mvp_ros.ros.qos import RELIABLE_QOS

POLICY_STATUS = "mvp_policy: control"
PANDA_CONTRACT = package_file("config", "panda_sim_contract.yaml")
CAMERAS = {"agentview_image": "/agentview/image_raw", "robot0_eye_in_hand_image": "/eye_in_hand/image_raw"}
IMAGE_SIZE = 84
STARTUP_TIMEOUT_S = 180.0
WARMUP_S = 2.0
NODE_COUNTERS = ("ticks", "commands", "holds", "stale_ticks", "missed_ticks", "overruns")


@dataclass(frozen=True)
class CommandTimes:
    """System-clock ns: the node published the command, DDS received it here, its callback ran here."""
    published_ns: int
    received_ns: int
    callback_ns: int


@dataclass(frozen=True)
class TickSetup:
    obs: str  # "lowdim" or "image"
    rate_hz: float
    duration_s: float


@dataclass(frozen=True)
class NodeSettings:
    """The policy node's parameters that the benchmark varies."""
    execution: str = "auto"
    torch_threads: int = 1
    thread_priority: int = 0
    device: str = "cpu"


def bench_contract(images: bool, rate_hz: float, split_action: bool = False) -> dict:
    """The simulated Panda's contract (JointState, PoseStamped, Float64MultiArray topics) at `rate_hz`,
    commanding a JointTrajectory (with `split_action`, two: the arm's motion and the gripper), with two
    84x84 rgb8 cameras when `images`."""
    contract = yaml.safe_load(PANDA_CONTRACT.read_text())
    contract["robot"], contract["control_rate_hz"] = "mvp_bench", rate_hz
    contract["action"]["type"] = "trajectory_msgs/msg/JointTrajectory"
    if split_action:
        action = contract.pop("action")
        names, (lower, upper) = action["names"], (action["limits"]["lower"], action["limits"]["upper"])
        contract["action"] = {"outputs": [
            {**action, "names": names[:-1], "limits": {"lower": lower[:-1], "upper": upper[:-1]},
             "safe_action": {"rule": "hold", "zero": names[:-1]}},
            {**action, "topic": f"{action['topic']}/gripper", "names": names[-1:],
             "limits": {"lower": lower[-1:], "upper": upper[-1:]},
             "safe_action": {"rule": "hold", "initial": {names[-1]: -1}}}]}
    if images:
        for key, topic in CAMERAS.items():
            contract["observations"][key] = {
                "type": "sensor_msgs/msg/Image", "topic": topic, "max_age_s": 0.25,
                "image": {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "encoding": "rgb8"},
            }
    return contract


def synthetic_messages(contract: Contract) -> dict[str, Any]:
    """topic -> one message carrying every key the contract reads from that topic (stamps set per tick)."""
    rng = np.random.default_rng(0)
    messages: dict[str, Any] = {}
    for spec in contract.observations.values():
        if isinstance(spec, JointStateObservation):
            msg = messages.setdefault(spec.topic, JointState())
            msg.name = [*msg.name, *spec.joints]
            msg.position = [*msg.position, *rng.uniform(-0.5, 0.5, len(spec.joints))]
        elif isinstance(spec, PoseObservation):
            msg = messages.setdefault(spec.topic, PoseStamped())
            msg.pose.position.z, msg.pose.orientation.w = 1.0, 1.0
        elif isinstance(spec, ImageObservation):
            height, width, _ = spec.shape
            messages[spec.topic] = Image(height=height, width=width, encoding="rgb8", step=3 * width,
                                         data=rng.integers(0, 256, height * width * 3, dtype=np.uint8).tobytes())
        else:
            messages[spec.topic] = Float64MultiArray(data=rng.uniform(-0.5, 0.5, spec.shape[0]).tolist())
    return messages


class TickDriver(ParentNode):
    """Publishes /clock and the observations in lockstep; receives commands and the node's diagnostics."""

    def __init__(self, contract: Contract, domain_id: int, log: Path) -> None:
        self.outputs = contract.action.streams()
        for output in self.outputs:
            if output.msgtype != "trajectory_msgs/msg/JointTrajectory":
                raise ValueError(f"the tick benchmark matches commands to ticks by their header stamp: {output.key}"
                                 f" ({output.topic}) is {output.msgtype}, not trajectory_msgs/msg/JointTrajectory")
        super().__init__("mvp_tick_bench", domain_id, {"policy": log})
        self.contract = contract
        self.messages = synthetic_messages(contract)
        self.clock_publisher = self.node.create_publisher(ClockMsg, "/clock", RELIABLE_QOS)
        self.publishers = {topic: self.node.create_publisher(type(msg), topic, RELIABLE_QOS)
                           for topic, msg in self.messages.items()}
        self.commands: dict[int, CommandTimes] = {}  # by the tick stamp (ns) the command answers
        self._parts: dict[int, dict[int, CommandTimes]] = {}  # tick stamp -> output -> its command's times
        self.node_values: dict[str, str] = {}
        self.diagnostics_received = 0
        self.next_tick_ns = 0
        for index, output in enumerate(self.outputs):
            self.node.create_subscription(JointTrajectory, output.topic,
                                          lambda msg, info, index=index: self._on_command(index, msg, info),
                                          RELIABLE_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE_QOS)

    def _on_command(self, output: int, msg: JointTrajectory, info: MessageInfo) -> None:
        callback_ns = time.time_ns()
        stamp = Time.from_msg(msg.header.stamp).nanoseconds
        parts = self._parts.setdefault(stamp, {})
        parts.setdefault(output, CommandTimes(info["source_timestamp"] or callback_ns,
                                              info["received_timestamp"] or callback_ns, callback_ns))
        if len(parts) == len(self.outputs):
            self.commands.setdefault(stamp, max(parts.values(), key=lambda times: times.received_ns))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == POLICY_STATUS:
                self.node_values = values_of(status)
                self.diagnostics_received += 1

    def fresh_diagnostics(self, process: subprocess.Popen) -> dict[str, str]:
        """The node's next diagnostics message (1 Hz): between drives its counters stand still."""
        seen = self.diagnostics_received
        self.spin_until(lambda: self.diagnostics_received > seen, 5.0, "the node's diagnostics", {"policy": process})
        return dict(self.node_values)

    def wait_until_ready(self, process: subprocess.Popen) -> None:
        self.spin_until(lambda: self.node_values.get("state") == "active", STARTUP_TIMEOUT_S,
                        "the policy node to be active", {"policy": process})
        self.wait_for_endpoints([*self.contract.topics(), "/clock"], 30.0, {"policy": process})

    def drive(self, rate_hz: float, duration_s: float, first_tick_ns: int) -> tuple[list[int], dict[int, int]]:
        """Publish one tick per period for `duration_s`; returns the tick stamps and their publication
        times (system clock ns)."""
        period_s = 1.0 / rate_hz
        period_ns = round(1e9 / rate_hz)
        published: dict[int, int] = {}
        stamps = []
        next_at = time.perf_counter()
        for index in range(round(duration_s * rate_hz)):
            stamp_ns = first_tick_ns + index * period_ns
            stamp = Time(nanoseconds=stamp_ns).to_msg()
            for msg in self.messages.values():
                if hasattr(msg, "header"):
                    msg.header.stamp = stamp
            # Taken as the first message goes out: the node may answer before the last publish call returns
            published[stamp_ns] = time.time_ns()
            self.clock_publisher.publish(ClockMsg(clock=stamp))
            for topic, msg in self.messages.items():
                self.publishers[topic].publish(msg)
            stamps.append(stamp_ns)
            self.next_tick_ns = stamp_ns + period_ns
            next_at += period_s
            self.executor.spin_once(timeout_sec=0)  # take commands even when behind schedule
            while (remaining := next_at - time.perf_counter()) > 0:
                self.executor.spin_once(timeout_sec=remaining)
        end = time.perf_counter() + 0.5  # commands still on their way
        while time.perf_counter() < end:
            self.executor.spin_once(timeout_sec=0.05)
        return stamps, published


def measure(setup: TickSetup, checkpoint: Path, contract_path: Path, node: NodeSettings, work_dir: Path) -> dict[str, Any]:
    """One run of the policy node at `setup.rate_hz`: end-to-end latency, missed ticks and the node's figures."""
    contract = load_contract(contract_path)
    env = isolated_ros_environment()
    log = work_dir / f"policy_node_{setup.obs}.log"
    arguments = ["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract_path), "--device", node.device,
                 "--ros-args", "-p", "use_sim_time:=true", "-p", f"control_rate_hz:={setup.rate_hz}",
                 "-p", "temporal_ensemble:=true", "-p", f"execution:={node.execution}",
                 "-p", f"torch_threads:={node.torch_threads}", "-p", f"thread_priority:={node.thread_priority}",
                 "-p", "warmup_iterations:=50",
                 # the driver stops /clock between its drives: no watchdog safe actions in the counts
                 "-p", "watchdog_timeout_s:=60.0"]
    process = start_node_process(arguments, env, log)
    driver = TickDriver(contract, int(env["ROS_DOMAIN_ID"]), log)
    try:
        driver.wait_until_ready(process)
        driver.drive(setup.rate_hz, WARMUP_S, first_tick_ns=1_000_000_000)
        before = driver.fresh_diagnostics(process)
        stamps, published = driver.drive(setup.rate_hz, setup.duration_s, driver.next_tick_ns)
        after = driver.fresh_diagnostics(process)
    finally:
        driver.close()
        exit_code = stop_node_process(process)
    answered = [stamp for stamp in stamps if stamp in driver.commands]

    def milliseconds_after_publication(field: str) -> list[float]:
        return [(getattr(driver.commands[stamp], field) - published[stamp]) / 1e6 for stamp in answered]

    latencies_ms = milliseconds_after_publication("received_ns")
    missed = len(stamps) - sum(1 for latency in latencies_ms if latency <= 1e3 / setup.rate_hz)
    counters = {f"node_{key}": int(after[key]) - int(before[key]) for key in NODE_COUNTERS}
    return {
        "obs": setup.obs, "rate_hz": setup.rate_hz, "duration_s": setup.duration_s, "execution": node.execution,
        "torch_threads": node.torch_threads, "thread_priority": node.thread_priority, "node_scheduling": after["scheduling"],
        **percentiles("", latencies_ms), "max_ms": round(max(latencies_ms), 4) if latencies_ms else None,
        "missed_ticks": missed, "ticks": len(stamps), "commands_received": len(latencies_ms),
        **percentiles("command_published_", milliseconds_after_publication("published_ns")),
        **percentiles("callback_", milliseconds_after_publication("callback_ns")),
        **counters,
        "node_tick_p50_ms": float(after["tick_latency_ms_p50"]), "node_tick_p99_ms": float(after["tick_latency_ms_p99"]),
        "node_inference_p50_ms": float(after["inference_ms_p50"]),
        "node_exit_code": exit_code, "node_log": str(log),
        "samples_ms": [round(value, 4) for value in latencies_ms],
    }


def percentiles(prefix: str, values_ms: list[float]) -> dict[str, float | None]:
    return {f"{prefix}p{q}_ms": round(float(np.percentile(values_ms, q)), 4) if values_ms else None for q in (50, 99)}


def write_bench_policy(directory: Path, images: bool, width: int, depth: int,
                       rate_hz: float = 100.0, split_action: bool = False) -> tuple[Path, Path]:
    """An untrained MVP checkpoint of the bench backbone for the simulated Panda's keys, and its contract
    (bench_contract) at `rate_hz`, which the checkpoint carries as the contract of its training data."""
    import torch

    from mvp_ros.policy.checkpoint import save_checkpoint
    from mvp_ros.policy.config import PolicyConfig
    from mvp_ros.policy.model import ChunkPolicyModel
    from mvp_ros.policy.normalizer import Normalization

    contract_dict = bench_contract(images, rate_hz, split_action)
    contract_path = directory / f"contract_{'image' if images else 'lowdim'}.yaml"
    contract_path.write_text(yaml.safe_dump(contract_dict, sort_keys=False))
    contract = load_contract(contract_path)
    shapes = {key: tuple(spec.shape) for key, spec in contract.observations.items()}
    torch.manual_seed(0)
    config = PolicyConfig(head="mvp", action_dim=len(contract.action.names), horizon=5, obs_shapes=shapes,
                          hidden_dim=width, depth=depth)
    lowdim = {key: shape[0] for key, shape in shapes.items() if len(shape) == 1}
    normalization = Normalization([-1.0] * config.action_dim, [1.0] * config.action_dim,
                                  {key: [0.0] * size for key, size in lowdim.items()},
                                  {key: [1.0] * size for key, size in lowdim.items()})
    checkpoint = save_checkpoint(directory / f"policy_{'image' if images else 'lowdim'}",
                                 ChunkPolicyModel(config, normalization), normalization, contract=contract.to_dict())
    return checkpoint, contract_path


def ros_tick(setups: list[TickSetup], width: int, depth: int, node: NodeSettings,
             work_dir: Path | None = None) -> list[dict[str, Any]]:
    """Run the policy node once per setup (low-dim at 100 Hz, two cameras at 30 Hz, ...)."""
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="mvp_tick_bench_"))
    results = []
    for setup in setups:
        checkpoint, contract = write_bench_policy(work_dir, setup.obs == "image", width, depth, setup.rate_hz)
        results.append(measure(setup, checkpoint, contract, node, work_dir))
    return results
