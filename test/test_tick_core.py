"""The policy node's safety rules on its ROS-free tick core, step by step: an injected steady clock,
node-clock times passed in, real contracts, real ROS message objects, the real chunk executor and
command guard. No sleeps, no timing luck.

The policies here are scripted (their chunks follow from the observation they are given), so each
test knows which inference a command came from.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mvp_ros.data.contract import Contract
from mvp_ros.tick.commands import Command, chunk_points
from mvp_ros.tick.core import build_tick_core

PERIOD_NS = 50_000_000  # 20 Hz
MS = 1_000_000
JOINTS = ["j1", "j2"]
MAX_DELTA = 0.1


def contract_dict(action_names: list[str], *, zero: list[str] = (), initial: dict | None = None,
                  max_delta: list[float] | None = None) -> dict:
    safe = {"rule": "hold", "zero": list(zero)} if zero else {"rule": "hold"}
    if initial:
        safe["initial"] = initial
    action = {"type": "std_msgs/msg/Float64MultiArray", "topic": "/command", "names": action_names,
              "limits": {"lower": [-3.0] * len(action_names), "upper": [3.0] * len(action_names)},
              "safe_action": safe}
    if max_delta is not None:
        action["max_delta"] = max_delta
    return {
        "contract_version": 1, "robot": "test_arm", "control_rate_hz": 20,
        "observations": {
            "joint_pos": {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states", "joints": JOINTS,
                          "align": {"rule": "asof", "tolerance_s": 0.1}},
            "target": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/target", "size": 2, "stamp": "receive",
                       "align": {"rule": "asof", "tolerance_s": 0.1}},
        },
        "action": action,
    }


POSITION = contract_dict(["j1", "j2", "gripper"], initial={"gripper": 0.0}, max_delta=[MAX_DELTA, MAX_DELTA, 0.5])
DELTA = contract_dict(["dx", "dy", "gripper"], zero=["dx", "dy"], initial={"gripper": -1.0}, max_delta=[0.2, 0.2, 2.0])


class TargetPolicy:
    """Chunk step i is [target + i * 0.01, gripper 1]: each chunk shows which observation it came from.
    `fail_next`: the next chunk is NaN; `slow_s`: each call advances the steady clock that long."""

    obs_keys = ["target"]
    horizon = 4

    def __init__(self, clock: SteadyClock) -> None:
        self.clock = clock
        self.calls: list[np.ndarray] = []
        self.fail_next = False
        self.slow_s = 0.0

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.clock.advance(self.slow_s)
        target = obs["target"]
        self.calls.append(target.copy())
        if self.fail_next:
            self.fail_next = False
            return np.full((self.horizon, 3), np.nan)
        return chunk_for(target, self.horizon)


def chunk_for(target: np.ndarray, horizon: int = TargetPolicy.horizon) -> np.ndarray:
    return np.array([[target[0] + 0.01 * i, target[1] + 0.01 * i, 1.0] for i in range(horizon)])


class SteadyClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    """A core with a scripted policy, driven tick by tick on a simulated node clock."""

    def __init__(self, contract: dict, *, temporal_ensemble: bool = False, execute: int | None = None,
                 watchdog_s: float = 0.25, timeout_s: float = 0.05) -> None:
        self.contract = Contract.from_dict(contract)
        self.steady = SteadyClock()
        self.policy = TargetPolicy(self.steady)
        self.published: list[np.ndarray] = []
        self.commands: list[Command] = []
        self.logs: list[tuple[str, str]] = []
        self.core = build_tick_core(
            self.policy, self.policy.horizon, self.contract, self.contract.action, period_ns=PERIOD_NS,
            execute=execute, temporal_ensemble=temporal_ensemble, ensemble_decay=0.01, max_age_s=0.0,
            tick_timeout_s=timeout_s, watchdog_s=watchdog_s, publish=self.publish, steady=self.steady,
            log=lambda level, text: self.logs.append((level, text)),
        )
        self.now_ns = 10 * PERIOD_NS
        self.joints = np.zeros(2)
        self.target = np.zeros(2)

    def publish(self, command: Command) -> None:
        self.published.append(command.action)
        self.commands.append(command)

    def observe(self, joints: bool = True, target: bool = True) -> None:
        if joints and "/joint_states" in self.core.buffer.topics:  # subscribed only where joints are measured
            msg = JointState(name=JOINTS, position=self.joints.tolist())
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.now_ns, 1_000_000_000)
            assert self.core.observe("/joint_states", msg, self.now_ns) is None
        if target:
            assert self.core.observe("/target", Float64MultiArray(data=self.target.tolist()), self.now_ns) is None

    def tick(self, joints: bool = True, target: bool = True) -> np.ndarray | None:
        """One control period: samples of this instant arrive, then the timer fires; the command published, if any."""
        before = len(self.published)
        self.now_ns += PERIOD_NS
        self.steady.advance(PERIOD_NS / 1e9)
        self.observe(joints, target)
        self.core.timer(self.now_ns)
        return self.published[-1] if len(self.published) > before else None

    def silent_period(self) -> None:
        """One control period in which nothing arrives: the waiting tick of the previous one is given up."""
        self.now_ns += PERIOD_NS
        self.steady.advance(PERIOD_NS / 1e9)
        self.core.timer(self.now_ns)


def active(rig: Rig) -> Rig:
    rig.core.activate(seed=0, now_ns=rig.now_ns)
    return rig


# ---- commands start where the robot is -----------------------------------------------------------

def test_the_first_command_of_a_far_off_policy_ramps_in_from_the_measured_position() -> None:
    rig = active(Rig(POSITION))
    rig.joints = np.array([0.5, -0.5])
    rig.target = np.array([2.0, -2.0])  # the policy asks for 1.5 rad away at once
    for _ in range(25):
        command = rig.tick()
        assert np.all(np.abs(command[:2] - rig.joints) <= MAX_DELTA + 1e-12)  # never more than max_delta from the robot
        rig.joints = command[:2].copy()  # the robot follows
    np.testing.assert_allclose(command[:2], [2.0, -2.0], atol=0.05)  # it arrives, max_delta per tick


def test_a_command_never_lands_more_than_max_delta_from_a_lagging_robot() -> None:
    rig = active(Rig(POSITION))
    rig.target = np.array([2.0, 2.0])
    for _ in range(5):
        command = rig.tick()  # the robot does not move at all
        np.testing.assert_allclose(command[:2], [MAX_DELTA, MAX_DELTA])


def test_the_first_delta_command_is_limited_from_the_safe_action() -> None:
    rig = active(Rig(DELTA))
    rig.target = np.array([2.0, -2.0])
    first = rig.tick()
    np.testing.assert_allclose(first, [0.2, -0.2, 1.0])  # from zero deltas, gripper from its initial -1 (+2.0)


# ---- a safe action always exists, and something is always published ------------------------------

def test_after_reset_then_stop_the_safe_action_is_published() -> None:
    rig = active(Rig(DELTA))
    rig.target = np.array([0.1, 0.1])
    rig.tick()
    rig.core.begin_episode(seed=1, now_ns=rig.now_ns)  # ~/reset: the last command is forgotten
    rig.core.deactivate("deactivated", rig.now_ns)  # ~/stop
    np.testing.assert_array_equal(rig.published[-1], [0.0, 0.0, -1.0])


def test_position_targets_hold_the_measured_position_when_nothing_was_sent() -> None:
    rig = active(Rig(POSITION))
    rig.joints = np.array([0.3, -0.2])
    rig.observe()
    rig.core.begin_episode(seed=1, now_ns=rig.now_ns)
    rig.core.deactivate("deactivated", rig.now_ns)
    np.testing.assert_array_equal(rig.published[-1], [0.3, -0.2, 0.0])


def test_with_nothing_measured_a_position_hold_withholds_and_reports_an_error() -> None:
    rig = active(Rig(POSITION))
    rig.silent_period()
    rig.silent_period()  # the first tick is given up: stale
    assert rig.published == []
    period = rig.core.take_period()
    assert period.level == "error" and period.events["withheld"] >= 1
    assert any(level == "error" and "no safe action" in text for level, text in rig.logs)


def test_the_watchdog_publishes_the_safe_action_when_no_tick_runs() -> None:
    rig = active(Rig(DELTA, watchdog_s=0.25))
    rig.target = np.array([0.1, 0.1])
    rig.tick()
    rig.core.take_period()
    rig.steady.advance(0.2)
    rig.core.watchdog(rig.now_ns)  # within the deadline: nothing
    assert len(rig.published) == 1
    rig.steady.advance(0.1)  # the clock stopped (a dead simulation): no timer, no tick
    rig.core.watchdog(rig.now_ns)
    np.testing.assert_allclose(rig.published[-1], [0.0, 0.0, rig.published[0][2]])
    period = rig.core.take_period()
    assert period.level == "error" and period.events["watchdog"] == 1 and "watchdog" in period.message()
    rig.steady.advance(0.26)
    rig.core.watchdog(rig.now_ns)  # and again at every deadline while it lasts
    assert len(rig.published) == 3


def test_the_watchdog_is_quiet_while_inactive() -> None:
    rig = Rig(DELTA, watchdog_s=0.25)
    rig.steady.advance(10)
    rig.core.watchdog(rig.now_ns)
    assert rig.published == []


def test_the_contract_must_give_a_safe_value_for_every_dim() -> None:
    with pytest.raises(ValueError, match=r"no value for \['gripper'\] before a first command"):
        Rig(contract_dict(["dx", "dy", "gripper"], zero=["dx", "dy"]))
    with pytest.raises(ValueError, match="position targets of measured joints.*max_delta"):
        Rig(contract_dict(["j1", "j2"]))


# ---- no stale plans ----------------------------------------------------------------------------

def hold_by_stale_period(rig: Rig) -> None:
    for _ in range(20):  # a 1 s dropout of /target
        rig.tick(target=False)


def hold_by_nan(rig: Rig) -> None:
    rig.policy.fail_next = True
    rig.core.chunks.reset()  # a new chunk is due this tick
    rig.tick()


def hold_by_overrun(rig: Rig) -> None:
    rig.policy.slow_s = 0.2
    rig.core.chunks.reset()
    rig.tick()
    rig.policy.slow_s = 0.0


def hold_by_reset(rig: Rig) -> None:
    rig.core.begin_episode(seed=3, now_ns=rig.now_ns)


def hold_by_deactivate(rig: Rig) -> None:
    rig.core.deactivate("deactivated", rig.now_ns)
    rig.core.activate(seed=0, now_ns=rig.now_ns)


def hold_by_clock_jump(rig: Rig) -> None:
    rig.now_ns -= 5 * PERIOD_NS
    rig.core.clock_jumped_back(seed=0, now_ns=rig.now_ns)


def hold_by_watchdog(rig: Rig) -> None:
    rig.steady.advance(1.0)
    rig.core.watchdog(rig.now_ns)


HOLDS = [hold_by_stale_period, hold_by_nan, hold_by_overrun, hold_by_reset, hold_by_deactivate, hold_by_clock_jump,
         hold_by_watchdog]
EXECUTION = {"open_loop": {}, "partial": {"execute": 2}, "ensemble": {"temporal_ensemble": True}}


@pytest.mark.parametrize("execution", list(EXECUTION))
@pytest.mark.parametrize("hold", HOLDS, ids=[hold.__name__ for hold in HOLDS])
def test_after_any_hold_the_first_command_comes_from_a_fresh_inference(hold, execution) -> None:
    rig = active(Rig(DELTA, **EXECUTION[execution]))
    rig.target = np.array([0.05, 0.05])
    for _ in range(3):
        rig.tick()  # chunks planned for target 0.05 are in the executor (and ensemble buffer)
    hold(rig)
    rig.target = np.array([-0.07, 0.03])  # the world after the hold
    calls = len(rig.policy.calls)
    command = rig.tick()
    assert command is not None
    assert len(rig.policy.calls) == calls + 1  # an inference ran for this command...
    np.testing.assert_array_equal(rig.policy.calls[-1], rig.target)  # ...on the observation taken after the hold
    np.testing.assert_allclose(command[:2], chunk_for(rig.target)[0][:2])  # nothing planned before the hold is averaged in


def test_samples_taken_before_a_hold_do_not_end_it() -> None:
    rig = active(Rig(DELTA))
    rig.target = np.array([0.05, 0.05])
    rig.tick()
    rig.policy.fail_next = True
    rig.core.chunks.reset()
    rig.tick()  # NaN: hold; the /target sample of this tick was taken before the hold began
    calls = len(rig.policy.calls)
    # the next tick has a fresh joint state but no new /target: the old target sample is within its
    # age limit, yet it was taken before the hold, so the tick waits and then holds again
    rig.tick(target=False)
    rig.silent_period()
    assert len(rig.policy.calls) == calls
    np.testing.assert_array_equal(rig.published[-1][:2], [0.0, 0.0])
    assert rig.core.hold_reason is not None
    assert rig.tick() is not None and rig.core.hold_reason is None  # a new sample ends it


# ---- diagnostics that don't miss events -----------------------------------------------------------

def test_one_stale_tick_makes_its_whole_period_warn() -> None:
    rig = active(Rig(DELTA))
    rig.target = np.array([0.1, 0.1])
    rig.tick()
    rig.core.take_period()
    for _ in range(3):
        rig.tick(target=False)  # /target is older than its 0.1 s limit at the third tick: one stale tick...
    for _ in range(15):
        rig.tick()  # ...then a healthy rest of the period
    period = rig.core.take_period()
    assert period.level == "warn"
    assert period.events["stale_ticks"] == 1 and period.stale_keys == {"target"}
    assert "stale_ticks 1" in period.message() and "target" in period.message()
    rig.tick()
    assert rig.core.take_period().level == "ok"


def test_repeated_log_lines_are_throttled() -> None:
    rig = active(Rig(DELTA))
    for _ in range(20):  # one second of holding with no data at all
        rig.silent_period()
    holds = [text for level, text in rig.logs if text.startswith("holding")]
    assert rig.core.totals["holds"] >= 19 and len(holds) == 1


def test_ensemble_decay_must_be_finite() -> None:
    from mvp_ros.policy.chunks import ChunkExecutor

    for decay in (math.nan, math.inf, -0.1):
        with pytest.raises(ValueError, match="ensemble_decay"):
            ChunkExecutor(4, temporal_ensemble=True, ensemble_decay=decay)


# ---- observation floods ----------------------------------------------------------------------------

def test_a_flood_is_read_at_most_once_per_quarter_period_and_the_tick_reads_the_newest() -> None:
    rig = active(Rig(DELTA))
    decoded: list[str] = []
    rig.core.decode = lambda topic, msg: decoded.append(topic) or msg
    rig.target = np.array([0.1, 0.1])
    rig.tick()
    decoded.clear()
    for i in range(500):  # 10 kHz for 50 ms
        rig.steady.advance(0.0001)
        rig.core.observe("/target", Float64MultiArray(data=[0.0001 * i, 0.0]), rig.now_ns)
    assert len(decoded) <= 4  # one read per 12.5 ms at most
    assert rig.core.superseded["/target"] >= 495
    rig.core.chunks.reset()  # a new chunk is due: the next tick infers
    assert rig.tick(target=False) is not None
    np.testing.assert_allclose(rig.policy.calls[-1], [0.0499, 0.0])  # the newest message, read at the tick


def test_a_message_that_cannot_be_decoded_is_rejected_as_malformed() -> None:
    rig = active(Rig(DELTA))

    def decode(topic: str, data):
        raise ValueError("truncated CDR")

    rig.core.decode = decode
    assert rig.core.observe("/target", b"\x00\x01", rig.now_ns) == "malformed"
    assert rig.core.buffer.rejects["/target", "malformed"] == 1
    assert "truncated CDR" in rig.core.buffer.last_reject["/target"]


# ---- joints from several publishers, the action over several outputs -------------------------------

def split_contract() -> dict:
    """The arm joints j1, j2 and the gripper joint from two publishers of /joint_states; the arm's
    command held (its measured position) and the gripper's a constant when the node holds."""
    contract = contract_dict(["j1", "j2", "gripper"])
    contract["observations"]["joint_pos"] = {
        "type": "sensor_msgs/msg/JointState", "joints": [*JOINTS, "gripper"],
        "sources": [{"topic": "/joint_states", "joints": JOINTS}, {"topic": "/joint_states", "joints": ["gripper"]}],
        "align": {"rule": "asof", "tolerance_s": 0.1}}
    contract["action"] = {"outputs": [
        {"type": "trajectory_msgs/msg/JointTrajectory", "topic": "/arm", "names": JOINTS,
         "limits": {"lower": [-3, -3], "upper": [3, 3]}, "max_delta": [MAX_DELTA, MAX_DELTA]},
        {"type": "std_msgs/msg/Float64MultiArray", "topic": "/gripper", "names": ["gripper"],
         "limits": {"lower": [0], "upper": [1]}, "max_delta": [0.5], "safe_action": {"rule": "constant", "value": [0.25]}},
    ]}
    return contract


def publish_joints(rig: Rig, names: list[str], positions: list[float]) -> str | None:
    msg = JointState(name=names, position=positions)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(rig.now_ns, 1_000_000_000)
    return rig.core.observe("/joint_states", msg, rig.now_ns)


def test_each_joint_source_is_checked_for_staleness_on_its_own() -> None:
    rig = active(Rig(split_contract(), timeout_s=1.0))
    for _ in range(2):  # the gripper driver is silent: its source is stale, the arm's is not
        rig.now_ns += PERIOD_NS
        publish_joints(rig, JOINTS, [0.5, -0.5])
        rig.core.observe("/target", Float64MultiArray(data=[2.0, 2.0]), rig.now_ns)
        rig.core.timer(rig.now_ns)
    assert rig.core.stale_keys == ["joint_pos[1]"]
    # Holding: the arm where its source measures it, the gripper's constant
    np.testing.assert_array_equal(rig.published[-1], [0.5, -0.5, 0.25])
    assert rig.core.take_period().events["withheld"] == 0
    rig.now_ns += PERIOD_NS
    rig.steady.advance(PERIOD_NS / 1e9)
    publish_joints(rig, JOINTS, [0.5, -0.5])
    assert publish_joints(rig, ["gripper"], [0.3]) is None  # right after the arm's: read, not superseded
    rig.core.observe("/target", Float64MultiArray(data=[2.0, 2.0]), rig.now_ns)
    rig.core.timer(rig.now_ns)
    assert rig.core.superseded["/joint_states"] == 0
    np.testing.assert_allclose(rig.published[-1], [0.5 + MAX_DELTA, -0.5 + MAX_DELTA, 0.75])  # gripper: 0.25 + 0.5
    np.testing.assert_array_equal(rig.core.buffer.observation(["joint_pos"])["joint_pos"], [0.5, -0.5, 0.3])


def test_a_message_with_none_of_a_topics_joints_is_rejected() -> None:
    rig = active(Rig(split_contract()))
    assert publish_joints(rig, ["conveyor"], [1.0]) == "malformed"
    assert "carries none of the joints of ['joint_pos[0]', 'joint_pos[1]']" in rig.core.buffer.last_reject["/joint_states"]


def test_a_hold_sends_each_outputs_own_safe_action() -> None:
    rig = active(Rig(split_contract()))
    rig.target = np.array([0.55, -0.45])
    for _ in range(3):
        rig.now_ns += PERIOD_NS
        rig.steady.advance(PERIOD_NS / 1e9)
        publish_joints(rig, JOINTS, [0.5, -0.5])
        publish_joints(rig, ["gripper"], [0.3])
        rig.core.observe("/target", Float64MultiArray(data=rig.target.tolist()), rig.now_ns)
        rig.core.timer(rig.now_ns)
    sent = rig.published[-1].copy()
    rig.core.deactivate("deactivated", rig.now_ns)
    np.testing.assert_array_equal(rig.published[-1], [sent[0], sent[1], 0.25])  # the arm holds, the gripper's constant


# ---- whole-chunk trajectories ------------------------------------------------------------------------

def chunk_contract() -> dict:
    contract = contract_dict(["j1", "j2", "gripper"], initial={"gripper": 0.0}, max_delta=[MAX_DELTA, MAX_DELTA, 0.5])
    contract["action"] |= {"type": "trajectory_msgs/msg/JointTrajectory", "trajectory": {"mode": "chunk"}}
    return contract


def test_a_chunk_output_gets_the_rest_of_the_chunk_limited_and_stamped_with_the_tick() -> None:
    rig = active(Rig(chunk_contract()))
    rig.joints = np.array([0.5, -0.5])
    rig.target = np.array([0.52, -0.48])
    command = rig.tick() is not None and rig.commands[-1]
    assert command.stamp_ns == rig.now_ns  # the tick's time: the observation's
    assert command.plan.shape == (TargetPolicy.horizon - 1, 3)  # open loop: the chunk's other three actions
    np.testing.assert_allclose(command.plan[:, :2], chunk_for(rig.target)[1:, :2])
    rig.target = np.array([2.0, 2.0])
    rig.core.chunks.reset()
    command = rig.tick() is not None and rig.commands[-1]
    steps = np.diff(np.vstack([command.action, command.plan]), axis=0)
    assert np.all(np.abs(steps[:, :2]) <= MAX_DELTA + 1e-12)  # each planned point within max_delta of the one before
    rig.core.deactivate("deactivated", rig.now_ns)
    assert rig.commands[-1].plan.shape == (0, 3)  # a hold sends no plan


def test_chunk_points_are_a_period_apart_with_velocities_and_due_points_dropped() -> None:
    period = PERIOD_NS
    command = Command(np.array([0.0, 1.0]), 1_000 * period, np.array([[0.1, 1.0], [0.3, 1.0], [0.6, 1.0]]))
    points = chunk_points(command, slice(0, 1), period, now_ns=command.stamp_ns + period // 2 - 1)
    assert points.times_ns == [period, 2 * period, 3 * period, 4 * period]
    np.testing.assert_allclose(points.positions[:, 0], [0.0, 0.1, 0.3, 0.6])
    np.testing.assert_allclose(points.velocities[:, 0], [2.0, 3.0, 5.0, 0.0])  # rad/s; the last point stops
    late = chunk_points(command, slice(0, 2), period, now_ns=command.stamp_ns + period + period // 2 + 1)  # two due soon
    assert late.times_ns == [3 * period, 4 * period]
    np.testing.assert_allclose(late.positions, [[0.3, 1.0], [0.6, 1.0]])
    very_late = chunk_points(command, slice(0, 2), period, now_ns=command.stamp_ns + 9 * period)
    assert very_late.times_ns == [4 * period]  # the last point stays, the arm goes there


# ---- relative position targets ----------------------------------------------------------------------

def test_a_relative_output_sends_the_measured_position_plus_the_offset_and_holds_at_the_measured() -> None:
    contract = split_contract()
    contract["observations"]["joint_pos"] = {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states",
                                             "joints": JOINTS, "align": {"rule": "asof", "tolerance_s": 0.1}}
    contract["action"]["outputs"][0] |= {"relative_to": "joint_pos", "safe_action": {"rule": "hold", "zero": JOINTS}}
    rig = active(Rig(contract))
    assert rig.core.guard.measured == []  # offsets are not position targets
    rig.joints = np.array([0.5, -0.5])
    rig.target = np.array([0.05, -0.25])  # offsets: the second beyond max_delta
    np.testing.assert_allclose(rig.tick(), [0.55, -0.6, 0.75])  # measured + offset limited to 0.1; gripper 0.25 + 0.5
    rig.joints = np.array([0.6, -0.6])  # the arm moved: the next offset adds to where it is now
    # the chunk's next step, offsets 0.06 and -0.24, the latter within max_delta of the last offset -0.1
    np.testing.assert_allclose(rig.tick()[:2], [0.66, -0.8])
    rig.core.deactivate("deactivated", rig.now_ns)
    np.testing.assert_allclose(rig.published[-1], [0.6, -0.6, 0.25])  # a hold stays where measured; gripper constant
