"""The tick core's observation buffer on its own: which messages it keeps, which it rejects and why,
and when a key is stale. Real contracts and real ROS message objects; every time is passed in."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mvp_ros.data.contract import Contract
from mvp_ros.tick.observations import ObservationBuffer

MS = 1_000_000
PERIOD_NS = 50 * MS
T0 = 10_000 * MS  # the node's clock at the first message
CONTRACT = Contract.from_dict({
    "contract_version": 1, "robot": "test_arm", "control_rate_hz": 20,
    "observations": {
        "joint_pos": {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states", "joints": ["j1", "j2"],
                      "align": {"rule": "asof", "tolerance_s": 0.1}},
        "target": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/target", "size": 2, "stamp": "receive",
                   "align": {"rule": "asof", "tolerance_s": 0.1}},
    },
    "action": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/command", "names": ["dx", "dy"],
               "limits": {"lower": [-1.0, -1.0], "upper": [1.0, 1.0]}, "safe_action": {"rule": "hold", "zero": ["dx", "dy"]}},
})


def joint_state(names: list[str], positions: list[float], stamp_ns: int) -> JointState:
    msg = JointState(name=names, position=positions)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


@pytest.fixture
def buffer() -> ObservationBuffer:
    return ObservationBuffer(dict(CONTRACT.observations), PERIOD_NS)


def test_a_message_is_read_through_the_contract_in_its_joint_order(buffer) -> None:
    assert buffer.accept("/joint_states", joint_state(["j2", "extra", "j1"], [0.2, 9.0, 0.1], T0), T0, T0, 1.0) is None
    np.testing.assert_array_equal(buffer.observation(["joint_pos"])["joint_pos"], [0.1, 0.2])
    assert buffer.samples["joint_pos"].stamp_ns == T0 and buffer.samples["joint_pos"].arrived_s == 1.0
    # A receive-stamped key takes the reception time, whatever the message says.
    assert buffer.accept("/target", Float64MultiArray(data=[0.5, -0.5]), T0 + 3 * MS, T0 + 3 * MS, 1.003) is None
    assert buffer.samples["target"].stamp_ns == T0 + 3 * MS
    assert buffer.latest_arrival_s() == 1.003


@pytest.mark.parametrize("message, reason, what", [
    (joint_state(["j1", "j2"], [float("nan"), 0.2], T0 + MS), "non_finite", "NaN"),
    (joint_state(["j1"], [0.1], T0 + MS), "malformed", "j2"),
    (joint_state(["gripper"], [0.1], T0 + MS), "malformed", "lacks joints ['j1', 'j2']"),
    (joint_state(["j1", "j2"], [0.3, 0.4], T0 - MS), "out_of_order", "before the held sample"),
    (joint_state(["j1", "j2"], [0.3, 0.4], T0 + 2 * PERIOD_NS), "future_stamp", "ahead of the clock"),
])
def test_a_bad_message_is_dropped_whole_counted_by_reason_and_the_held_sample_stays(buffer, message, reason, what) -> None:
    assert buffer.accept("/joint_states", joint_state(["j1", "j2"], [0.1, 0.2], T0), T0, T0, 1.0) is None
    assert buffer.accept("/joint_states", message, T0 + MS, T0 + MS, 1.001) == reason
    assert buffer.rejects == {("/joint_states", reason): 1}
    assert what in buffer.last_reject["/joint_states"]
    np.testing.assert_array_equal(buffer.observation(["joint_pos"])["joint_pos"], [0.1, 0.2])
    assert buffer.samples["joint_pos"].stamp_ns == T0


def test_a_key_is_stale_without_a_sample_past_its_age_limit_or_taken_before_a_hold(buffer) -> None:
    limit_ns = round(CONTRACT.observations["joint_pos"].age_limit_s() * 1e9)
    assert buffer.stale_keys(T0) == ["joint_pos", "target"]  # nothing yet
    buffer.accept("/joint_states", joint_state(["j1", "j2"], [0.1, 0.2], T0), T0, T0, 1.0)
    buffer.accept("/target", Float64MultiArray(data=[0.5, -0.5]), T0, T0, 1.0)
    assert buffer.stale_keys(T0 + limit_ns) == []
    assert buffer.ages_s(T0 + limit_ns) == {"joint_pos": limit_ns / 1e9, "target": limit_ns / 1e9}
    assert buffer.stale_keys(T0 + limit_ns + 1) == ["joint_pos", "target"]
    # After a hold that began at T0 + 1 ns, a sample taken before it no longer counts as fresh.
    assert buffer.stale_keys(T0 + MS, taken_since_ns=T0 + 1) == ["joint_pos", "target"]
    buffer.clear()
    assert buffer.stale_keys(T0) == ["joint_pos", "target"]


def test_max_age_caps_every_limit(buffer) -> None:
    capped = ObservationBuffer(dict(CONTRACT.observations), PERIOD_NS, max_age_s=0.01)
    for each in (buffer, capped):
        each.accept("/joint_states", joint_state(["j1", "j2"], [0.1, 0.2], T0), T0, T0, 1.0)
    assert "joint_pos" not in buffer.stale_keys(T0 + 20 * MS)
    assert "joint_pos" in capped.stale_keys(T0 + 20 * MS)
