"""`mvp policy-node` over real Fast DDS: the node runs in its own process (started with
`--ros-args --params-file`), this test process publishes observations, records commands and
diagnostics, and calls the node's services. The policies are small untrained checkpoints
(test/helpers/tiny_policy.py): these tests are about the node, not about what the policy learned.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from mvp_ros.cli import main as mvp_main
from mvp_ros.ros.diagnostics import values_of
from mvp_ros.ros.policy_node import PARAMETERS

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import NodeProcess, Peer, domain_environment  # noqa: E402
from tiny_policy import write_tiny_checkpoint  # noqa: E402

STATUS = "mvp_policy: control"
FINGERS = ["gripper0_right_finger_joint1", "gripper0_right_finger_joint2"]
IMAGE_SIZE = 16
OBS_SHAPES = {"robot0_gripper_qpos": (2,), "robot0_eef_pos": (3,), "object": (10,),
              "agentview_image": (IMAGE_SIZE, IMAGE_SIZE, 3)}
LIMIT, MAX_DELTA = 0.3, 0.1
MOTION = slice(0, 6)
PRIORITY = 20  # the fixture node's thread_priority

CONTRACT = {
    "contract_version": 1,
    "robot": "test_panda",
    "control_rate_hz": 20,
    "observations": {
        "robot0_gripper_qpos": {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states", "joints": FINGERS,
                                "align": {"rule": "asof", "tolerance_s": 0.25}},
        "robot0_eef_pos": {"type": "geometry_msgs/msg/PoseStamped", "topic": "/eef_pose", "field": "position",
                           "align": {"rule": "asof", "tolerance_s": 0.25}},
        "object": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/object_state", "size": 10,
                   "align": {"rule": "asof", "tolerance_s": 0.25}},
        "agentview_image": {"type": "sensor_msgs/msg/Image", "topic": "/agentview/image_raw",
                            "image": {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "encoding": "rgb8"},
                            "align": {"rule": "asof", "tolerance_s": 0.25}},
    },
    "action": {
        "type": "std_msgs/msg/Float64MultiArray", "topic": "/policy/command",
        "names": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
        "limits": {"lower": [-LIMIT] * 7, "upper": [LIMIT] * 7},
        "max_delta": [MAX_DELTA] * 7,
        "safe_action": {"rule": "hold", "zero": ["dx", "dy", "dz", "droll", "dpitch", "dyaw"], "initial": {"gripper": 0.0}},
    },
}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class ObservationStream:
    """Publishes good observations at 40 Hz (wall-clock stamps) from a thread, until paused."""

    def __init__(self, peer: Peer) -> None:
        node = peer.node
        self.peer = peer
        self.joints = node.create_publisher(JointState, "/joint_states", 100)
        self.pose = node.create_publisher(PoseStamped, "/eef_pose", 100)
        self.object = node.create_publisher(Float64MultiArray, "/object_state", 100)
        self.image = node.create_publisher(Image, "/agentview/image_raw", 100)
        self.running = threading.Event()
        self.count = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def stamp(self, offset_s: float = 0.0):
        return (self.peer.node.get_clock().now() + rclpy_duration(offset_s)).to_msg()

    def joint_state(self, names=None, positions=None, offset_s: float = 0.0) -> JointState:
        names = ["robot0_joint1", *FINGERS] if names is None else names
        positions = [0.1, 0.02, -0.02] if positions is None else positions
        msg = JointState(name=names, position=[float(p) for p in positions])
        msg.header.stamp = self.stamp(offset_s)
        return msg

    def image_msg(self, width: int = IMAGE_SIZE, height: int = IMAGE_SIZE, encoding: str = "rgb8") -> Image:
        channels = 3 if encoding in ("rgb8", "bgr8") else 2
        msg = Image(width=width, height=height, encoding=encoding, step=width * channels)
        msg.data = bytes(((np.arange(width * height * channels) + self.count) % 256).astype(np.uint8))
        msg.header.stamp = self.stamp()
        return msg

    def publish_good(self) -> None:
        self.count += 1
        self.joints.publish(self.joint_state())
        pose = PoseStamped()
        pose.header.stamp = self.stamp()
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.1, -0.05, 1.0 + 0.001 * (self.count % 50)
        pose.pose.orientation.w = 1.0
        self.pose.publish(pose)
        self.object.publish(Float64MultiArray(data=[0.01 * i for i in range(10)]))
        self.image.publish(self.image_msg())

    def _loop(self) -> None:
        while self.peer.context.ok():
            if self.running.is_set():
                self.publish_good()
            time.sleep(0.025)


def rclpy_duration(seconds: float):
    from rclpy.duration import Duration

    return Duration(nanoseconds=int(seconds * 1e9))


def is_safe_hold(command: np.ndarray, previous: np.ndarray) -> bool:
    return bool(np.all(command[MOTION] == 0.0) and command[6] == previous[6])


def check_commands(commands: list[np.ndarray]) -> None:
    for command in commands:
        assert command.shape == (7,)
        assert np.isfinite(command).all(), command
        assert np.all(np.abs(command) <= LIMIT + 1e-12), command


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return domain_environment()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("policy_node")
    checkpoint = write_tiny_checkpoint(directory / "tiny", OBS_SHAPES, action_range=1.0, contract=CONTRACT)
    contract = write_yaml(directory / "contract.yaml", CONTRACT)
    params = write_yaml(directory / "params.yaml", {"mvp_policy": {"ros__parameters": {
        "checkpoint": str(checkpoint), "contract": str(contract), "device": "cpu", "warmup_iterations": 3,
        "inference_timeout_s": 1.0, "thread_priority": PRIORITY}}})
    return {"directory": directory, "checkpoint": checkpoint, "contract": contract, "params": params}


@pytest.fixture(scope="module")
def peer(env):
    peer = Peer(env)
    peer.record(Float64MultiArray, "/policy/command")
    peer.record(DiagnosticArray, "/diagnostics")
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def stream(peer) -> ObservationStream:
    return ObservationStream(peer)


@pytest.fixture(scope="module")
def node(env, files, peer, stream):
    process = NodeProcess(["policy-node", "--ros-args", "--params-file", str(files["params"])], env,
                          files["directory"] / "policy_node.log")
    stream.running.set()
    try:
        peer.wait_for_messages("/policy/command", 5, timeout_s=60)
    except AssertionError:
        process.stop()
        raise AssertionError(f"no commands from the policy node:\n{process.output()}")
    yield process
    process.stop()


def fifo_allowed() -> bool:
    """Whether this machine lets a process of this user run a thread under SCHED_FIFO."""
    allowed = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            allowed.append(True)
        except PermissionError:
            allowed.append(False)

    thread = threading.Thread(target=probe)  # a thread of its own, which ends with the probe
    thread.start()
    thread.join()
    return allowed[0]


def expected_scheduling(active: bool) -> str:
    if not active:
        return "SCHED_OTHER"
    return f"SCHED_FIFO {PRIORITY}" if fifo_allowed() else f"SCHED_OTHER (thread_priority {PRIORITY} refused)"


def node_thread_scheduling(node: NodeProcess) -> tuple[int, int]:
    """(policy, priority) of the node's main thread, the executor's, which runs the ticks."""
    return os.sched_getscheduler(node.popen.pid), os.sched_getparam(node.popen.pid).sched_priority


def commands_since(peer: Peer, since: float) -> list[np.ndarray]:
    return commands_since_on(peer, "/policy/command", since)


def commands_since_on(peer: Peer, topic: str, since: float) -> list[np.ndarray]:
    return [np.array(msg.data) for msg in peer.messages(topic, since)]


@pytest.mark.slow
def test_commands_flow_within_limits_and_diagnostics_report_timing(peer, stream, node) -> None:
    stream.running.set()
    started = time.monotonic()
    peer.wait_for_messages("/policy/command", 30, timeout_s=10, since=started)
    commands = commands_since(peer, started)
    check_commands(commands)
    steps = np.abs(np.diff(np.stack(commands), axis=0))
    assert steps.max() <= MAX_DELTA + 1e-9  # max_delta from the contract, applied every tick
    assert np.abs(np.stack(commands)).max() == pytest.approx(LIMIT)  # the untrained policy pushes into the limits

    values = peer.fresh_diagnostics(STATUS)
    assert values["state"] == "active" and values["stale_keys"] == ""
    assert int(values["ticks"]) >= 30 and int(values["commands"]) >= 30
    for key in ("tick_latency_ms_p50", "tick_latency_ms_p99", "inference_ms_p50", "inference_ms_p99"):
        assert 0 < float(values[key]) < float("inf"), (key, values[key])  # no bound: the CPU is shared
    assert float(values["tick_latency_ms_p50"]) <= float(values["tick_latency_ms_p99"])
    for key in OBS_SHAPES:
        assert 0 <= float(values[f"age_ms.{key}"]) < 250, key
    assert "spinning with rclpy's EventsExecutor" in node.output()  # this rclpy (Kilted) has one
    assert values["scheduling"] == expected_scheduling(active=True)
    if fifo_allowed():
        assert node_thread_scheduling(node) == (os.SCHED_FIFO, PRIORITY)
    else:
        assert "ticking under the normal scheduler: SCHED_FIFO priority 20 was refused" in node.output()


@pytest.mark.slow
def test_bad_messages_are_rejected_counted_and_logged(peer, stream, node) -> None:
    stream.running.set()
    before = peer.fresh_diagnostics(STATUS)
    started = time.monotonic()
    rounds = [  # (publisher, message maker): messages are made when sent, so their stamps are current
        [(stream.joints, lambda: stream.joint_state(positions=[0.1, float("nan"), 0.0])),
         (stream.image, lambda: stream.image_msg(width=8, height=8)),
         (stream.object, lambda: Float64MultiArray(data=[1.0, 2.0]))],
        [(stream.joints, lambda: stream.joint_state(names=["robot0_joint1", FINGERS[0]], positions=[0.1, 0.2])),
         (stream.image, lambda: stream.image_msg(encoding="16UC1"))],
        [(stream.joints, lambda: stream.joint_state(names=["elbow", "wrist"], positions=[0.1, 0.2]))],
        [(stream.joints, lambda: stream.joint_state(positions=[0.1]))],
        [(stream.joints, lambda: stream.joint_state(offset_s=-5.0))],
        [(stream.joints, lambda: stream.joint_state(offset_s=5.0))],
    ]
    for messages in rounds:  # a second apart: the node logs each topic's rejects at most once a second
        stream.running.clear()
        time.sleep(0.1)  # more than a quarter period after the stream's last message: the node reads each bad one
        for publisher, make in messages:
            publisher.publish(make())
        time.sleep(0.1)
        stream.running.set()
        time.sleep(0.9)
    assert node.alive()
    after = peer.fresh_diagnostics(STATUS)
    expected = {
        "/joint_states.non_finite": 1, "/joint_states.malformed": 3, "/joint_states.out_of_order": 1,
        "/joint_states.future_stamp": 1, "/agentview/image_raw.malformed": 2, "/object_state.malformed": 1,
    }
    for key, count in expected.items():
        assert int(after.get(f"rejected.{key}", 0)) - int(before.get(f"rejected.{key}", 0)) == count, key
    assert int(after["rejected"]) - int(before["rejected"]) == sum(expected.values())
    assert "names joint" not in after["last_reject./joint_states"]  # the newest: the future stamp
    assert "ahead of the clock" in after["last_reject./joint_states"]

    log = node.output()
    for text in ["NaN or inf", "lacks joints ['gripper0_right_finger_joint2']",
                 "lacks joints ['gripper0_right_finger_joint1', 'gripper0_right_finger_joint2']",
                 "has 1 position values for 3 joint names", "is 8x8, the contract says 16x16",
                 "has encoding '16UC1'", "has 2 values, the contract says size 10", "is before the held sample",
                 "ahead of the clock"]:
        assert text in log, text
    commands = commands_since(peer, started)
    assert len(commands) >= 60  # ~7 s at 20 Hz: it kept ticking
    check_commands(commands)
    policy_commands = [c for c in commands if np.any(c[MOTION] != 0.0)]
    assert len(policy_commands) >= 0.9 * len(commands)  # the good samples between the bad ones kept it going


@pytest.mark.slow
def test_a_message_flood_does_not_stop_the_ticks(peer, stream, node) -> None:
    stream.running.set()
    flood_joints = [stream.joint_state() for _ in range(3000)]
    flood_images = [stream.image_msg(width=320, height=240) for _ in range(100)]  # wrong size: rejected
    before = peer.fresh_diagnostics(STATUS)
    started = time.monotonic()
    for i, msg in enumerate(flood_joints):
        stream.joints.publish(msg)
        if i % 30 == 0:
            stream.image.publish(flood_images[i // 30])
    flood_s = time.monotonic() - started
    time.sleep(1.0)
    after = peer.fresh_diagnostics(STATUS)
    assert node.alive()
    elapsed = time.monotonic() - started
    commands = commands_since(peer, started)
    check_commands(commands)
    assert len(commands) >= 0.5 * 20 * elapsed, (len(commands), elapsed, flood_s)
    assert after["stale_keys"] == ""
    assert int(after["rejected./agentview/image_raw.malformed"]) > int(before.get("rejected./agentview/image_raw.malformed", 0))


@pytest.mark.slow
def test_stale_observations_hold_the_safe_action_then_resume(peer, stream, node) -> None:
    stream.running.set()
    time.sleep(0.3)
    before = peer.fresh_diagnostics(STATUS)
    stream.running.clear()
    paused = time.monotonic()
    time.sleep(0.5)  # the 0.25 s age limit, a tick waiting for samples, the tick that gives up on it
    stale = peer.fresh_diagnostics(STATUS)
    time.sleep(0.5)
    stream.running.set()
    resumed = time.monotonic()
    time.sleep(1.0)

    since_pause = commands_since(peer, paused)
    first_hold = next(i for i, command in enumerate(since_pause) if np.all(command[MOTION] == 0.0))
    last_command = since_pause[first_hold - 1] if first_hold else commands_since(peer, 0)[-len(since_pause) - 1]
    held = commands_since(peer, paused + 0.45)
    held = held[: len(held) - len(commands_since(peer, resumed))]
    assert len(held) >= 10
    for command in held:
        assert is_safe_hold(command, last_command), (last_command, command)
    assert set(stale["stale_keys"].split(",")) == set(OBS_SHAPES)
    assert int(stale["holds"]) > int(before["holds"]) and int(stale["stale_ticks"]) > int(before["stale_ticks"])

    after_resume = commands_since(peer, resumed + 0.3)
    assert len(after_resume) >= 8
    check_commands(after_resume)
    assert all(np.any(command[MOTION] != 0.0) for command in after_resume)
    assert peer.fresh_diagnostics(STATUS)["stale_keys"] == ""


@pytest.mark.slow
def test_after_reset_then_stop_the_safe_action_is_published(peer, stream, node) -> None:
    """A reset forgets the last command; the safe action is still there: zero motion, the contract's initial gripper."""
    stream.running.set()
    time.sleep(0.5)
    stream.running.clear()
    assert peer.call(Trigger, "/mvp_policy/reset").success
    assert peer.call(Trigger, "/mvp_policy/stop").success
    stopped = time.monotonic()
    time.sleep(0.3)
    np.testing.assert_array_equal(commands_since(peer, 0)[-1], [0.0] * 6 + [0.0])
    assert commands_since(peer, stopped + 0.2) == []
    assert peer.call(Trigger, "/mvp_policy/start").message == "active"


@pytest.mark.slow
def test_stop_publishes_the_safe_action_and_start_resumes(peer, stream, node) -> None:
    stream.running.set()
    time.sleep(0.5)
    response = peer.call(Trigger, "/mvp_policy/stop")
    stopped = time.monotonic()
    assert response.success and response.message == "inactive"
    time.sleep(0.5)
    commands = [np.array(m.data) for m in peer.messages("/policy/command")]
    last, before_last = commands[-1], commands[-2]
    assert is_safe_hold(last, before_last), (before_last, last)
    assert commands_since(peer, stopped + 0.2) == []  # no ticks while inactive
    values = peer.fresh_diagnostics(STATUS)
    assert values["state"] == "inactive" and values["scheduling"] == expected_scheduling(active=False)
    assert node_thread_scheduling(node) == (os.SCHED_OTHER, 0)  # real-time only while ticking

    assert peer.call(Trigger, "/mvp_policy/reset").success
    response = peer.call(Trigger, "/mvp_policy/start")
    assert response.success and response.message == "active"
    resumed = time.monotonic()
    peer.wait_for_messages("/policy/command", 10, timeout_s=5, since=resumed)
    check_commands(commands_since(peer, resumed))
    assert peer.fresh_diagnostics(STATUS)["scheduling"] == expected_scheduling(active=True)


@pytest.mark.slow
def test_shutdown_publishes_the_safe_action(tmp_path, env, peer, stream) -> None:
    """A node of its own, on a command topic of its own: the module's shared node keeps running for the other tests."""
    contract = CONTRACT | {"action": CONTRACT["action"] | {"topic": "/shutdown/command"}}
    contract_path = write_yaml(tmp_path / "contract.yaml", contract)
    checkpoint = write_tiny_checkpoint(tmp_path / "shutdown", OBS_SHAPES, action_range=1.0, contract=contract)
    peer.record(Float64MultiArray, "/shutdown/command")
    process = NodeProcess(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract_path),
                           "--ros-args", "-r", "__node:=mvp_policy_shutdown", "-p", "device:=cpu",
                           "-p", "warmup_iterations:=1"], env, tmp_path / "log")
    try:
        stream.running.set()
        peer.wait_for_messages("/shutdown/command", 5, timeout_s=60, since=time.monotonic())
    finally:
        assert process.stop(signal.SIGTERM) == 0, process.output()
    time.sleep(0.3)
    commands = [np.array(m.data) for m in peer.messages("/shutdown/command")]
    assert is_safe_hold(commands[-1], commands[-2]), commands[-2:]


@pytest.mark.slow
def test_joint_trajectory_commands_from_a_policy_compiled_ahead_of_time(tmp_path, env, peer) -> None:
    """Output as trajectory_msgs/JointTrajectory, one point per tick at the contract's time_from_start; the policy
    compiled ahead of time (execution aot)."""
    contract = CONTRACT | {"action": CONTRACT["action"] | {
        "type": "trajectory_msgs/msg/JointTrajectory", "topic": "/arm/joint_trajectory",
        "safe_action": {"rule": "constant", "value": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.25]},
        "trajectory": {"mode": "point", "time_from_start_s": 0.2}}}
    contract_path = write_yaml(tmp_path / "contract.yaml", contract)
    checkpoint = write_tiny_checkpoint(tmp_path / "trajectory", OBS_SHAPES, action_range=1.0, contract=contract)
    peer.record(JointTrajectory, "/arm/joint_trajectory")
    stream = ObservationStream(peer)
    process = NodeProcess(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract_path),
                           "--ros-args", "-r", "__node:=mvp_policy_trajectory", "-p", "device:=cpu",
                           "-p", "warmup_iterations:=1", "-p", "execution:=aot"], env, tmp_path / "log")
    try:
        peer.wait_for(lambda: "active: ticking" in process.output() or not process.alive(), 120, "the node to activate")
        stream.running.set()
        trajectories = peer.wait_for_messages("/arm/joint_trajectory", 10, timeout_s=30)
    finally:
        stream.running.clear()
        assert process.stop() == 0, process.output()
    for msg in trajectories:
        assert list(msg.joint_names) == CONTRACT["action"]["names"]
        assert len(msg.points) == 1 and msg.points[0].time_from_start.nanosec == 200_000_000  # as the contract says
    check_commands([np.array(msg.points[0].positions) for msg in trajectories])
    assert any(np.any(np.array(msg.points[0].positions)[MOTION] != 0.0) for msg in trajectories)  # the policy's, not only holds
    assert ", cpu, aot) with" in process.output()  # the configure line names the execution mode


def test_a_checkpoint_producing_nan_is_refused_at_configure(tmp_path, capsys) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "nan", OBS_SHAPES, poison=True, contract=CONTRACT)
    error = configure_error(tmp_path, capsys, checkpoint, CONTRACT)
    assert f"mvp policy-node: error: {checkpoint} produces NaN or inf actions at warm-up" in error


@pytest.mark.slow
def test_with_the_simulation_clock_dead_the_watchdog_publishes_the_safe_action(tmp_path, env, files, peer) -> None:
    """On sim time: /clock runs, then stops (the simulation died). The timer stops with it; the
    watchdog, on the steady clock, publishes the safe action and /diagnostics say ERROR."""
    from rosgraph_msgs.msg import Clock as ClockMsg

    contract = write_yaml(tmp_path / "contract.yaml", CONTRACT | {"action": CONTRACT["action"] | {"topic": "/simclock/command"}})
    peer.record(Float64MultiArray, "/simclock/command")
    clock = peer.node.create_publisher(ClockMsg, "/clock", 10)
    ticking = threading.Event()
    ticking.set()

    def run_clock() -> None:  # sim time = wall time, so the observation stream's stamps are current
        while ticking.is_set():
            clock.publish(ClockMsg(clock=peer.node.get_clock().now().to_msg()))
            time.sleep(0.01)

    stream = ObservationStream(peer)
    stream.running.set()
    threading.Thread(target=run_clock, daemon=True).start()
    process = NodeProcess(["policy-node", "--checkpoint", str(files["checkpoint"]), "--contract", str(contract),
                           "--ros-args", "-r", "__node:=mvp_policy_simclock", "-p", "device:=cpu", "-p", "use_sim_time:=true",
                           "-p", "warmup_iterations:=1", "-p", "watchdog_timeout_s:=0.3"], env, tmp_path / "log")
    try:
        peer.wait_for_messages("/simclock/command", 20, timeout_s=60)
        ticking.clear()  # the simulation dies
        died = time.monotonic()
        time.sleep(2.0)
        def errors() -> list:
            return [status for msg in peer.messages("/diagnostics", died + 0.5) for status in msg.status
                    if status.name == "mvp_policy_simclock: control" and status.level == DiagnosticStatus.ERROR]

        error = peer.wait_for(errors, 5, "an ERROR status")[-1]
    finally:
        stream.running.clear()
        ticking.clear()
        assert process.stop() == 0, process.output()
    after = commands_since_on(peer, "/simclock/command", died + 0.5)
    assert 3 <= len(after) <= 12  # one safe action per 0.3 s deadline, no policy commands
    for command in after:
        assert np.all(command[MOTION] == 0.0)
    assert "watchdog" in error.message
    assert int(values_of(error)["watchdog"]) >= 3


def without_realtime_rights() -> list[str]:
    """A command prefix that sets the rtprio limit to 0 and, for root, drops CAP_SYS_NICE: as an
    ordinary user with no real-time rights runs."""
    if shutil.which("prlimit") is None or (os.geteuid() == 0 and shutil.which("setpriv") is None):
        pytest.skip("prlimit and setpriv (util-linux), which take real-time rights away, are not installed")
    drop_capability = ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", "--"] if os.geteuid() == 0 else []
    return ["prlimit", "--rtprio=0", "--", *drop_capability]


@pytest.mark.slow
def test_a_refused_thread_priority_warns_and_ticks_under_the_normal_scheduler(tmp_path, env, files, peer) -> None:
    """As an ordinary user without an rtprio limit: the node says what to allow and runs on."""
    contract = write_yaml(tmp_path / "contract.yaml", CONTRACT | {"action": CONTRACT["action"] | {"topic": "/refused/command"}})
    process = NodeProcess(["policy-node", "--checkpoint", str(files["checkpoint"]), "--contract", str(contract),
                           "--ros-args", "-r", "__node:=mvp_policy_refused", "-p", "device:=cpu",
                           "-p", "warmup_iterations:=1", "-p", "thread_priority:=20"],
                          env, tmp_path / "log", prefix=without_realtime_rights())
    try:
        peer.wait_for(lambda: "active: ticking" in process.output() or not process.alive(), 60, "the node to activate")
    finally:
        assert process.stop() == 0, process.output()
    output = process.output()
    assert "ticking under the normal scheduler: SCHED_FIFO priority 20 was refused (Operation not permitted): " \
           "the process needs CAP_SYS_NICE, or an rtprio limit" in output
    assert "active: ticking at 20 Hz on the ROS_TIME clock (SCHED_OTHER (thread_priority 20 refused))" in output


def test_candidates_without_a_critic_are_refused_at_configure(tmp_path, capsys, files) -> None:
    error = configure_error(tmp_path, capsys, files["checkpoint"], CONTRACT, "-p", "num_candidates:=8")
    assert "critic.json is missing: the checkpoint has no critic (was it trained with --algo mvp-rl?)" in error


def configure_error(tmp_path: Path, capsys, checkpoint: Path, contract: dict, *extra: str) -> str:
    contract_path = write_yaml(tmp_path / "contract.yaml", contract)
    status = mvp_main(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract_path),
                       "--ros-args", "-p", "warmup_iterations:=0", *extra])
    assert status == 2
    return capsys.readouterr().err


def without_key(key: str) -> dict:
    return CONTRACT | {"observations": {k: v for k, v in CONTRACT["observations"].items() if k != key}}


@pytest.mark.parametrize("contract, message", [
    (without_key("object"), "{ckpt} needs observation 'object', which contract"),
    (CONTRACT | {"observations": CONTRACT["observations"] | {"object": CONTRACT["observations"]["object"] | {"size": 9}}},
     "observation 'object': {ckpt} was trained on shape (10,), contract"),
    (CONTRACT | {"action": CONTRACT["action"] | {"names": ["a", "b"], "limits": {"lower": [-1, -1], "upper": [1, 1]},
                                                "max_delta": [1, 1], "safe_action": {"rule": "hold"}}},
     "{ckpt} produces 7 action dims, contract"),
])
def test_configure_checks_the_checkpoint_against_the_contract(tmp_path, files, capsys, contract, message) -> None:
    error = configure_error(tmp_path, capsys, files["checkpoint"], contract)
    assert "mvp policy-node: error: " + message.format(ckpt=files["checkpoint"]) in error


def test_configure_names_the_missing_tf2_ros(tmp_path, capsys) -> None:
    contract = without_key("robot0_eef_pos") | {"observations": without_key("robot0_eef_pos")["observations"] | {
        "robot0_eef_pos": {"type": "tf", "parent_frame": "base", "child_frame": "tool", "field": "position"}}}
    checkpoint = write_tiny_checkpoint(tmp_path / "tf", OBS_SHAPES, contract=contract)
    error = configure_error(tmp_path, capsys, checkpoint, contract)
    assert "observation(s) ['robot0_eef_pos'] are tf sources, which need the tf2_ros package; tf2_ros is not installed" in error


@pytest.mark.parametrize("stored, message", [
    (CONTRACT | {"observations": CONTRACT["observations"] | {"object": CONTRACT["observations"]["object"] | {"size": 9}}},
     "observation 'object': size 9 in training, 10 deployed"),
    (CONTRACT | {"action": CONTRACT["action"] | {"names": ["x", "y", "z", "roll", "pitch", "yaw", "grip"],
                                                "safe_action": {"rule": "hold"}}},
     "action: names [x, y, z, roll, pitch, yaw, grip] in training, [dx, dy, dz, droll, dpitch, dyaw, gripper] deployed"),
])
def test_configure_checks_the_contract_stored_in_the_checkpoint(tmp_path, capsys, stored, message) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "trained_with_contract", OBS_SHAPES, contract=stored)
    error = configure_error(tmp_path, capsys, checkpoint, CONTRACT)
    assert (f"mvp policy-node: error: contract {tmp_path / 'contract.yaml'} differs from the contract {checkpoint}"
            " was trained with") in error
    assert message in error


@pytest.mark.parametrize("setting, message", [
    ("thread_priority:=120", "parameter 'thread_priority' must be an integer from 0 to 99; got 120"),
    ("control_rate_hz:=fast", "parameter 'control_rate_hz' must be a finite double from 0 to 10000"),
    ("torch_threads:=0", "parameter 'torch_threads' must be an integer from 1 to 1024; got 0"),
    ("warmup_iterations:=-5", "parameter 'warmup_iterations' must be an integer from 0 to 100000; got -5"),
    ("ensemble_decay:=.nan", "parameter 'ensemble_decay' must be a finite double from 0 to 100"),
    ("execution:=fastest", "parameter 'execution' must be one of 'auto', 'eager', 'compile', 'aot', 'cuda_graph'"),
])
def test_parameters_are_validated_where_they_enter(tmp_path, files, capsys, setting, message) -> None:
    error = configure_error(tmp_path, capsys, files["checkpoint"], CONTRACT, "-p", setting)
    assert message in error and "Traceback" not in error


def test_configure_names_a_missing_checkpoint(tmp_path, capsys) -> None:
    error = configure_error(tmp_path, capsys, tmp_path / "nowhere", CONTRACT)
    assert f"checkpoint directory {tmp_path / 'nowhere'} does not exist" in error


def test_every_parameter_has_a_description() -> None:
    for name, spec in PARAMETERS.items():
        assert len(spec.description) > 20, name


def test_the_shipped_parameters_file_keeps_the_code_defaults() -> None:
    """config/policy_node.yaml is where users read the defaults: each value there is the node's own
    default (temporal ensembling included), except the paths it fills in."""
    shipped = yaml.safe_load((Path(__file__).parents[1] / "config" / "policy_node.yaml").read_text())
    values = shipped["/**"]["ros__parameters"]  # `/**`: the section for the node under any name and namespace
    assert set(values) - {"use_sim_time"} <= set(PARAMETERS)
    for name, value in values.items():
        if name not in ("checkpoint", "contract", "use_sim_time"):
            assert value == PARAMETERS[name].default, name
    assert values["temporal_ensemble"] is True


def test_the_execution_choices_are_the_policy_modes() -> None:
    from mvp_ros.policy.execution import MODES

    assert PARAMETERS["execution"].choices == ("auto", *MODES)


def test_the_node_logs_errors_warnings_and_infos_in_any_order() -> None:
    """rclpy refuses a second severity from one call site; the tick core's log lines come through one method."""
    import rclpy

    from mvp_ros.ros.policy_node import PolicyNode

    rclpy.init(domain_id=int(domain_environment()["ROS_DOMAIN_ID"]))
    try:
        node = PolicyNode()
        for level in ("error", "warn", "info", "warn", "error"):
            node._log(level, f"a {level} line")
        node.destroy_node()
    finally:
        rclpy.shutdown()
