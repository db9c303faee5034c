"""Real robots' topics over real Fast DDS: `mvp policy-node` in its own process with a contract whose
arm and gripper joint states come from two publishers on /joint_states, whose 160x120 JPEG wrist camera
is cropped and resized to the policy's 16x16, and whose action goes to two controllers: the arm as
trajectory_msgs/JointTrajectory carrying the remaining chunk, the gripper as std_msgs/Float64MultiArray,
each with its own limits and safe action. The policy is a small untrained checkpoint
(test/helpers/tiny_policy.py).
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import NodeProcess, Peer, domain_environment  # noqa: E402
from tiny_policy import write_tiny_checkpoint  # noqa: E402

ARM = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint"]
GRIPPER = ["finger_joint"]
ARM_POSITIONS = [0.1, -0.2, 0.3]
GRIPPER_POSITION = 0.02
ARM_LIMITS = ([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5])
GRIPPER_LIMITS = ([0.0], [0.04])
ARM_MAX_DELTA = 0.05
GRIPPER_MAX_DELTA = 0.01
GRIPPER_SAFE = 0.01
ARM_TOPIC, GRIPPER_TOPIC = "/arm_controller/joint_trajectory", "/gripper_controller/commands"
STATUS = "mvp_policy: control"
PERIOD_NS = 50_000_000

CONTRACT = {
    "contract_version": 1,
    "robot": "test_arm_and_gripper",
    "control_rate_hz": 20,
    "observations": {
        "joint_pos": {"type": "sensor_msgs/msg/JointState", "joints": ARM + GRIPPER,
                      "sources": [{"topic": "/joint_states", "joints": ARM},
                                  {"topic": "/joint_states", "joints": GRIPPER}],
                      "align": {"rule": "asof", "tolerance_s": 0.25}},
        "wrist": {"type": "sensor_msgs/msg/CompressedImage", "topic": "/wrist/image/compressed",
                  "image": {"width": 16, "height": 16, "encoding": "rgb8",
                            "crop": {"x": 20, "y": 0, "width": 120, "height": 120}, "resize": "area"},
                  "align": {"rule": "asof", "tolerance_s": 0.25}},
    },
    "action": {"outputs": [
        {"type": "trajectory_msgs/msg/JointTrajectory", "topic": ARM_TOPIC, "names": ARM,
         "limits": {"lower": ARM_LIMITS[0], "upper": ARM_LIMITS[1]}, "max_delta": [ARM_MAX_DELTA] * 3,
         "safe_action": {"rule": "hold"}, "trajectory": {"mode": "chunk"}},
        {"type": "std_msgs/msg/Float64MultiArray", "topic": GRIPPER_TOPIC, "names": GRIPPER,
         "limits": {"lower": GRIPPER_LIMITS[0], "upper": GRIPPER_LIMITS[1]}, "max_delta": [GRIPPER_MAX_DELTA],
         "safe_action": {"rule": "constant", "value": [GRIPPER_SAFE]}},
    ]},
}


def jpeg_frame(index: int) -> bytes:
    rows, columns = np.mgrid[0:120, 0:160]
    rgb = np.stack([(rows * 2 + index) % 256, (columns + 3 * index) % 256, (rows + columns) % 256], axis=2)
    ok, encoded = cv2.imencode(".jpg", rgb.astype(np.uint8)[..., ::-1])
    assert ok
    return encoded.tobytes()


class RobotDrivers:
    """An arm driver and a gripper driver, each its own publisher of /joint_states, and a wrist
    camera, at 40 Hz from a thread; `gripper_alive` cleared silences the gripper driver."""

    def __init__(self, peer: Peer) -> None:
        node = peer.node
        self.peer = peer
        self.arm = node.create_publisher(JointState, "/joint_states", 100)
        self.gripper = node.create_publisher(JointState, "/joint_states", 100)
        self.camera = node.create_publisher(CompressedImage, "/wrist/image/compressed", 10)
        self.frames = [jpeg_frame(index) for index in range(8)]
        self.running, self.gripper_alive = threading.Event(), threading.Event()
        self.gripper_alive.set()
        threading.Thread(target=self._loop, daemon=True).start()

    def _joint_state(self, names: list[str], positions: list[float]) -> JointState:
        msg = JointState(name=names, position=positions)
        msg.header.stamp = self.peer.node.get_clock().now().to_msg()
        return msg

    def _loop(self) -> None:
        count = 0
        while self.peer.context.ok():
            if self.running.is_set():
                count += 1
                self.arm.publish(self._joint_state(ARM, ARM_POSITIONS))
                if self.gripper_alive.is_set():
                    self.gripper.publish(self._joint_state(GRIPPER, [GRIPPER_POSITION]))
                image = CompressedImage(format="rgb8; jpeg compressed bgr8", data=self.frames[count % len(self.frames)])
                image.header.stamp = self.peer.node.get_clock().now().to_msg()
                self.camera.publish(image)
            time.sleep(0.025)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return domain_environment()


@pytest.fixture(scope="module")
def peer(env):
    peer = Peer(env)
    for message_type, topic in [(JointTrajectory, ARM_TOPIC), (Float64MultiArray, GRIPPER_TOPIC),
                                (DiagnosticArray, "/diagnostics")]:
        peer.record(message_type, topic)
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def drivers(peer) -> RobotDrivers:
    return RobotDrivers(peer)


@pytest.fixture(scope="module")
def node(tmp_path_factory, env, peer, drivers):
    directory = tmp_path_factory.mktemp("robot_topics")
    contract = directory / "contract.yaml"
    contract.write_text(yaml.safe_dump(CONTRACT, sort_keys=False))
    checkpoint = write_tiny_checkpoint(directory / "tiny", {"joint_pos": (4,), "wrist": (16, 16, 3)}, action_dim=4,
                                       action_range=1.0, contract=CONTRACT)
    process = NodeProcess(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract), "--ros-args",
                           "-p", "device:=cpu", "-p", "warmup_iterations:=1", "-p", "temporal_ensemble:=false"],
                          env, directory / "policy_node.log")
    drivers.running.set()
    try:
        peer.wait_for(lambda: len(peer.messages(GRIPPER_TOPIC)) >= 5 or not process.alive(), 90, "commands")
        assert process.alive()
    except AssertionError:
        process.stop()
        raise AssertionError(f"no commands from the policy node:\n{process.output()}")
    yield process
    drivers.running.clear()
    assert process.stop() == 0, process.output()


def check_chunk(msg: JointTrajectory) -> None:
    """Points a control period apart, in order, none due before the observation's stamp; the action of
    k periods after the observation within (k + 1) max_delta of the measured arm (each step within
    max_delta), and the last point at rest."""
    steps = [(point.time_from_start.sec * 10**9 + point.time_from_start.nanosec) // PERIOD_NS - 1 for point in msg.points]
    assert steps == list(range(steps[0], steps[0] + len(steps))) and steps[0] >= 0
    assert all(point.time_from_start.nanosec % PERIOD_NS == 0 for point in msg.points)
    for step, point in zip(steps, msg.points):
        positions = np.array(point.positions)
        assert positions.shape == (3,) and within(positions, ARM_LIMITS) and len(point.velocities) == 3
        assert np.all(np.abs(positions - ARM_POSITIONS) <= (step + 1) * ARM_MAX_DELTA + 1e-12)
    assert list(msg.points[-1].velocities) == [0.0, 0.0, 0.0]


def within(values: np.ndarray, limits: tuple[list[float], list[float]]) -> bool:
    return bool(np.all(values >= np.array(limits[0]) - 1e-12) and np.all(values <= np.array(limits[1]) + 1e-12))


@pytest.mark.slow
def test_two_joint_publishers_drive_the_node_and_the_action_reaches_both_controllers(peer, node) -> None:
    before = peer.fresh_diagnostics(STATUS)  # counts since the node started, its first ticks included
    since = time.monotonic()
    trajectories = peer.wait_for_messages(ARM_TOPIC, 10, timeout_s=30, since=since)
    grippers = peer.wait_for_messages(GRIPPER_TOPIC, 10, timeout_s=30, since=since)
    for msg in trajectories:
        assert list(msg.joint_names) == ARM
        check_chunk(msg)
    assert any(len(msg.points) > 1 for msg in trajectories)
    stamps = [msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec for msg in trajectories]
    assert stamps == sorted(stamps) and stamps[-1] <= time.time_ns()  # observation times (the node's clock: wall)
    for msg in grippers:
        assert len(msg.data) == 1 and within(np.array(msg.data), GRIPPER_LIMITS)
        assert abs(msg.data[0] - GRIPPER_POSITION) <= GRIPPER_MAX_DELTA + 1e-12
    values = peer.fresh_diagnostics(STATUS)
    assert int(values["ticks"]) > int(before["ticks"]), values
    for count in ("holds", "stale_ticks", "rejected"):  # none while both drivers publish
        assert values[count] == before[count], {name: value for name, value in values.items() if name not in before
                                                or value != before[name]}
    assert {"age_ms.joint_pos[0]", "age_ms.joint_pos[1]", "age_ms.wrist"} <= set(values)


@pytest.mark.slow
def test_a_silent_gripper_driver_is_stale_on_its_own_and_each_output_holds_by_its_rule(peer, drivers, node) -> None:
    drivers.gripper_alive.clear()
    try:
        since = time.monotonic()
        values = peer.wait_for(lambda: (found := peer.diagnostics(STATUS, since)) and found["holding"] and found,
                               10, "the node to hold")
        assert "joint_pos[1]" in values["stale_keys"] and "joint_pos[0]" not in values["stale_keys"], values
        held_since = time.monotonic()
        grippers = peer.wait_for_messages(GRIPPER_TOPIC, 1, timeout_s=5, since=held_since)
        assert all(list(msg.data) == [GRIPPER_SAFE] for msg in grippers)  # constant
        for msg in peer.messages(ARM_TOPIC, held_since):  # hold: one point, the last command sent
            assert len(msg.points) == 1
            check_chunk(msg)
    finally:
        drivers.gripper_alive.set()
    since = time.monotonic()
    peer.wait_for(lambda: (found := peer.diagnostics(STATUS, since)) and found["holding"] == "" and found, 10,
                  "the node to resume")
