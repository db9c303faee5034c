"""`mvp policy-node` in its own process over real Fast DDS, with a contract whose action is relative to a
joint observation and whose camera is a 640x480 JPEG cropped and resized to 84x84:

- on the wire, every command is the measured joint position plus the policy's action;
- that action is the one the policy computes offline on the observation `mvp bag2hdf5` converts
  from a bag holding the same camera message, so the node saw the same 84x84 pixels (with an image
  resized another way, the actions differ).

The policy is a small untrained checkpoint (test/helpers/tiny_policy.py), deterministic for a seed:
the node activates with seed 0 and, with `execute_steps` 1, computes a fresh chunk every tick.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import yaml
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import Float64MultiArray

from mvp_ros.policy import Policy

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import NodeProcess, Peer, domain_environment  # noqa: E402
from test_bag2hdf5 import MS, T0, TYPES, convert, float_array, header, joint_state, write_bag  # noqa: E402
from test_images import CROP, encoded, scene  # noqa: E402
from tiny_policy import write_tiny_checkpoint  # noqa: E402

JOINTS = ["shoulder", "elbow", "wrist"]
MEASURED = [0.25, -0.4, 1.1]
CAMERA_TOPIC, COMMAND_TOPIC = "/wrist/image_raw/compressed", "/arm/command"
FORMAT = "rgb8; jpeg compressed bgr8"
CONTRACT = {
    "contract_version": 1, "robot": "relative_arm_with_camera", "control_rate_hz": 10,
    "observations": {
        "joint_pos": {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states", "joints": JOINTS,
                      "align": {"rule": "asof", "tolerance_s": 0.5}},
        "wrist": {"type": "sensor_msgs/msg/CompressedImage", "topic": CAMERA_TOPIC,
                  "image": {"width": 84, "height": 84, "encoding": "rgb8", "crop": CROP, "resize": "area"},
                  "align": {"rule": "asof", "tolerance_s": 0.5}},
    },
    "action": {"type": "std_msgs/msg/Float64MultiArray", "topic": COMMAND_TOPIC, "names": JOINTS,
               "limits": {"lower": [-1] * 3, "upper": [1] * 3}, "relative_to": "joint_pos",
               "safe_action": {"rule": "hold", "zero": JOINTS}},
}
FRAME = encoded(scene(5))


def converted_frame(tmp_path: Path) -> np.ndarray:
    """The camera message, in a rosbags-written bag beside joint states and commands, as `mvp bag2hdf5` stores it."""
    messages = []
    for index in range(10):
        stamp = T0 + index * 100 * MS
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", stamp + MS, joint_state(stamp, JOINTS, MEASURED)))
        messages.append((CAMERA_TOPIC, "sensor_msgs/msg/CompressedImage", stamp + 2 * MS,
                         TYPES["sensor_msgs/msg/CompressedImage"](header=header(stamp), format=FORMAT,
                                                                  data=np.frombuffer(FRAME, np.uint8))))
        messages.append((COMMAND_TOPIC, "std_msgs/msg/Float64MultiArray", stamp + 3 * MS, float_array(MEASURED)))
    assert convert(tmp_path, write_bag(tmp_path / "camera_bag", messages), contract=CONTRACT) == 0
    with h5py.File(tmp_path / "out.hdf5", "r") as file:
        frames = file["data/demo_0/obs/wrist"][()]
    assert len(frames) > 1 and (frames == frames[0]).all()
    return frames[0]


def offline_actions(checkpoint: Path, wrist: np.ndarray, count: int) -> np.ndarray:
    """The first action of each of the first `count` chunks of the policy seeded 0, as the node runs it."""
    policy = Policy.load(checkpoint, device="cpu", seed=0, execution="eager")
    observation = {"joint_pos": np.array(MEASURED), "wrist": wrist}
    return np.stack([policy.act(observation)[0] for _ in range(count)]).astype(np.float64)


class Drivers:
    """The arm's joint states and the wrist camera (always the same JPEG message) at 20 Hz, from a thread."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.joints = peer.node.create_publisher(JointState, "/joint_states", 10)
        self.camera = peer.node.create_publisher(CompressedImage, CAMERA_TOPIC, 10)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while self.peer.context.ok():
            stamp = self.peer.node.get_clock().now().to_msg()
            joints = JointState(name=JOINTS, position=MEASURED)
            image = CompressedImage(format=FORMAT, data=FRAME)
            joints.header.stamp = image.header.stamp = stamp
            self.joints.publish(joints)
            self.camera.publish(image)
            time.sleep(0.05)


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> tuple[np.ndarray, Path, Path]:
    """The node's commands (policy commands only: a hold sends the measured position), its checkpoint,
    and the directory of its files."""
    directory = tmp_path_factory.mktemp("relative_camera")
    contract = directory / "contract.yaml"
    contract.write_text(yaml.safe_dump(CONTRACT, sort_keys=False))
    checkpoint = write_tiny_checkpoint(directory / "tiny", {"joint_pos": (3,), "wrist": (84, 84, 3)}, action_dim=3,
                                       action_range=0.5, contract=CONTRACT)
    env = domain_environment()
    peer = Peer(env)
    peer.record(Float64MultiArray, COMMAND_TOPIC)
    Drivers(peer)
    process = NodeProcess(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract), "--ros-args",
                           "-p", "device:=cpu", "-p", "execution:=eager", "-p", "warmup_iterations:=1",
                           "-p", "temporal_ensemble:=false", "-p", "execute_steps:=1",
                           "-p", "inference_timeout_s:=5.0", "-p", "watchdog_timeout_s:=10.0"],
                          env, directory / "policy_node.log")
    try:
        peer.wait_for(lambda: len(peer.messages(COMMAND_TOPIC)) >= 12 or not process.alive(), 120, "commands")
        assert process.alive(), process.output()
    finally:
        status = process.stop()
        peer.close()
    assert status == 0, process.output()
    sent = np.array([msg.data for msg in peer.messages(COMMAND_TOPIC)])
    return sent[~(sent == MEASURED).all(axis=1)], checkpoint, directory


def aligned(received: np.ndarray, expected: np.ndarray) -> int:
    """Where the received commands begin in the expected sequence (the first may precede discovery)."""
    start = next((index for index, row in enumerate(expected) if np.array_equal(row, received[0])), None)
    assert start is not None and start < 5, (received[:3], expected[:6])
    return start


@pytest.mark.slow
def test_a_relative_action_is_sent_as_the_measured_position_plus_the_action(commands, tmp_path) -> None:
    received, checkpoint, _ = commands
    actions = offline_actions(checkpoint, converted_frame(tmp_path), len(received) + 5)
    targets = np.array(MEASURED) + actions
    start = aligned(received, targets)
    assert len(received) >= 10
    np.testing.assert_array_equal(received, targets[start : start + len(received)])
    assert not np.allclose(received, actions[start : start + len(received)], atol=0.1)  # the offsets were added


@pytest.mark.slow
def test_the_node_saw_the_pixels_that_conversion_stores_for_the_same_jpeg(commands, tmp_path) -> None:
    received, checkpoint, _ = commands
    wrist = converted_frame(tmp_path)
    targets = np.array(MEASURED) + offline_actions(checkpoint, wrist, len(received) + 5)
    start = aligned(received, targets)
    np.testing.assert_array_equal(received, targets[start : start + len(received)])
    bgr = cv2.imdecode(np.frombuffer(FRAME, np.uint8), cv2.IMREAD_COLOR)[:, CROP["x"] : CROP["x"] + CROP["width"]]
    linear = cv2.resize(bgr, (84, 84), interpolation=cv2.INTER_LINEAR)[..., ::-1]
    assert not np.array_equal(linear, wrist)
    other = np.array(MEASURED) + offline_actions(checkpoint, np.ascontiguousarray(linear), len(received) + 5)
    assert not np.array_equal(received[0], other[start])  # the pixels decide the action
