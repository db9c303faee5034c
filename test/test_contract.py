"""The observation contract: validation errors name the offending key, and the same extractors turn
rosbags-deserialized messages and rclpy messages into identical arrays."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.typesys import Stores, get_typestore

from mvp_ros.data.contract import (
    Contract,
    ContractError,
    MessageError,
    NonFiniteError,
    load_contract,
)

CONFIG = Path(__file__).resolve().parents[1] / "config"
TYPES = get_typestore(Stores.ROS2_KILTED).types
PANDA_JOINTS = [f"robot0_joint{i}" for i in range(1, 8)]
GRIPPER_JOINTS = ["gripper0_right_finger_joint1", "gripper0_right_finger_joint2"]


def small_contract() -> dict:
    return {
        "contract_version": 1,
        "robot": "test_robot",
        "control_rate_hz": 10,
        "observations": {
            "joint_pos": {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "field": "position",
                          "joints": ["j2", "j1"], "align": {"rule": "asof", "tolerance_s": 0.05}},
            "eef": {"topic": "/eef_pose", "type": "geometry_msgs/PoseStamped", "field": "orientation"},
            "object": {"topic": "/object_state", "type": "std_msgs/msg/Float64MultiArray", "size": 3},
            "cam": {"topic": "/cam/image_raw", "type": "sensor_msgs/msg/Image",
                    "image": {"width": 4, "height": 3, "encoding": "rgb8"}, "align": {"rule": "hold"}, "max_age_s": 0.5},
            "wrist": {"topic": "/wrist/compressed", "type": "sensor_msgs/msg/CompressedImage",
                      "image": {"width": 4, "height": 3, "encoding": "mono8"}},
            "tool": {"type": "tf", "parent_frame": "/base", "child_frame": "tool", "field": "position"},
        },
        "action": {"topic": "/cmd", "type": "std_msgs/msg/Float64MultiArray", "names": ["a0", "a1", "grip"],
                   "limits": {"lower": [-1, -1, 0], "upper": [1, 1, 1]}, "max_delta": [0.1, 0.1, 1],
                   "safe_action": {"rule": "hold", "zero": ["a0", "a1"]}},
    }


# ---- loading and validation -----------------------------------------------------------------------


def test_panda_sim_contract_matches_robosuite_keys_and_topics() -> None:
    contract = load_contract(CONFIG / "panda_sim_contract.yaml")
    assert contract.control_rate_hz == 20
    assert list(contract.observations) == [
        "robot0_joint_pos", "robot0_gripper_qpos", "robot0_eef_pos", "robot0_eef_quat", "object"]
    assert contract.observations["robot0_joint_pos"].joints == tuple(PANDA_JOINTS)
    assert contract.observations["robot0_gripper_qpos"].joints == tuple(GRIPPER_JOINTS)
    assert {key: spec.shape for key, spec in contract.observations.items()} == {
        "robot0_joint_pos": (7,), "robot0_gripper_qpos": (2,), "robot0_eef_pos": (3,), "robot0_eef_quat": (4,),
        "object": (10,)}
    assert contract.topics() == {
        "/joint_states": "sensor_msgs/msg/JointState",
        "/eef_pose": "geometry_msgs/msg/PoseStamped",
        "/object_state": "std_msgs/msg/Float64MultiArray",
        "/policy/command": "std_msgs/msg/Float64MultiArray",
    }
    assert contract.action.names == ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
    np.testing.assert_array_equal(contract.action.lower, -np.ones(7))


def test_example_contract_loads_and_names_tf_topics() -> None:
    contract = load_contract(CONFIG / "contract_example.yaml")
    topics = contract.topics()
    assert topics["/tf"] == topics["/tf_static"] == "tf2_msgs/msg/TFMessage"
    assert topics["/wrist/image/compressed"] == "sensor_msgs/msg/CompressedImage"
    assert contract.observations["agentview_image"].shape == (84, 84, 3)


@pytest.mark.parametrize("name", ["panda_sim_contract.yaml", "contract_example.yaml"])
def test_round_trip_through_json(name: str) -> None:
    contract = load_contract(CONFIG / name)
    embedded = json.loads(json.dumps(contract.to_dict()))  # as a checkpoint's config.json holds it
    again = Contract.from_dict(embedded)
    assert again == contract
    assert again.to_dict() == contract.to_dict()


def test_defaults_are_filled_and_types_normalized() -> None:
    contract = Contract.from_dict(small_contract())
    eef = contract.observations["eef"]
    assert eef.msgtype == "geometry_msgs/msg/PoseStamped"
    assert (eef.align.rule, eef.align.tolerance_s, eef.stamp_source) == ("asof", 0.1, "header")
    assert contract.observations["object"].stamp_source == "receive"  # Float64MultiArray has no header
    assert contract.observations["tool"].parent_frame == "base"
    assert (contract.action.align.rule, contract.action.align.tolerance_s) == ("next", 0.1)
    assert contract.observations["cam"].age_limit_s() == 0.5
    assert contract.observations["joint_pos"].age_limit_s() == 0.05


def mutate(path: str, value: object) -> dict:
    """small_contract() with the dotted `path` set to value (or deleted when value is DELETE)."""
    contract = copy.deepcopy(small_contract())
    *parents, last = path.split(".")
    node = contract
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return contract


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("contract_version", 2, "contract_version: is 2"),
        ("control_rate_hz", DELETE, "control_rate_hz: missing"),
        ("control_rate_hz", 0, "control_rate_hz: must be a positive number"),
        ("robt", "x", "unknown field(s) ['robt']"),
        ("observations.joint_pos.feild", "position", "observations.joint_pos: unknown field(s) ['feild']"),
        ("observations.joint_pos.joints", DELETE, "observations.joint_pos.joints: missing"),
        ("observations.joint_pos.joints", ["j1", "j1"], "observations.joint_pos.joints: lists ['j1'] more than once"),
        ("observations.joint_pos.field", "torque", "observations.joint_pos.field: is 'torque'"),
        ("observations.joint_pos.topic", "joint_states", "observations.joint_pos.topic: 'joint_states' must be an absolute"),
        ("observations.joint_pos.type", "sensor_msgs/msg/Imu",
         "observations.joint_pos.type: 'sensor_msgs/msg/Imu' is not supported"),
        ("observations.joint_pos.type", "JointState", "observations.joint_pos.type: 'JointState' is not a message type"),
        ("observations.joint_pos.align", {"rule": "asof"},
         "observations.joint_pos.align.tolerance_s: rule asof needs a tolerance"),
        ("observations.joint_pos.align", {"rule": "hold", "tolerance_s": 1},
         "observations.joint_pos.align.tolerance_s: rule hold"),
        ("observations.joint_pos.align", {"rule": "next", "tolerance_s": 1}, "observations.joint_pos.align.rule: is 'next'"),
        ("observations.joint_pos.stamp", "arrival", "observations.joint_pos.stamp: is 'arrival'"),
        ("observations.joint_pos.max_age_s", -1, "observations.joint_pos.max_age_s: must be a positive number"),
        ("observations.object.stamp", "header", "observations.object.stamp: std_msgs/msg/Float64MultiArray has no header"),
        ("observations.object.size", 2.5, "observations.object.size: must be a positive integer"),
        ("observations.cam.image", {"width": 4, "height": 3, "encoding": "bgr8"}, "observations.cam.image.encoding: is 'bgr8'"),
        ("observations.cam.image", {"width": "4", "height": 3}, "observations.cam.image.width: must be a positive integer"),
        ("observations.tool.topic", "/tf", "observations.tool.topic: a tf source reads /tf and /tf_static"),
        ("observations.tool.child_frame", "base", "observations.tool.child_frame: parent_frame and child_frame are both"),
        ("observations.eef.topic", "/joint_states",
         "observations.eef.type: /joint_states is geometry_msgs/msg/PoseStamped here but sensor_msgs/msg/JointState"
         " for joint_pos"),
        ("observations.bad/key", {"topic": "/x", "type": "std_msgs/msg/Float64MultiArray", "size": 1},
         "observations.bad/key: observation keys may hold only"),
        ("observations", {}, "observations: needs at least one observation key"),
        ("action.type", "geometry_msgs/msg/Twist", "action.type: 'geometry_msgs/msg/Twist' is not supported for actions"),
        ("action.topic", "/object_state", "action.topic: /object_state is also the observation object's topic"),
        ("action.limits", {"lower": [-1, -1], "upper": [1, 1, 1]}, "action.limits.lower: must be a list of 3 finite numbers"),
        ("action.limits", {"lower": [-1, 2, 0], "upper": [1, 1, 1]}, "action.limits: lower is above upper for ['a1']"),
        ("action.max_delta", [0.1, 0, 1], "action.max_delta: entries must be > 0"),
        ("action.safe_action", {"rule": "constant", "value": [0, 0, 2]},
         "action.safe_action.value: lies outside the action limits"),
        ("action.safe_action", {"rule": "hold", "zero": ["dx"]},
         "action.safe_action.zero: names ['dx'], which are not action names"),
        ("action.safe_action", {"rule": "stop"}, "action.safe_action.rule: is 'stop'"),
        ("action.stamp", "header", "action.stamp: std_msgs/msg/Float64MultiArray has no header"),
    ],
)
def test_validation_names_the_offending_key(path: str, value: object, message: str) -> None:
    with pytest.raises(ContractError) as error:
        Contract.from_dict(mutate(path, value), source="robot.yaml")
    assert str(error.value).startswith("robot.yaml: ")
    assert message in str(error.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="missing.yaml: cannot read contract"):
        load_contract(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("robot: [unclosed\n")
    with pytest.raises(ContractError, match="broken.yaml: not valid YAML"):
        load_contract(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ContractError, match=r"list.yaml: \(top level\): expected a mapping"):
        load_contract(listing)


# ---- extraction: the same code for rosbags and rclpy messages ---------------------------------------


def rosbags_joint_state(names: list[str], position: list[float], stamp_ns: int = 0):
    time = TYPES["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    header = TYPES["std_msgs/msg/Header"](stamp=time, frame_id="base")
    return TYPES["sensor_msgs/msg/JointState"](header=header, name=names, position=np.array(position),
                                               velocity=np.zeros(0), effort=np.zeros(0))


def rclpy_joint_state(names: list[str], position: list[float], stamp_ns: int = 0):
    from sensor_msgs.msg import JointState

    message = JointState()
    message.header.stamp.sec, message.header.stamp.nanosec = stamp_ns // 10**9, stamp_ns % 10**9
    message.name, message.position = names, position
    return message


@pytest.mark.parametrize("make", [rosbags_joint_state, rclpy_joint_state], ids=["rosbags", "rclpy"])
def test_joint_state_selects_by_name_whatever_the_order(make) -> None:
    spec = Contract.from_dict(small_contract()).observations["joint_pos"]  # joints [j2, j1]
    np.testing.assert_array_equal(spec.extract(make(["j1", "j2", "extra"], [1.0, 2.0, 3.0])), [2.0, 1.0])
    np.testing.assert_array_equal(spec.extract(make(["extra", "j2", "j1"], [3.0, 20.0, 10.0])), [20.0, 10.0])
    assert spec.stamp(make(["j1", "j2"], [0.0, 0.0], stamp_ns=3_000_000_123), receive_time_ns=7) == 3_000_000_123
    with pytest.raises(MessageError, match=r"joint_pos: /joint_states JointState lacks joints \['j2'\]"):
        spec.extract(make(["j1", "j3"], [1.0, 2.0]))
    with pytest.raises(MessageError, match="has 1 position values for 2 joint names"):
        spec.extract(make(["j1", "j2"], [1.0]))
    with pytest.raises(NonFiniteError, match="joint_pos: /joint_states message has NaN"):
        spec.extract(make(["j1", "j2"], [1.0, float("nan")]))


def test_receive_stamp_rule_uses_the_receive_time() -> None:
    data = small_contract()
    data["observations"]["joint_pos"]["stamp"] = "receive"
    spec = Contract.from_dict(data).observations["joint_pos"]
    assert spec.stamp(rosbags_joint_state(["j1", "j2"], [0, 0], stamp_ns=5), receive_time_ns=99) == 99


def pose_stamped(rclpy: bool, xyz: list[float], xyzw: list[float]):
    if rclpy:
        from geometry_msgs.msg import PoseStamped

        message = PoseStamped()
    else:
        message = TYPES["geometry_msgs/msg/PoseStamped"](
            header=rosbags_joint_state([], []).header,
            pose=TYPES["geometry_msgs/msg/Pose"](position=TYPES["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                                 orientation=TYPES["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
    position, orientation = message.pose.position, message.pose.orientation
    position.x, position.y, position.z = xyz
    orientation.x, orientation.y, orientation.z, orientation.w = xyzw
    return message


@pytest.mark.parametrize("rclpy", [False, True], ids=["rosbags", "rclpy"])
def test_pose_array_and_transform_fields(rclpy: bool) -> None:
    data = small_contract()
    data["observations"]["eef_pose"] = {"topic": "/eef_pose", "type": "geometry_msgs/msg/PoseStamped", "field": "pose"}
    contract = Contract.from_dict(data)
    message = pose_stamped(rclpy, [1.0, 2.0, 3.0], [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(contract.observations["eef"].extract(message), [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(contract.observations["eef_pose"].extract(message), [1, 2, 3, 0.5, 0.5, 0.5, 0.5])

    if rclpy:
        from geometry_msgs.msg import TransformStamped
        from std_msgs.msg import Float64MultiArray

        transform, array = TransformStamped(), Float64MultiArray()
        array.data = [1.0, 2.0, 3.0]
    else:
        transform = TYPES["geometry_msgs/msg/TransformStamped"](
            header=message.header, child_frame_id="tool",
            transform=TYPES["geometry_msgs/msg/Transform"](
                translation=TYPES["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0), rotation=message.pose.orientation))
        array = TYPES["std_msgs/msg/Float64MultiArray"](
            layout=TYPES["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.array([1.0, 2.0, 3.0]))
    transform.transform.translation.x, transform.transform.translation.y = 4.0, 5.0
    np.testing.assert_array_equal(contract.observations["tool"].extract(transform), [4.0, 5.0, 0.0])
    np.testing.assert_array_equal(contract.observations["object"].extract(array), [1.0, 2.0, 3.0])
    array.data = [1.0, 2.0]
    with pytest.raises(MessageError, match="object: /object_state Float64MultiArray has 2 values, the contract says size 3"):
        contract.observations["object"].extract(array)


# ---- images ---------------------------------------------------------------------------------------


def image_message(pixels: np.ndarray, encoding: str, padding: int = 0, rclpy: bool = False):
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, padding), 255, np.uint8)], axis=1)
    if rclpy:
        from sensor_msgs.msg import Image

        message = Image()
        message.height, message.width, message.encoding = height, width, encoding
        message.step, message.data = padded.shape[1], padded.tobytes()
        return message
    return TYPES["sensor_msgs/msg/Image"](header=rosbags_joint_state([], []).header, height=height, width=width,
                                         encoding=encoding, is_bigendian=0, step=padded.shape[1], data=padded.ravel())


RGB = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3)  # 3 rows, 4 columns


@pytest.mark.parametrize("rclpy", [False, True], ids=["rosbags", "rclpy"])
def test_raw_images_honour_step_and_encoding(rclpy: bool) -> None:
    cam = Contract.from_dict(small_contract()).observations["cam"]  # 4x3 rgb8
    np.testing.assert_array_equal(cam.extract(image_message(RGB, "rgb8", padding=5, rclpy=rclpy)), RGB)
    np.testing.assert_array_equal(cam.extract(image_message(RGB[..., ::-1], "bgr8", rclpy=rclpy)), RGB)
    grey = RGB[..., :1]
    np.testing.assert_array_equal(cam.extract(image_message(grey, "mono8", padding=3, rclpy=rclpy)), np.repeat(grey, 3, 2))
    with pytest.raises(MessageError, match=r"cam: /cam/image_raw Image is 3x4, the contract says 4x3"):
        cam.extract(image_message(RGB.transpose(1, 0, 2), "rgb8", rclpy=rclpy))
    with pytest.raises(MessageError, match="has encoding '16UC1'"):
        cam.extract(image_message(RGB, "16UC1", rclpy=rclpy))


def test_mono8_contract_keeps_one_channel_and_refuses_colour() -> None:
    data = small_contract()
    data["observations"]["cam"]["image"]["encoding"] = "mono8"
    cam = Contract.from_dict(data).observations["cam"]
    grey = RGB[..., :1]
    assert cam.shape == (3, 4, 1)
    np.testing.assert_array_equal(cam.extract(image_message(grey, "mono8")), grey)
    with pytest.raises(MessageError, match="is rgb8; the contract stores mono8"):
        cam.extract(image_message(RGB, "rgb8"))
    truncated = image_message(grey, "mono8")
    truncated.data = truncated.data[:-1]
    with pytest.raises(MessageError, match="is inconsistent: 4x3 mono8, step 4, 11 data bytes"):
        cam.extract(truncated)


def compressed(pixels_bgr_or_grey: np.ndarray, extension: str, fmt: str):
    ok, encoded = cv2.imencode(extension, pixels_bgr_or_grey)
    assert ok
    return TYPES["sensor_msgs/msg/CompressedImage"](header=rosbags_joint_state([], []).header, format=fmt, data=encoded)


def test_compressed_images_png_exact_jpeg_decoded() -> None:
    data = small_contract()
    data["observations"]["wrist"]["image"]["encoding"] = "rgb8"
    wrist = Contract.from_dict(data).observations["wrist"]
    np.testing.assert_array_equal(wrist.extract(compressed(RGB[..., ::-1], ".png", "rgb8; png compressed bgr8")), RGB)
    smooth = np.repeat(np.linspace(0, 250, 4, dtype=np.uint8)[None, :, None], 3, axis=0).repeat(3, axis=2)
    message = compressed(smooth[..., ::-1], ".jpg", "jpeg")
    decoded = wrist.extract(message)
    np.testing.assert_array_equal(decoded, cv2.imdecode(np.asarray(message.data), cv2.IMREAD_COLOR)[..., ::-1])
    assert np.abs(decoded.astype(int) - smooth).max() <= 8  # lossy, but the right image

    grey_wrist = Contract.from_dict(small_contract()).observations["wrist"]  # mono8
    np.testing.assert_array_equal(grey_wrist.extract(compressed(RGB[..., 0], ".png", "png")), RGB[..., :1])
    broken = compressed(RGB, ".png", "png")
    broken.data = broken.data[:40]
    with pytest.raises(MessageError, match="wrist: /wrist/compressed CompressedImage with format 'png' could not be decoded"):
        grey_wrist.extract(broken)
    bmp = compressed(RGB, ".bmp", "bmp")
    with pytest.raises(MessageError, match="has format .bmp., which is not a supported compression"):
        grey_wrist.extract(bmp)


# ---- the action ---------------------------------------------------------------------------------------


def test_action_float_array_limits_and_safe_action() -> None:
    action = Contract.from_dict(small_contract()).action
    message = TYPES["std_msgs/msg/Float64MultiArray"](
        layout=TYPES["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.array([0.5, -0.5, 1.0]))
    np.testing.assert_array_equal(action.extract(message), [0.5, -0.5, 1.0])
    message.data = np.array([0.5, 0.5])
    with pytest.raises(MessageError, match="action: /cmd has 2 values for 3 names"):
        action.extract(message)
    message.data = np.array([0.5, np.inf, 0.0])
    with pytest.raises(NonFiniteError, match="action: /cmd message has NaN or inf"):
        action.extract(message)

    assert action.safe_action(None) is None  # hold, nothing sent, no value for grip: no safe action
    assert action.unsafe_dims_without_command() == ["grip"]
    np.testing.assert_array_equal(action.safe_action(np.array([0.3, -0.3, 1.0])), [0.0, 0.0, 1.0])
    constant = Contract.from_dict(mutate("action.safe_action", {"rule": "constant", "value": [0, 0, 0.5]})).action
    np.testing.assert_array_equal(constant.safe_action(None), [0.0, 0.0, 0.5])
    initial = Contract.from_dict(mutate("action.safe_action", {"rule": "hold", "zero": ["a0"], "initial": {"grip": 0.5}})).action
    assert initial.unsafe_dims_without_command() == ["a1"] and initial.unsafe_dims_without_command(("a1",)) == []
    np.testing.assert_array_equal(initial.safe_action(None, {"a1": 0.25}), [0.0, 0.25, 0.5])  # a1: its measured position
    assert initial.to_dict()["safe_action"] == {"rule": "hold", "zero": ["a0"], "initial": {"grip": 0.5}}  # round trip


@pytest.mark.parametrize("initial, message", [
    ({"gripper": 0.5}, r"action.safe_action.initial: 'gripper' is not an action name"),
    ({"grip": 2.0}, r"action.safe_action.initial: grip: must be a number within \[0, 1\], got 2.0"),
    ([0.5], r"action.safe_action.initial: must map action names to values"),
])
def test_action_safe_initial_values_are_checked(initial, message) -> None:
    with pytest.raises(ContractError, match=message):
        Contract.from_dict(mutate("action.safe_action", {"rule": "hold", "zero": ["a0", "a1"], "initial": initial}))


@pytest.mark.parametrize("rclpy", [False, True], ids=["rosbags", "rclpy"])
def test_action_joint_trajectory_by_name(rclpy: bool) -> None:
    data = small_contract()
    data["action"].update(type="trajectory_msgs/msg/JointTrajectory", names=["j1", "j2", "j3"], stamp="header",
                          safe_action={"rule": "hold"})
    action = Contract.from_dict(data).action
    if rclpy:
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        message, point = JointTrajectory(), JointTrajectoryPoint()
        message.joint_names, point.positions = ["j3", "j1", "j2"], [0.3, 0.1, 0.2]
        message.points = [point, JointTrajectoryPoint()]
    else:
        point = TYPES["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.array([0.3, 0.1, 0.2]), velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=TYPES["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
        message = TYPES["trajectory_msgs/msg/JointTrajectory"](
            header=rosbags_joint_state([], []).header, joint_names=["j3", "j1", "j2"], points=[point])
    np.testing.assert_array_equal(action.extract(message), [0.1, 0.2, 0.3])
    message.joint_names = ["j3", "j1", "j4"]
    with pytest.raises(MessageError, match=r"action: /cmd JointTrajectory lacks joints \['j2'\]"):
        action.extract(message)
    message.points = []
    with pytest.raises(MessageError, match="JointTrajectory has no points"):
        action.extract(message)
