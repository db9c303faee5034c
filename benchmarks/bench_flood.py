"""The policy node's command rate while /joint_states floods it.

The policy node runs in its own process at the control rate on the wall clock (an untrained
4x512 MVP on the simulated Panda's low-dim contract, JointTrajectory commands). This process
publishes every contract topic at 100 Hz, as a robot's drivers would, and counts the commands it
receives. In the middle phase a second process adds /joint_states messages as fast as it can up
to `--flood-hz` (valid messages with current stamps, so each one goes through the node's whole
observation path). Reported per phase (before, flood, after): commands per second, the longest
gap between two commands, and the node's own counts of holds, stale ticks and watchdog firings.

    .venv/bin/python benchmarks/bench_flood.py --json benchmarks/results/flood.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from mvp_ros.data.contract import load_contract
from mvp_ros.ros.diagnostics import values_of
from mvp_ros.ros.node_process import isolated_ros_environment, start_node_process, stop_node_process
from mvp_ros.ros.qos import RELIABLE_QOS
from mvp_ros.bench.ros_tick import synthetic_messages, write_bench_policy

PHASES = ("before", "flood", "after")
COUNTS = ("commands", "holds", "stale_ticks", "watchdog", "rejected")


def flood(domain_id: int, rate_hz: float, seconds: float, names: list[str]) -> None:
    """The flooding process: valid JointState messages, stamped now, up to `rate_hz` for `seconds`."""
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("mvp_flood", context=context)
    publisher = node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    msg = JointState(name=names, position=[0.0] * len(names))
    time.sleep(1.0)  # discovery
    sent, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        if sent < elapsed * rate_hz:
            msg.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(msg)
            sent += 1
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - started}), flush=True)
    node.destroy_node()
    context.try_shutdown()


class Robot:
    """Publishes the contract's topics at 100 Hz from a thread; records commands and diagnostics."""

    def __init__(self, contract, domain_id: int) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("mvp_flood_robot", context=self.context)
        self.messages = synthetic_messages(contract)
        self.publishers = {topic: self.node.create_publisher(type(msg), topic, RELIABLE_QOS)
                           for topic, msg in self.messages.items()}
        self.command_times: list[float] = []
        self.diagnostics: list[tuple[float, dict[str, str]]] = []
        self.node.create_subscription(JointTrajectory, contract.action.topic,
                                      lambda _: self.command_times.append(time.monotonic()), RELIABLE_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE_QOS)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        threading.Thread(target=self._spin, daemon=True).start()
        threading.Thread(target=self._publish, daemon=True).start()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "mvp_policy: control":
                self.diagnostics.append((time.monotonic(), values_of(status)))

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass

    def _publish(self) -> None:
        next_at = time.perf_counter()
        while self.context.ok():
            stamp = self.node.get_clock().now().to_msg()
            for topic, msg in self.messages.items():
                if hasattr(msg, "header"):
                    msg.header.stamp = stamp
                self.publishers[topic].publish(msg)
            next_at += 0.01
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def latest_counts(self) -> dict[str, int]:
        _, values = self.diagnostics[-1]
        return {name: int(values.get(name, 0)) for name in COUNTS}

    def close(self) -> None:
        self.node.destroy_node()
        self.context.try_shutdown()


def phase_figures(command_times: list[float], start: float, end: float) -> dict[str, float]:
    times = np.array([t for t in command_times if start <= t < end])
    gaps = np.diff(np.concatenate([[start], times, [end]]))
    return {"commands_per_s": round(len(times) / (end - start), 2), "longest_gap_ms": round(float(gaps.max()) * 1e3, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood-hz", type=float, default=10_000.0, help="/joint_states messages per second in the flood")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=20.0, help="the node's control rate (Hz)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--flood-child", nargs=2, metavar=("DOMAIN", "NAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood_child:
        flood(int(args.flood_child[0]), args.flood_hz, args.seconds, args.flood_child[1].split(","))
        return 0

    work_dir = Path(tempfile.mkdtemp(prefix="mvp_flood_"))
    checkpoint, contract_path = write_bench_policy(work_dir, images=False, width=512, depth=4, rate_hz=args.rate)
    contract = load_contract(contract_path)
    env = isolated_ros_environment()
    domain_id = int(env["ROS_DOMAIN_ID"])
    log = work_dir / "policy_node.log"
    process = start_node_process(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract_path),
                                  "--device", "cpu", "--ros-args", "-p", "warmup_iterations:=20"], env, log)
    robot = Robot(contract, domain_id)
    try:
        deadline = time.monotonic() + 180
        while not (robot.diagnostics and robot.diagnostics[-1][1].get("state") == "active"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the policy node did not become active; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        time.sleep(2.0)  # settled
        names = list(synthetic_messages(contract)["/joint_states"].name)
        marks, counts = {}, {}
        for phase in PHASES:
            counts[phase] = robot.latest_counts()
            marks[phase] = time.monotonic()
            if phase == "flood":
                child = subprocess.run([sys.executable, __file__, "--flood-hz", str(args.flood_hz), "--seconds",
                                        str(args.seconds + 1.0), "--flood-child", str(domain_id), ",".join(names)],
                                       env=env, capture_output=True, text=True, check=True)
                flood_sent = json.loads(child.stdout.strip().splitlines()[-1])
                marks[phase] += 1.0  # the child's discovery second
            else:
                time.sleep(args.seconds)
        end = time.monotonic()
        time.sleep(1.5)  # the last diagnostics of the run
        counts["end"] = robot.latest_counts()
    finally:
        robot.close()
        exit_code = stop_node_process(process)
    bounds = [marks["before"], marks["flood"], marks["after"], end]
    result = {
        "command": "benchmarks/bench_flood.py " + " ".join(sys.argv[1:]),
        "rate_hz": args.rate, "flood_hz_asked": args.flood_hz,
        "flood_hz_sent": round(flood_sent["sent"] / flood_sent["seconds"], 1),
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "node_exit_code": exit_code,
        "phases": {},
    }
    following = {"before": "flood", "flood": "after", "after": "end"}
    for index, phase in enumerate(PHASES):
        figures = phase_figures(robot.command_times, bounds[index], bounds[index + 1])
        node_counts = {f"node_{name}": counts[following[phase]][name] - counts[phase][name] for name in COUNTS}
        result["phases"][phase] = figures | node_counts
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
