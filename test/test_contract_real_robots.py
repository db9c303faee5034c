"""Contract fields for real robots: joint keys from several sources, the action over several outputs,
image crop and resize; their validation errors; and the contracts that existed before them (the
shipped configs and those stored in the shipped models) parse and mean what they meant."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from mvp_ros.data.contract import Contract, ContractError, MessageError, load_contract
from mvp_ros.data.contract_diff import compare_contracts

REPO = Path(__file__).resolve().parents[1]
TYPES = get_typestore(Stores.ROS2_KILTED).types
ARM, GRIPPER = ["shoulder", "elbow"], ["finger"]

SPLIT = {
    "contract_version": 1, "robot": "arm_and_gripper", "control_rate_hz": 10,
    "observations": {
        "joint_pos": {"type": "sensor_msgs/msg/JointState", "joints": ["finger", "shoulder", "elbow"],
                      "sources": [{"topic": "/joint_states", "joints": ARM}, {"topic": "/joint_states", "joints": GRIPPER}],
                      "align": {"rule": "asof", "tolerance_s": 0.2}, "max_age_s": 0.3},
    },
    "action": {"outputs": [
        {"type": "trajectory_msgs/msg/JointTrajectory", "topic": "/arm/joint_trajectory", "names": ARM,
         "limits": {"lower": [-1, -2], "upper": [1, 2]}, "max_delta": [0.1, 0.1]},
        {"type": "std_msgs/msg/Float64MultiArray", "topic": "/gripper/commands", "names": GRIPPER,
         "limits": {"lower": [0], "upper": [0.04]}, "safe_action": {"rule": "constant", "value": [0.04]}},
    ]},
}


def joint_state(names: list[str], positions: list[float]):
    header = TYPES["std_msgs/msg/Header"](stamp=TYPES["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="")
    return TYPES["sensor_msgs/msg/JointState"](header=header, name=names, position=np.array(positions),
                                              velocity=np.zeros(0), effort=np.zeros(0))


def test_a_key_from_two_publishers_reads_each_source_and_assembles_in_the_keys_order() -> None:
    contract = Contract.from_dict(SPLIT)
    key = contract.observations["joint_pos"]
    arm, gripper = key.streams()
    assert (arm.key, arm.topic, arm.joints, gripper.key, gripper.joints) == (
        "joint_pos[0]", "/joint_states", ("shoulder", "elbow"), "joint_pos[1]", ("finger",))
    assert arm.age_limit_s() == gripper.age_limit_s() == 0.2  # each source is checked against the key's limits
    arm_message, gripper_message = joint_state(["elbow", "shoulder"], [0.2, 0.1]), joint_state(["finger"], [0.03])
    assert arm.applies(arm_message) and not gripper.applies(arm_message) and gripper.applies(gripper_message)
    np.testing.assert_array_equal(key.assemble([arm.extract(arm_message), gripper.extract(gripper_message)]),
                                  [0.03, 0.1, 0.2])
    with pytest.raises(MessageError, match=r"joint_pos\[0\]: /joint_states JointState lacks joints \['elbow'\]"):
        arm.extract(joint_state(["shoulder"], [0.1]))  # some but not all of a source's joints
    assert contract.topics() == {"/joint_states": "sensor_msgs/msg/JointState",
                                 "/arm/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
                                 "/gripper/commands": "std_msgs/msg/Float64MultiArray"}


def test_the_action_over_two_outputs_has_each_outputs_limits_and_safe_action() -> None:
    action = Contract.from_dict(SPLIT).action
    assert action.names == ("shoulder", "elbow", "finger")
    np.testing.assert_array_equal(action.lower, [-1, -2, 0])
    np.testing.assert_array_equal(action.max_delta, [0.1, 0.1, np.inf])  # the gripper's output has none
    assert [output.key for output in action.streams()] == ["action[0]", "action[1]"]
    assert action.slices() == [slice(0, 2), slice(2, 3)]
    # hold for the arm (its measured position), constant for the gripper
    np.testing.assert_array_equal(action.safe_action(None, {"shoulder": 0.5, "elbow": -0.5}), [0.5, -0.5, 0.04])
    assert action.safe_action(None, {}) is None
    np.testing.assert_array_equal(action.safe_action(np.array([0.1, 0.2, 0.0])), [0.1, 0.2, 0.04])
    assert action.unsafe_dims_without_command(()) == ["shoulder", "elbow"]


def test_new_fields_round_trip_through_json() -> None:
    data = copy.deepcopy(SPLIT)
    data["observations"]["wrist"] = {
        "type": "sensor_msgs/msg/CompressedImage", "topic": "/wrist/image_raw/compressed",
        "image": {"width": 84, "height": 84, "encoding": "rgb8", "crop": {"x": 80, "y": 0, "width": 480, "height": 480},
                  "resize": "area"}}
    contract = Contract.from_dict(data)
    again = Contract.from_dict(json.loads(json.dumps(contract.to_dict())))
    assert again.to_dict() == contract.to_dict() and again.action == contract.action
    assert contract.to_dict()["observations"]["wrist"]["image"]["resize"] == "area"


def changed(path: list, value: object) -> dict:
    data = copy.deepcopy(SPLIT)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize("path, value, message", [
    (["observations", "joint_pos", "topic"], "/joint_states", "observations.joint_pos.sources: give either topic or"),
    (["observations", "joint_pos", "sources"], [{"topic": "/joint_states", "joints": ARM + GRIPPER}],
     "observations.joint_pos.sources: must list at least two sources"),
    (["observations", "joint_pos", "sources", 1, "joints"], ["finger", "elbow"],
     "observations.joint_pos.sources[1].joints: 'elbow' is also in sources[0]"),
    (["observations", "joint_pos", "sources", 1, "joints"], ["thumb"],
     "observations.joint_pos.sources[1].joints: 'thumb' is not one of the key's joints"),
    (["observations", "joint_pos", "sources", 0, "joints"], ["shoulder"],
     "observations.joint_pos.sources: no source publishes ['elbow']"),
    (["observations", "joint_pos", "sources", 0, "topic"], "joint_states",
     "observations.joint_pos.sources[0].topic: 'joint_states' must be an absolute topic name"),
    (["observations", "joint_pos", "sources", 0, "qos"], "x", "observations.joint_pos.sources[0]: unknown field(s) ['qos']"),
    (["action", "outputs", 1, "names"], ["elbow"], "action.outputs[1].names: 'elbow' is also a name of outputs[0]"),
    (["action", "outputs", 1, "topic"], "/arm/joint_trajectory",
     "action.outputs[1].topic: /arm/joint_trajectory is also the topic of outputs[0]"),
    (["action", "outputs"], [], "action.outputs: must list at least two outputs"),
    (["action", "names"], ARM, "action: unknown field(s) ['names']"),
    (["action", "outputs", 1, "type"], "geometry_msgs/msg/Twist",
     "action.outputs[1].type: 'geometry_msgs/msg/Twist' is not supported for actions"),
    (["action", "outputs", 1, "topic"], "/joint_states", "action.outputs[1].type: /joint_states is"
     " std_msgs/msg/Float64MultiArray here but sensor_msgs/msg/JointState for joint_pos[0]"),
])
def test_validation_names_the_offending_field(path, value, message) -> None:
    with pytest.raises(ContractError, match="^robot.yaml: ") as error:
        Contract.from_dict(changed(path, value), source="robot.yaml")
    assert message in str(error.value)


def test_crop_and_resize_are_validated() -> None:
    def image(**fields) -> dict:
        return changed(["observations", "wrist"], {"type": "sensor_msgs/msg/Image", "topic": "/cam",
                                                   "image": {"width": 8, "height": 8} | fields})

    with pytest.raises(ContractError, match="observations.wrist.image.resize: is 'cubic'; expected one of"):
        Contract.from_dict(image(resize="cubic"))
    with pytest.raises(ContractError, match="observations.wrist.image.crop.x: must be a non-negative integer"):
        Contract.from_dict(image(crop={"x": -1, "width": 4, "height": 4}))
    with pytest.raises(ContractError, match="observations.wrist.image.crop.width: missing"):
        Contract.from_dict(image(crop={"x": 1, "height": 4}))


@pytest.mark.parametrize("path", [*sorted((REPO / "models").glob("*/config.json")), REPO / "config" / "panda_sim_contract.yaml",
                                  REPO / "config" / "contract_example.yaml"], ids=lambda path: str(path.relative_to(REPO)))
def test_contracts_written_before_these_fields_keep_their_meaning(path: Path) -> None:
    """Stored contracts round-trip unchanged: no new field appears in them, and each key is read from
    its one topic and the action written to its one topic, as before."""
    if path.suffix == ".json":
        stored = json.loads(path.read_text())["contract"]
        contract = Contract.from_dict(stored, source=str(path))
        assert contract.to_dict() == stored
    else:
        contract = load_contract(path)
    assert all(len(spec.streams()) <= 1 for spec in contract.observations.values())
    assert contract.action.streams() == (contract.action,) and contract.action.slices() == [slice(0, len(contract.action.names))]
    text = json.dumps(contract.to_dict())
    assert not any(f'"{field}"' in text for field in ("sources", "outputs", "crop", "resize"))


@pytest.mark.parametrize("fields, message", [
    ({"relative_to": "wrist"}, "action.outputs[0].relative_to: 'wrist' is not a JointState observation key"),
    ({"relative_to": "joint_pos", "names": ["shoulder", "wrist_3"]},
     "action.outputs[0].relative_to: joint_pos does not measure ['wrist_3']"),
    ({"relative_to": "joint_pos"}, "action.outputs[0].safe_action.zero: a relative output holds by sending 0"),
    ({"relative_to": "joint_pos", "safe_action": {"rule": "constant", "value": [0.1, 0]}},
     "action.outputs[0].safe_action.value: a relative output's safe value is 0"),
    ({"relative_to": "joint_pos", "safe_action": {"rule": "hold", "zero": ARM}, "trajectory": {"mode": "chunk"}},
     "action.outputs[0].trajectory: a relative output cannot send its chunk ahead"),
])
def test_relative_outputs_are_validated(fields, message) -> None:
    data = changed(["action", "outputs", 0], SPLIT["action"]["outputs"][0] | fields)
    with pytest.raises(ContractError, match="^robot.yaml: ") as error:
        Contract.from_dict(data, source="robot.yaml")
    assert message in str(error.value)


def diff_of(change) -> tuple[list[str], list[str]]:
    deployed = copy.deepcopy(SPLIT)
    change(deployed)
    diff = compare_contracts(Contract.from_dict(SPLIT), Contract.from_dict(deployed), ["joint_pos"], 10.0)
    return diff.refused, diff.allowed


def test_the_checkpoint_diff_refuses_what_changes_the_meaning_of_the_new_fields() -> None:
    arm = SPLIT["action"]["outputs"][0]
    relative = diff_of(lambda c: c["action"]["outputs"][0].update(relative_to="joint_pos",
                                                                  safe_action={"rule": "hold", "zero": ARM}))
    assert relative[0] == ["action output 0: relative_to unset in training, joint_pos deployed"]
    merged = diff_of(lambda c: c["action"].update(outputs=None) or c.update(action=arm | {
        "names": ARM + GRIPPER, "limits": {"lower": [-1, -2, 0], "upper": [1, 2, 0.04]}, "max_delta": [0.1] * 3}))
    assert merged[0] == ["action: outputs (names per command topic) [[shoulder, elbow], [finger]] in training,"
                         " [[shoulder, elbow, finger]] deployed"]
    timing = diff_of(lambda c: c["action"]["outputs"][0].update(trajectory={"mode": "chunk"}) or
                     c["observations"]["joint_pos"]["sources"][1].update(topic="/gripper/joint_states"))
    assert timing[0] == [] and len(timing[1]) == 2


def test_the_real_arm_example_contracts_parse_as_documented() -> None:
    ur5e = load_contract(REPO / "config" / "ur5e_robotiq_contract.yaml")
    assert [source.topic for source in ur5e.observations["joint_pos"].streams()] == ["/joint_states"] * 2
    assert ur5e.observations["wrist_image"].shape == (84, 84, 3)
    gripper_message = joint_state(["robotiq_85_left_knuckle_joint"], [0.1])
    assert not ur5e.observations["joint_vel"].applies(gripper_message)  # another key of the shared /joint_states
    arm, gripper = ur5e.action.streams()
    assert (arm.msgtype, arm.chunk, gripper.msgtype) == (
        "trajectory_msgs/msg/JointTrajectory", True, "std_msgs/msg/Float64MultiArray")
    assert ur5e.action.unsafe_dims_without_command(tuple(ur5e.observations["joint_pos"].joints)) == []
    franka = load_contract(REPO / "config" / "franka_hand_contract.yaml")
    assert [source.topic for source in franka.observations["joint_pos"].streams()] == [
        "/joint_states", "/franka_gripper/joint_states"]
    arm, hand = franka.action.streams()
    assert (arm.relative_to, arm.chunk, arm.time_from_start_s) == ("joint_pos", False, 0.1)
    assert franka.action.unsafe_dims_without_command(()) == []
    for contract in (ur5e, franka):
        assert Contract.from_dict(json.loads(json.dumps(contract.to_dict()))).to_dict() == contract.to_dict()
