"""`mvp sim-node` over real Fast DDS, alone (this test process plays the policy) and in the closed
loop with `mvp policy-node`. Every published value is checked against a robosuite environment
stepped here with the same seed and actions, and the closed loop against `run_episode`, the loop
of `mvp eval`: lockstep on sim time makes them equal, not just close."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, Int64
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mvp_ros.cli import main as mvp_main
from mvp_ros.data.contract import Contract, load_contract, stamp_ns
from mvp_ros.policy import Policy
from mvp_ros.policy.checkpoint import read_checkpoint_info
from mvp_ros.policy.chunks import ChunkExecutor
from mvp_ros.policy.critic import ChunkCritic, CriticConfig, save_critic
from mvp_ros.ros.diagnostics import values_of
from mvp_ros.ros.sim_messages import ContractMessages
from mvp_ros.ros.sim_node import bridge_env
from mvp_ros.sim.envs import build_env
from mvp_ros.sim.rollout import run_episode

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import REPO, NodeProcess, Peer, domain_environment  # noqa: E402
from tiny_policy import PANDA_SIM_CONTRACT, write_tiny_checkpoint  # noqa: E402

PANDA_CONTRACT = REPO / "config" / "panda_sim_contract.yaml"
ARM = [f"robot0_joint{i}" for i in range(1, 8)]
FINGERS = ["gripper0_right_finger_joint1", "gripper0_right_finger_joint2"]
IMAGE_SIZE = 32
SEED = 7  # of the simulation alone: its first episode and its construction
EVENTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
OBSERVATION_TOPICS = {"/joint_states": JointState, "/eef_pose": PoseStamped, "/object_state": Float64MultiArray,
                      "/agentview/image_raw": Image}


def image_contract(path: Path) -> Path:
    """The simulated Panda's contract plus an agentview camera."""
    contract = yaml.safe_load(PANDA_CONTRACT.read_text())
    contract["observations"]["agentview_image"] = {
        "type": "sensor_msgs/msg/Image", "topic": "/agentview/image_raw",
        "image": {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "encoding": "rgb8"}}
    path.write_text(yaml.safe_dump(contract))
    return path


@pytest.fixture(scope="module")
def env():
    return domain_environment()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("sim_node")
    checkpoint = write_tiny_checkpoint(directory / "tiny", contract=PANDA_SIM_CONTRACT)
    return {"directory": directory, "checkpoint": checkpoint, "image_contract": image_contract(directory / "contract.yaml")}


@pytest.fixture(scope="module")
def peer(env):
    peer = Peer(env)
    for topic, message_type in OBSERVATION_TOPICS.items():
        peer.record(message_type, topic)
    peer.record(Clock, "/clock")
    peer.record(Bool, "/mvp_sim/success")
    peer.record(Int64, "/mvp_sim/episode_start", qos=EVENTS)
    peer.record(DiagnosticStatus, "/mvp_sim/episode_result", qos=EVENTS)
    peer.record(DiagnosticArray, "/diagnostics")
    peer.record(Float64MultiArray, "/policy/command")
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def reference(files):
    """A robosuite environment built the way the bridge builds its own."""
    contract = load_contract(files["image_contract"])
    environment = bridge_env(read_checkpoint_info(files["checkpoint"]).env_args, contract, seed=SEED)
    yield environment, contract
    environment.close()


@pytest.fixture
def sim(env, files, peer):
    process = NodeProcess(["sim-node", "--checkpoint", str(files["checkpoint"]), "--contract", str(files["image_contract"]),
                           "--seed", str(SEED), "--ros-args", "-p", "lockstep_timeout_s:=0.5", "-p", "max_steps:=5"],
                          env, files["directory"] / "sim.log")
    commands = peer.node.create_publisher(Float64MultiArray, "/policy/command", 10)
    try:
        peer.wait_for(lambda: all(peer.node.count_publishers(t) for t in OBSERVATION_TOPICS)
                      and commands.get_subscription_count(), 120, "the simulation node's topics")
    except AssertionError:
        process.stop()
        raise AssertionError(process.output())
    time.sleep(0.5)
    yield process, commands
    assert process.stop() == 0, process.output()


def observations_at(peer: Peer, contract, index: int) -> tuple[dict[str, np.ndarray], list[int]]:
    """The contract's observation from the index-th message of every topic, and their stamps."""
    observation, stamps = {}, []
    for topic in OBSERVATION_TOPICS:
        msg = peer.messages(topic)[index]
        if hasattr(msg, "header"):
            stamps.append(stamp_ns(msg.header.stamp))
        for key, spec in contract.observations.items():
            if spec.topic == topic:
                observation[key] = spec.extract(msg)
    return observation, stamps


def step_through(peer: Peer, commands, actions: list[np.ndarray | None], first: int) -> None:
    """Answer observation set first + k with actions[k] (None: send nothing, the simulation holds)."""
    for k, action in enumerate(actions):
        peer.wait_for_messages("/object_state", first + k + 1, timeout_s=30)
        if action is not None:
            commands.publish(Float64MultiArray(data=[float(a) for a in action]))
    peer.wait_for_messages("/object_state", first + len(actions) + 1, timeout_s=30)


def assert_matches_reference(peer: Peer, reference, seed: int, actions: list[np.ndarray], first: int) -> None:
    environment, contract = reference
    expected = environment.reset(seed=seed)
    clock = [stamp_ns(msg.clock) for msg in peer.messages("/clock")]
    for k in range(len(actions) + 1):
        observation, stamps = observations_at(peer, contract, first + k)
        for key, value in observation.items():
            np.testing.assert_array_equal(value, expected[key], err_msg=f"step {k}: {key}")
        assert len(set(stamps)) == 1 and stamps[0] in clock  # stamped with the /clock of the step
        if k < len(actions):
            expected, _, _, _ = environment.step(actions[k])


@pytest.mark.slow
def test_lockstep_bridge_publishes_what_the_simulation_sees_and_holds_without_a_valid_command(peer, sim, reference) -> None:
    process, commands = sim
    response = peer.call(Trigger, "/mvp_sim/reset")
    assert response.success and response.message == "episode 1 starts with seed 7"
    rng = np.random.default_rng(0)
    actions = [np.concatenate([rng.uniform(-0.5, 0.5, 6), [1.0]]) for _ in range(5)]
    step_through(peer, commands, actions, first=0)

    result = peer.wait_for_messages("/mvp_sim/episode_result", 1, timeout_s=10)[0]
    assert result.message == "failure"
    assert {k: values_of(result)[k] for k in ("seed", "steps", "held_steps", "success")} == {
        "seed": "7", "steps": "5", "held_steps": "0", "success": "False"}
    assert [msg.data for msg in peer.messages("/mvp_sim/episode_start")] == [7]
    assert_matches_reference(peer, reference, 7, actions, first=0)

    joint_state = peer.messages("/joint_states")[0]
    assert list(joint_state.name) == ARM + FINGERS and len(joint_state.velocity) == 9
    image = peer.messages("/agentview/image_raw")[0]
    assert (image.width, image.height, image.encoding, image.step) == (IMAGE_SIZE, IMAGE_SIZE, "rgb8", 3 * IMAGE_SIZE)
    clock = [stamp_ns(msg.clock) for msg in peer.messages("/clock")]
    assert np.all(np.diff(clock) == 50_000_000)  # one control period per step, whatever the wall clock did
    assert [msg.data for msg in peer.messages("/mvp_sim/success")] == [False] * 6

    # Episode 2: no valid command for two steps, then one, then none.
    first = len(peer.messages("/object_state"))
    assert peer.call(Trigger, "/mvp_sim/reset").message == "episode 2 starts with seed 8"
    valid = np.array([0.4, -0.3, 0.2, 0.0, 0.1, 0.0, 1.0])
    peer.wait_for_messages("/object_state", first + 1, timeout_s=30)
    commands.publish(Float64MultiArray(data=[float("nan")] * 7))  # rejected: the simulation holds after 0.5 s
    peer.wait_for_messages("/object_state", first + 2, timeout_s=30)
    commands.publish(Float64MultiArray(data=[0.1, 0.2, 0.3]))  # rejected: 3 values for 7 names
    step_through(peer, commands, [valid, None, None], first=first + 2)

    hold = np.concatenate([np.zeros(6), valid[6:]])  # the contract's hold: motion dims zeroed, gripper kept
    initial = np.array([0.0] * 6 + [-1.0])  # before any command: zero motion, the contract's initial gripper (open)
    applied = [initial, initial, valid, hold, hold]
    assert_matches_reference(peer, reference, 8, applied, first=first)
    result = values_of(peer.wait_for_messages("/mvp_sim/episode_result", 2, timeout_s=10)[1])
    assert (result["seed"], result["steps"], result["held_steps"]) == ("8", "5", "4")
    assert peer.fresh_diagnostics("mvp_sim: simulation")["rejected_commands"] == "2"
    log = process.output()
    assert "rejected a command: action: /policy/command message has NaN or inf" in log
    assert "rejected a command: action: /policy/command has 3 values for 7 names" in log


def two_output_contract(path: Path, image_contract: Path) -> Path:
    """The camera contract with the action split over two command topics: the arm's motion as
    Float64MultiArray, the gripper as a JointTrajectory, each with its own safe action."""
    contract = yaml.safe_load(image_contract.read_text())
    motion = contract.pop("action")["names"][:6]
    contract["action"] = {"outputs": [
        {"type": "std_msgs/msg/Float64MultiArray", "topic": "/arm/command", "names": motion,
         "limits": {"lower": [-1] * 6, "upper": [1] * 6}, "safe_action": {"rule": "hold", "zero": motion}},
        {"type": "trajectory_msgs/msg/JointTrajectory", "topic": "/gripper/command", "names": ["gripper"],
         "limits": {"lower": [-1], "upper": [1]}, "safe_action": {"rule": "hold", "initial": {"gripper": -1}}}]}
    path.write_text(yaml.safe_dump(contract))
    return path


def gripper_trajectory(position: float) -> JointTrajectory:
    """A trajectory naming another joint first: the bridge reads the gripper's position by name."""
    return JointTrajectory(joint_names=["conveyor", "gripper"],
                           points=[JointTrajectoryPoint(positions=[5.0, position], time_from_start=Duration(nanosec=50_000_000))])


@pytest.mark.slow
def test_the_bridge_assembles_an_action_split_over_two_outputs_by_name(tmp_path, env, files, peer, reference) -> None:
    contract = two_output_contract(tmp_path / "two_outputs.yaml", files["image_contract"])
    process = NodeProcess(["sim-node", "--checkpoint", str(files["checkpoint"]), "--contract", str(contract),
                           "--seed", str(SEED), "--ros-args", "-p", "lockstep_timeout_s:=0.5", "-p", "max_steps:=4"],
                          env, tmp_path / "sim.log")
    arm = peer.node.create_publisher(Float64MultiArray, "/arm/command", 10)
    gripper = peer.node.create_publisher(JointTrajectory, "/gripper/command", 10)
    try:
        peer.wait_for(lambda: arm.get_subscription_count() and gripper.get_subscription_count()
                      and all(peer.node.count_publishers(t) for t in OBSERVATION_TOPICS), 120, "the simulation node")
        time.sleep(0.5)
        first, done = len(peer.messages("/object_state")), len(peer.messages("/mvp_sim/episode_result"))
        assert peer.call(Trigger, "/mvp_sim/reset").success
        motion = [np.array([0.4, -0.3, 0.2, 0.0, 0.1, 0.0]), np.array([-0.2, 0.3, 0.1, 0.1, 0.0, -0.1])]
        sent = [(motion[0], 1.0), (motion[1], None), (None, 0.5), (None, None)]  # None: that output sends nothing
        for k, (arm_command, gripper_command) in enumerate(sent):
            peer.wait_for_messages("/object_state", first + k + 1, timeout_s=30)
            if arm_command is not None:
                arm.publish(Float64MultiArray(data=arm_command.tolist()))
            if gripper_command is not None:
                gripper.publish(gripper_trajectory(gripper_command))
        result = values_of(peer.wait_for_messages("/mvp_sim/episode_result", done + 1, timeout_s=30)[done])
    finally:
        assert process.stop() == 0, process.output()
    assert (result["seed"], result["steps"], result["held_steps"]) == (str(SEED), "4", "3")
    applied = [np.append(motion[0], 1.0), np.append(motion[1], 1.0),  # the gripper holds its last command
               np.append(np.zeros(6), 0.5), np.append(np.zeros(6), 0.5)]  # the arm's hold zeroes the motion
    assert_matches_reference(peer, reference, SEED, applied, first=first)


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_a_compressed_image_decodes_through_the_contract_to_the_simulations_pixels(reference, image_format) -> None:
    """PNG gives the simulator's image exactly; JPEG approximately, colours in place."""
    environment, _ = reference
    contract = yaml.safe_load(PANDA_CONTRACT.read_text())
    contract["observations"] = {"agentview_image": {
        "type": "sensor_msgs/msg/CompressedImage", "topic": "/agentview/image_raw/compressed",
        "image": {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "encoding": "rgb8"}}}
    contract = Contract.from_dict(contract)
    observation = environment.reset(seed=SEED)
    messages = ContractMessages(contract, observation, [], image_format).build(observation, Time(nanoseconds=5).to_msg())
    message = messages["/agentview/image_raw/compressed"]
    assert message.format == f"rgb8; {image_format} compressed bgr8" and stamp_ns(message.header.stamp) == 5
    decoded = contract.observations["agentview_image"].extract(message).astype(int)
    simulated = observation["agentview_image"].astype(int)
    if image_format == "png":
        np.testing.assert_array_equal(decoded, simulated)
    else:
        error = np.abs(decoded - simulated).mean()
        assert 0 < error < 3 < np.abs(decoded - simulated[..., ::-1]).mean(), error


def test_an_unknown_compressed_image_format_is_refused(files, capsys) -> None:
    assert mvp_main(["sim-node", "--checkpoint", str(files["checkpoint"]), "--contract", str(PANDA_CONTRACT),
                     "--ros-args", "-p", "compressed_image_format:=bmp"]) == 2
    assert "parameter 'compressed_image_format' must be one of 'png', 'jpeg'; got 'bmp'" in capsys.readouterr().err


class RecordingEnv:
    """Passes everything to a SimEnv and keeps the actions `run_episode` applies."""

    def __init__(self, environment) -> None:
        self.environment = environment
        self.actions: list[np.ndarray] = []

    def reset(self, seed=None):
        self.actions = []
        return self.environment.reset(seed=seed)

    def step(self, action):
        self.actions.append(np.array(action))
        return self.environment.step(action)

    def render(self, *args):
        return self.environment.render(*args)


def offline_actions(checkpoint: Path, seed: int, steps: int, best_of: int = 1) -> list[np.ndarray]:
    """What `mvp eval --seed SEED --temporal-ensemble` (the policy node's default) applies in `steps` steps of
    its first episode."""
    policy = Policy.load(checkpoint, device="cpu", best_of=best_of)
    environment = build_env(policy.info.env_args, seed, offscreen_render=False)
    try:
        recording = RecordingEnv(environment)
        run_episode(recording, policy, seed, steps, ChunkExecutor(policy.horizon, temporal_ensemble=True))
        return recording.actions
    finally:
        environment.close()


def with_critic(directory: Path) -> Path:
    """The tiny policy with an untrained critic beside it: some critic's argmax, as the node must execute it."""
    checkpoint = write_tiny_checkpoint(directory, contract=PANDA_SIM_CONTRACT)
    info = read_checkpoint_info(checkpoint)
    torch.manual_seed(1)
    save_critic(checkpoint, ChunkCritic(info.config, info.normalization, CriticConfig(hidden_dim=32, depth=1)))
    return checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("candidates, runs", [(1, 2), (8, 1)], ids=["one-step", "best-of-8"])
def test_closed_loop_equals_the_offline_loop_and_survives_a_simulation_restart(request, tmp_path, env, files, peer,
                                                                               candidates, runs) -> None:
    steps = 12
    checkpoint = files["checkpoint"] if candidates == 1 else with_critic(tmp_path / "with_critic")
    policy = NodeProcess(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(PANDA_CONTRACT),
                          "--ros-args", "-p", "device:=cpu", "-p", "use_sim_time:=true", "-p", f"num_candidates:={candidates}",
                          "-p", "reset_topic:=/mvp_sim/episode_start", "-p", "inference_timeout_s:=5.0",
                          # between episodes the lockstep clock stands still; no safe action may slip in
                          "-p", "watchdog_timeout_s:=60.0"],
                         env, tmp_path / "policy.log")
    sim_arguments = ["sim-node", "--checkpoint", str(checkpoint), "--contract", str(PANDA_CONTRACT),
                     "--seed", "3", "--ros-args", "-p", f"max_steps:={steps}"]
    try:
        for restart in range(runs):
            sim = NodeProcess(sim_arguments, env, tmp_path / f"sim{restart}.log")
            request.addfinalizer(lambda process=sim: process.alive() and process.stop())
            peer.wait_for(lambda: peer.node.count_subscribers("/clock") and peer.node.count_publishers("/clock")
                          and peer.node.count_publishers("/policy/command") and peer.node.count_subscribers("/eef_pose"),
                          120, "the simulation and policy nodes")
            time.sleep(1.0)
            started = time.monotonic()
            done = len(peer.messages("/mvp_sim/episode_result"))
            assert peer.call(Trigger, "/mvp_sim/reset").success
            result = values_of(peer.wait_for_messages("/mvp_sim/episode_result", done + 1, timeout_s=60)[done])
            assert (result["seed"], result["steps"], result["held_steps"]) == ("3", str(steps), "0")
            episode_began = [arrived for arrived, _ in peer.received["/mvp_sim/episode_start"] if arrived >= started][0]
            ros_commands = [np.array(msg.data) for msg in peer.messages("/policy/command", episode_began)][:steps]
            expected = offline_actions(checkpoint, seed=3, steps=steps, best_of=candidates)
            np.testing.assert_array_equal(np.stack(ros_commands), np.stack(expected))
            assert sim.stop() == 0, sim.output()
        assert policy.alive()
        if runs > 1:
            assert "clock jumped back" in policy.output()  # the restarted simulation's clock began again
        if candidates > 1:
            assert f"best of {candidates} by its critic" in policy.output()
    finally:
        assert policy.stop() == 0, policy.output()


@pytest.mark.slow
def test_free_run_steps_at_the_control_rate_and_holds_without_commands(tmp_path, env, files, peer) -> None:
    sim = NodeProcess(["sim-node", "--checkpoint", str(files["checkpoint"]), "--contract", str(PANDA_CONTRACT),
                       "--ros-args", "-p", "lockstep:=false", "-p", "autostart:=true", "-p", "max_steps:=40"],
                      env, tmp_path / "sim.log")
    try:
        done = len(peer.messages("/mvp_sim/episode_result"))
        result = peer.wait_for_messages("/mvp_sim/episode_result", done + 1, timeout_s=120)[done]
    finally:
        assert sim.stop() == 0, sim.output()
    values = values_of(result)
    assert (values["steps"], values["held_steps"]) == ("40", "40")
    arrivals = [arrived for arrived, _ in peer.received["/clock"]][-40:]
    rate_hz = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 12 < rate_hz < 22, rate_hz  # 20 Hz on the wall clock


@pytest.mark.parametrize("change, message", [
    (lambda c: c["observations"].update(robot0_joint_torque={"type": "std_msgs/msg/Float64MultiArray",
                                                             "topic": "/torque", "size": 7}),
     "contract key 'robot0_joint_torque' is not an observation of the simulation"),
    (lambda c: c["observations"]["robot0_joint_pos"]["joints"].append("robot0_joint9"),
     "contract key 'robot0_joint_pos' reads joints ['robot0_joint9'], which the simulated robot lacks"),
    (lambda c: c["observations"]["object"].update(size=9),
     "contract key 'object' has shape (9,), the simulation's object has (10,)"),
    (lambda c: c["action"].update(names=["a", "b"], limits={"lower": [-1, -1], "upper": [1, 1]},
                                  safe_action={"rule": "hold"}),
     "the simulation takes 7-dim commands as Float64MultiArray or JointTrajectory; the contract's action is"
     " std_msgs/msg/Float64MultiArray with 2 names"),
])
def test_a_contract_the_simulation_cannot_serve_is_named(tmp_path, files, capsys, change, message) -> None:
    contract = yaml.safe_load(PANDA_CONTRACT.read_text())
    change(contract)
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(contract))
    assert mvp_main(["sim-node", "--checkpoint", str(files["checkpoint"]), "--contract", str(path)]) == 2
    assert f"mvp sim-node: error: {message}" in capsys.readouterr().err


def test_no_environment_source_is_an_error(capsys) -> None:
    assert mvp_main(["sim-node", "--contract", str(PANDA_CONTRACT)]) == 2
    assert "no environment: set parameter 'checkpoint' or 'dataset'" in capsys.readouterr().err
