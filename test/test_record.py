"""`mvp record` over real Fast DDS: a publisher process (test/helpers/publish_fixture.py) and the
recorder process on a domain of their own; the bags are read back with rosbags."""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from mvp_ros.cli import main as mvp_main
from mvp_ros.ros.node_process import isolated_ros_environment

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
import publish_fixture as fixture  # noqa: E402
from ros_peer import MVP  # noqa: E402

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
STATIC_TOPIC = "/fixture/static:std_msgs/msg/String"
RELIABLE_TOPICS = ["/joint_states", "/policy/command"]

CONTRACT = """\
contract_version: 1
robot: fixture_robot
control_rate_hz: 20
observations:
  joint_pos:
    {topic: /joint_states, type: sensor_msgs/msg/JointState, field: position, joints: [j2, j1],
     align: {rule: asof, tolerance_s: 0.1}, stamp: header}
  cam:
    {topic: /camera/image_raw, type: sensor_msgs/msg/Image, image: {width: 8, height: 6, encoding: rgb8},
     align: {rule: asof, tolerance_s: 0.1}, stamp: header}
action:
  topic: /policy/command
  type: std_msgs/msg/Float64MultiArray
  names: [a0, a1]
  limits: {lower: [-1000, -1000], upper: [1000, 1000]}
  align: {rule: next, tolerance_s: 0.1}
  safe_action: {rule: hold}
"""


@pytest.fixture
def ros_env() -> dict[str, str]:
    """A DDS domain of this test's own, kept on this machine."""
    return isolated_ros_environment()


@pytest.fixture
def contract(tmp_path: Path) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(CONTRACT)
    return path


class Process:
    """A child process whose stdout is read line by line."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_for_line(self, prefix: str, timeout_s: float = 30.0) -> str:
        found: list[str] = []

        def read() -> None:  # in a thread, so a child that prints nothing cannot block past the deadline
            for line in self.popen.stdout:
                if line.startswith(prefix):
                    found.append(line.strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout_s)
        if found:
            return found[0]
        self.popen.kill()
        reader.join()
        raise AssertionError(f"no line {prefix!r} within {timeout_s} s; stderr: {self.popen.stderr.read()}")

    def stop(self, sig: int | None = signal.SIGINT, timeout_s: float = 30.0) -> tuple[int, str, str]:
        """Send `sig` (None: let it end by itself) and collect the exit status and output."""
        if sig is not None:
            self.popen.send_signal(sig)
        stdout, stderr = self.popen.communicate(timeout=timeout_s)
        return self.popen.returncode, stdout, stderr


def start_publisher(env: dict[str, str], *args: str) -> Process:
    return Process([sys.executable, str(HELPERS / "publish_fixture.py"), *args], env)


def start_recorder(env: dict[str, str], *args: str) -> Process:
    return Process([*MVP, "record", *args], env)


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(receive time ns, message)], every message deserialized with the rosbags type store."""
    messages: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as reader:
        for connection in reader.connections:
            assert connection.digest == TYPESTORE.hash_rihs01(connection.msgtype), connection.topic
            messages[connection.topic] = []
        for connection, timestamp, data in reader.messages():
            messages[connection.topic].append((timestamp, TYPESTORE.deserialize_cdr(data, connection.msgtype)))
    return messages


def message_index(topic: str, msg) -> int:
    return int(msg.data[0]) if topic == "/policy/command" else int(msg.header.frame_id)


def check_values(bag: dict[str, list[tuple[int, object]]]) -> dict[str, list[int]]:
    """Every recorded message equals the one the fixture published; topic -> indices in bag order."""
    indices = {}
    for topic in ["/joint_states", "/camera/image_raw", "/policy/command"]:
        indices[topic] = [message_index(topic, msg) for _, msg in bag[topic]]
        receive_times = [stamp for stamp, _ in bag[topic]]
        assert receive_times == sorted(receive_times), topic
    for _, msg in bag["/joint_states"]:
        i = int(msg.header.frame_id)
        assert list(msg.name) == fixture.joint_names(i)
        assert dict(zip(msg.name, msg.position.tolist())) == fixture.joint_positions(i)
    for _, msg in bag["/camera/image_raw"]:
        assert (msg.width, msg.height, msg.encoding, msg.step) == (8, 6, "rgb8", 24)
        assert msg.data.tobytes() == fixture.image_bytes(int(msg.header.frame_id))
    for _, msg in bag["/policy/command"]:
        assert msg.data.tolist() == fixture.command(int(msg.data[0]))
    return indices


def assert_contiguous(indices: list[int], topic: str) -> None:
    assert indices, f"nothing recorded on {topic}"
    assert indices == list(range(indices[0], indices[0] + len(indices))), f"{topic}: gap or reorder"


def assert_increasing(indices: list[int], topic: str) -> None:
    """Best effort may lose a message, never reorder or duplicate one."""
    assert indices, f"nothing recorded on {topic}"
    assert all(a < b for a, b in zip(indices, indices[1:])), f"{topic}: reordered or duplicated"


def summary_counts(stdout: str) -> dict[str, str]:
    """topic -> the count column of `mvp record`'s closing table."""
    rows = [line.split(None, 2) for line in stdout.splitlines() if line.startswith("  /")]
    return {topic: outcome for topic, _, outcome in rows}


@pytest.mark.slow
def test_records_every_published_message_with_its_values(tmp_path: Path, ros_env, contract: Path) -> None:
    count = 60
    publisher = start_publisher(ros_env, "--count", str(count), "--rate", "50")
    bag_path = tmp_path / "bag"
    started_ns = time.time_ns()
    recorder = start_recorder(ros_env, "--contract", str(contract), "--out", str(bag_path), "--extra-topic", STATIC_TOPIC)
    try:
        publisher.wait_for_line(f"done {count}")
        time.sleep(1.0)  # the last reliable messages in flight
        returncode, stdout, stderr = recorder.stop(signal.SIGINT)
    finally:
        publisher.stop()
    assert returncode == 0, stderr
    stopped_ns = time.time_ns()

    bag = read_bag(bag_path)
    indices = check_values(bag)
    for topic in RELIABLE_TOPICS:  # the publisher waited for the recorder: nothing may be missing
        assert indices[topic] == list(range(count)), topic
    assert_increasing(indices["/camera/image_raw"], "/camera/image_raw")
    assert len(indices["/camera/image_raw"]) >= 0.9 * count
    assert [msg.data for _, msg in bag["/fixture/static"]] == [fixture.STATIC_TEXT]  # transient local
    assert all(started_ns < stamp < stopped_ns for messages in bag.values() for stamp, _ in messages)

    assert (bag_path / "bag.mcap").is_file() and (bag_path / "metadata.yaml").is_file()
    assert summary_counts(stdout) == {topic: str(len(messages)) for topic, messages in bag.items()}
    with Reader(bag_path) as reader:
        offered = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    assert offered["/fixture/static"].durability.name == "TRANSIENT_LOCAL"
    assert offered["/camera/image_raw"].reliability.name == "BEST_EFFORT"
    assert offered["/joint_states"].reliability.name == "RELIABLE"


@pytest.mark.slow
def test_sigterm_mid_stream_leaves_a_complete_sqlite3_bag(tmp_path: Path, ros_env, contract: Path) -> None:
    publisher = start_publisher(ros_env, "--rate", "50")
    bag_path = tmp_path / "bag"
    recorder = start_recorder(ros_env, "--contract", str(contract), "--out", str(bag_path), "--storage", "sqlite3")
    try:
        publisher.wait_for_line("publishing")
        time.sleep(1.5)
        returncode, stdout, stderr = recorder.stop(signal.SIGTERM)
    finally:
        publisher.stop()
    assert returncode == 0, stderr

    assert (bag_path / "bag.db3").is_file()
    bag = read_bag(bag_path)
    indices = check_values(bag)
    for topic in RELIABLE_TOPICS:
        assert_contiguous(indices[topic], topic)
        assert len(indices[topic]) >= 20, topic  # 1.5 s at 50 Hz
    assert_increasing(indices["/camera/image_raw"], "/camera/image_raw")
    assert summary_counts(stdout) == {topic: str(len(messages)) for topic, messages in bag.items()}


@pytest.mark.slow
def test_parameters_from_ros_args_duration_and_a_topic_of_another_type(tmp_path: Path, ros_env, contract: Path) -> None:
    publisher = start_publisher(ros_env, "--rate", "50")
    bag_path = tmp_path / "bag"
    wrong_type = "/fixture/static:std_msgs/msg/Float64MultiArray"  # the fixture publishes a String there
    parameters = [f"contract:={contract}", f"out:={bag_path}", "duration:=3.0", f"extra_topics:=['{wrong_type}']"]
    recorder = start_recorder(ros_env, "--ros-args", *(arg for p in parameters for arg in ("-p", p)))
    try:
        returncode, stdout, stderr = recorder.stop(sig=None)  # the duration ends it
    finally:
        publisher.stop()
    assert returncode == 0, stderr
    assert "/fixture/static is published as ['std_msgs/msg/String'] but recorded as std_msgs/msg/Float64MultiArray" in stderr
    assert summary_counts(stdout)["/fixture/static"] == "0 (no publisher of this type was discovered)"

    bag = read_bag(bag_path)
    assert "/fixture/static" not in bag
    indices = check_values(bag)
    for topic in RELIABLE_TOPICS:
        assert_contiguous(indices[topic], topic)
    stamps = [stamp for messages in bag.values() for stamp, _ in messages]
    assert max(stamps) - min(stamps) <= 3.0e9


def test_a_type_without_its_python_package_is_reported_and_the_rest_recorded(tmp_path: Path, ros_env) -> None:
    if importlib.util.find_spec("tf2_msgs") is not None:
        pytest.skip("tf2_msgs is installed here (a ROS 2 install), so /tf can be recorded")
    bag_path = tmp_path / "bag"
    recorder = start_recorder(
        ros_env, "--out", str(bag_path), "--duration", "0.5",
        "--extra-topic", "/tf:tf2_msgs/msg/TFMessage", "--extra-topic", STATIC_TOPIC,
    )
    returncode, stdout, stderr = recorder.stop(sig=None)
    assert returncode == 1
    assert "cannot record /tf: Python package 'tf2_msgs' is not installed" in stderr
    outcomes = summary_counts(stdout)
    assert outcomes["/tf"].startswith("NOT RECORDED: Python package 'tf2_msgs'")
    assert outcomes["/fixture/static"].startswith("0 (no publisher")
    with Reader(bag_path) as reader:  # closed properly although empty
        assert reader.message_count == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--out", "{tmp}/exists", "--extra-topic", "/x:std_msgs/msg/String"], "output bag {tmp}/exists already exists"),
        (["--extra-topic", "joint_states"], "extra topic 'joint_states' is not TOPIC:TYPE"),
        (["--extra-topic", "/x:acme_msgs/msg/Gripper"], "types unknown to rosbags' ROS 2 type store: ['acme_msgs/msg/Gripper']"),
        (["--contract", "{contract}", "--extra-topic", "/joint_states:std_msgs/msg/String"],
         "extra topic /joint_states is std_msgs/msg/String but the contract says sensor_msgs/msg/JointState"),
        (["--contract", "{tmp}/missing.yaml"], "missing.yaml"),
        ([], "nothing to record: give --contract and/or --extra-topic"),
        (["--contract", "{contract}", "--ros-args", "-p", "storage:=zip"],
         "parameter 'storage' must be one of 'mcap', 'sqlite3'; got 'zip'"),
        (["--contract", "{contract}", "--duration", "-1"], "parameter 'duration' must be a finite double >= 0; got -1.0"),
    ],
    ids=["out-exists", "malformed-extra-topic", "unknown-type", "type-conflict", "missing-contract",
         "no-topics", "bad-storage", "negative-duration"],
)
def test_bad_input_names_the_offending_thing(tmp_path: Path, contract: Path, capsys, arguments, message) -> None:
    (tmp_path / "exists").mkdir()
    arguments = [argument.format(tmp=tmp_path, contract=contract) for argument in arguments]
    if "--out" not in arguments:
        arguments = ["--out", str(tmp_path / "bag"), *arguments]
    assert mvp_main(["record", *arguments]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "bag").exists()


@pytest.mark.slow
def test_recorded_bag_converts_with_bag2hdf5(tmp_path: Path, ros_env, contract: Path) -> None:
    """The issue's end-to-end check: live topics -> `mvp record` -> `mvp bag2hdf5` -> HDF5 values."""
    count = 80
    publisher = start_publisher(ros_env, "--count", str(count), "--rate", "50")
    bag_path = tmp_path / "bag"
    recorder = start_recorder(ros_env, "--contract", str(contract), "--out", str(bag_path))
    try:
        publisher.wait_for_line(f"done {count}")
        time.sleep(1.0)
        returncode, _, stderr = recorder.stop(signal.SIGINT)
    finally:
        publisher.stop()
    assert returncode == 0, stderr

    hdf5_path = tmp_path / "demo.hdf5"
    convert = subprocess.run(
        [*MVP, "bag2hdf5", "--contract", str(contract), "--out", str(hdf5_path), str(bag_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert convert.returncode == 0, convert.stderr
    with h5py.File(hdf5_path) as file:
        demo = file["data/demo_0"]
        joint_pos, cam, actions = demo["obs/joint_pos"][()], demo["obs/cam"][()], demo["actions"][()]
    assert len(joint_pos) >= 20  # 1.6 s of publishing on a 20 Hz grid

    # Each row is one published message, picked by name (contract order j2, j1) and causally.
    joint_rows = [round(j1) for _, j1 in joint_pos]
    for (j2, j1), i in zip(joint_pos, joint_rows):
        positions = fixture.joint_positions(i)
        assert (j2, j1) == (positions["j2"], positions["j1"])
    assert joint_rows == sorted(joint_rows) and joint_rows[-1] - joint_rows[0] >= 30
    image_rows = [int(image[0, 0, 0]) for image in cam]  # image_bytes(i) starts at i % 256
    for image, i in zip(cam, image_rows):
        expected = np.frombuffer(fixture.image_bytes(i), np.uint8).reshape(6, 8, 3)
        np.testing.assert_array_equal(image, expected)
    assert image_rows == joint_rows  # both carry the same header stamp
    for action in actions:
        assert action.tolist() == fixture.command(round(action[0]))
    action_rows = [round(action[0]) for action in actions]
    assert action_rows == sorted(action_rows)
    assert all(abs(a - j) <= 5 for a, j in zip(action_rows, joint_rows))  # next command after the tick
