"""The contract a checkpoint was trained with against the one it is deployed with: differences that
change what the policy reads or commands are refused, the others are notes; and the policy node's
configure check (check_policy_against_contract) on real checkpoints."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from mvp_ros.data.contract import Contract
from mvp_ros.data.contract_diff import compare_contracts
from mvp_ros.policy import Policy
from mvp_ros.ros.policy_checks import ConfigurationError, check_policy_against_contract

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import REPO  # noqa: E402
from tiny_policy import PANDA_SIM_CONTRACT, write_tiny_checkpoint  # noqa: E402

PANDA = yaml.safe_load((REPO / "config" / "panda_sim_contract.yaml").read_text())
PANDA["observations"]["agentview_image"] = {"type": "sensor_msgs/msg/Image", "topic": "/agentview/image_raw",
                                            "image": {"width": 84, "height": 84, "encoding": "rgb8"}}
PANDA["action"]["safe_action"] = {"rule": "hold", "zero": ["dx", "dy", "dz", "droll", "dpitch", "dyaw"]}
POLICY_KEYS = ["robot0_joint_pos", "robot0_gripper_qpos", "robot0_eef_pos", "object", "agentview_image"]
ARM_JOINTS = PANDA["observations"]["robot0_joint_pos"]["joints"]


def deployed(change, base: dict = PANDA) -> dict:
    """`base` with `change(contract)` applied."""
    contract = copy.deepcopy(base)
    change(contract)
    return contract


def compare(changed: dict, control_rate_hz: float = 20.0):
    return compare_contracts(Contract.from_dict(PANDA), Contract.from_dict(changed), POLICY_KEYS, control_rate_hz)


def swap(names: list[str], first: int, second: int) -> list[str]:
    swapped = list(names)
    swapped[first], swapped[second] = swapped[second], swapped[first]
    return swapped


def test_the_same_contract_has_no_differences() -> None:
    diff = compare(PANDA)
    assert diff.refused == [] and diff.allowed == []


def test_swapped_joints_are_refused_naming_both_joints() -> None:
    diff = compare(deployed(lambda c: c["observations"]["robot0_joint_pos"].update(joints=swap(ARM_JOINTS, 0, 1))))
    assert len(diff.refused) == 1 and diff.allowed == []
    assert diff.refused[0].startswith(
        "observation 'robot0_joint_pos': joints 'robot0_joint1' and 'robot0_joint2' are swapped")


def test_other_joints_and_another_field_are_refused() -> None:
    def change(contract: dict) -> None:
        contract["observations"]["robot0_joint_pos"].update(field="velocity", joints=[*ARM_JOINTS[:6], "robot0_joint9"])

    assert compare(deployed(change)).refused == [
        "observation 'robot0_joint_pos': field position in training, velocity deployed",
        f"observation 'robot0_joint_pos': joints [{', '.join(ARM_JOINTS)}] in training,"
        f" [{', '.join(ARM_JOINTS[:6])}, robot0_joint9] deployed",
    ]


def test_swapped_action_names_are_refused() -> None:
    diff = compare(deployed(lambda c: c["action"].update(names=swap(c["action"]["names"], 0, 1))))
    assert diff.refused == ["action: names 'dx' and 'dy' are swapped ([dx, dy, dz, droll, dpitch, dyaw, gripper] in"
                            " training, [dy, dx, dz, droll, dpitch, dyaw, gripper] deployed)"]


def test_another_action_type_is_refused() -> None:
    diff = compare(deployed(lambda c: c["action"].update(type="trajectory_msgs/msg/JointTrajectory")))
    assert diff.refused == ["action: type std_msgs/msg/Float64MultiArray in training,"
                            " trajectory_msgs/msg/JointTrajectory deployed"]


def test_another_control_rate_is_refused() -> None:
    assert compare(PANDA, control_rate_hz=50.0).refused == ["control rate: 20 Hz in training, 50 Hz deployed"]


def test_another_observation_type_is_refused() -> None:
    def change(contract: dict) -> None:
        contract["observations"]["robot0_eef_pos"] = {"type": "tf", "parent_frame": "base", "child_frame": "hand",
                                                      "field": "position"}

    assert compare(deployed(change)).refused == [
        "observation 'robot0_eef_pos': type geometry_msgs/msg/PoseStamped in training, tf deployed"]


def test_an_image_sent_compressed_is_allowed_and_its_size_still_checked() -> None:
    def compressed(contract: dict) -> None:
        contract["observations"]["agentview_image"].update(type="sensor_msgs/msg/CompressedImage",
                                                           topic="/agentview/image_raw/compressed")

    diff = compare(deployed(compressed))
    assert diff.refused == []
    assert diff.allowed == [
        "observation 'agentview_image': type sensor_msgs/msg/Image in training, sensor_msgs/msg/CompressedImage deployed",
        "observation 'agentview_image': topic /agentview/image_raw in training, /agentview/image_raw/compressed deployed"]
    smaller = deployed(lambda c: c["observations"]["agentview_image"].update(
        image={"width": 64, "height": 84, "encoding": "rgb8"}), deployed(compressed))
    assert compare(smaller).refused == ["observation 'agentview_image': image size 84x84 in training, 64x84 deployed"]


@pytest.mark.parametrize("image, message", [
    ({"width": 64, "height": 84, "encoding": "rgb8"}, "image size 84x84 in training, 64x84 deployed"),
    ({"width": 84, "height": 84, "encoding": "mono8"}, "image encoding rgb8 in training, mono8 deployed"),
    ({"width": 84, "height": 84, "encoding": "rgb8", "resize": "area"}, "image resize unset in training, area deployed"),
    ({"width": 84, "height": 84, "encoding": "rgb8", "crop": {"x": 80, "width": 480, "height": 480}},
     "image crop unset in training, {x: 80, y: 0, width: 480, height: 480} deployed"),
])
def test_another_image_size_encoding_crop_or_resize_is_refused(image, message) -> None:
    diff = compare(deployed(lambda c: c["observations"]["agentview_image"].update(image=image)))
    assert diff.refused == [f"observation 'agentview_image': {message}"]


def test_wider_limits_are_refused_and_narrower_ones_allowed() -> None:
    def change(contract: dict) -> None:
        contract["action"]["limits"] = {"lower": [-2, -1, -0.5, -1, -1, -1, -1], "upper": [1, 1, 0.5, 1, 1, 1, 1.5]}

    diff = compare(deployed(change))
    assert diff.refused == ["action 'dx': limits [-2, 1] deployed are wider than [-1, 1] in training",
                            "action 'gripper': limits [-1, 1.5] deployed are wider than [-1, 1] in training"]
    assert diff.allowed == ["action 'dz': limits [-0.5, 0.5] deployed are narrower than [-1, 1] in training"]


def test_topics_timing_max_delta_and_safe_action_are_allowed() -> None:
    def change(contract: dict) -> None:
        contract["observations"]["robot0_joint_pos"]["topic"] = "/arm/joint_states"
        contract["observations"]["object"]["max_age_s"] = 0.1
        contract["observations"]["robot0_eef_pos"]["align"] = {"rule": "hold"}
        contract["action"].update(topic="/arm/command", max_delta=[0.2] * 7, safe_action={"rule": "hold"})

    diff = compare(deployed(change))
    assert diff.refused == []
    assert diff.allowed == [
        "observation 'robot0_joint_pos': topic /joint_states in training, /arm/joint_states deployed",
        "observation 'robot0_eef_pos': align {rule: asof, tolerance_s: 0.025} in training, {rule: hold} deployed",
        "observation 'object': max_age_s 0.25 in training, 0.1 deployed",
        "action: topic /policy/command in training, /arm/command deployed",
        "action: safe_action {rule: hold, zero: [dx, dy, dz, droll, dpitch, dyaw]} in training, {rule: hold} deployed",
        "action: max_delta unset in training, [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2] deployed",
    ]


def test_only_the_policys_keys_count() -> None:
    def change(contract: dict) -> None:
        contract["observations"]["robot0_joint_pos"]["joints"] = swap(ARM_JOINTS, 0, 1)
        del contract["observations"]["robot0_eef_quat"]

    trained, changed = Contract.from_dict(PANDA), Contract.from_dict(deployed(change))
    assert compare_contracts(trained, changed, ["robot0_eef_pos", "object"], 20.0).refused == []
    assert compare_contracts(trained, changed, ["robot0_eef_quat"], 20.0).refused == [
        "observation 'robot0_eef_quat' is not in the deployed contract"]


# ---- check_policy_against_contract: what the policy node runs at configure ---------------------------------

@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Policy:
    """Trained (as far as its checkpoint says) on the simulated Panda's contract."""
    return Policy.load(write_tiny_checkpoint(tmp_path_factory.mktemp("panda") / "tiny", contract=PANDA_SIM_CONTRACT),
                       device="cpu")


def check(policy: Policy, contract: dict, control_rate_hz: float = 20.0, allow_without_contract: bool = False):
    return check_policy_against_contract(policy, Contract.from_dict(contract), "deployed.yaml",
                                         control_rate_hz=control_rate_hz, allow_without_contract=allow_without_contract)


def test_every_refused_difference_is_listed_in_one_error(policy) -> None:
    def change(contract: dict) -> None:
        gripper = contract["observations"]["robot0_gripper_qpos"]
        gripper["joints"] = swap(gripper["joints"], 0, 1)
        contract["action"]["limits"]["upper"][6] = 2.0
        contract["observations"]["object"]["topic"] = "/cube_state"

    with pytest.raises(ConfigurationError) as error:
        check(policy, deployed(change, PANDA_SIM_CONTRACT), control_rate_hz=100.0)
    lines = str(error.value).splitlines()
    assert lines[0] == (f"contract deployed.yaml differs from the contract {policy.info.directory} was trained with in"
                        " ways that change what the policy reads or commands:")
    assert lines[1:] == [
        "  control rate: 20 Hz in training, 100 Hz deployed",
        "  observation 'robot0_gripper_qpos': joints 'gripper0_right_finger_joint1' and 'gripper0_right_finger_joint2'"
        " are swapped ([gripper0_right_finger_joint1, gripper0_right_finger_joint2] in training,"
        " [gripper0_right_finger_joint2, gripper0_right_finger_joint1] deployed)",
        "  action 'gripper': limits [-1, 2] deployed are wider than [-1, 1] in training",
    ]


def test_allowed_differences_come_back_as_notes(policy) -> None:
    renamed = deployed(lambda c: c["observations"]["object"].update(topic="/cube_state"), PANDA_SIM_CONTRACT)
    assert check(policy, renamed) == [
        f"contract deployed.yaml differs from the contract {policy.info.directory} was trained with, keeping the"
        " meaning: observation 'object': topic /object_state in training, /cube_state deployed"]
    assert check(policy, PANDA_SIM_CONTRACT) == []


def test_a_checkpoint_without_a_contract_runs_only_when_allowed(tmp_path) -> None:
    policy = Policy.load(write_tiny_checkpoint(tmp_path / "no_contract"), device="cpu")
    with pytest.raises(ConfigurationError, match="carries no contract .* set the node parameter "
                                                 "allow_checkpoint_without_contract:=true to run it anyway"):
        check(policy, PANDA_SIM_CONTRACT)
    assert check(policy, PANDA_SIM_CONTRACT, allow_without_contract=True) == [
        f"{policy.info.directory} carries no contract, so contract deployed.yaml could not be checked against the"
        " data it was trained on (allow_checkpoint_without_contract is true)"]
