"""`mvp bag2hdf5` on real rosbag2 bags written with rosbags (sqlite3 and MCAP, compressed or not),
holding what robots produce: joint names in a different order per message, extra joints, dropped,
late, duplicated and NaN messages, out-of-order stamps, compressed and padded images, a tf chain of
static and dynamic transforms. Converted values are checked exactly against a plain-loop reference
of the documented sampling rules. Messages the live node would reject (missing joint, corrupt or
wrong-size image, NaN, undecodable bytes) are dropped and counted by reason; bad bags stop the run
before anything is written, or are skipped with --skip-bad-bags."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_typestore

from mvp_ros.cli import main
from mvp_ros.data.contract import Contract, stamp_ns
from mvp_ros.data.robomimic import RobomimicDataset
from mvp_ros.data.rosbag_reader import decode_joint_states

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
TYPES = TYPESTORE.types
MS = 1_000_000
PERIOD = 50 * MS  # 20 Hz
T0 = 1_700_000_000 * 1_000_000_000
TICKS = 40
STALE_TICK = 20  # the joint states around it are dropped
JOINTS = ["j1", "j2", "j3"]

CONTRACT = {
    "contract_version": 1,
    "robot": "awkward_arm",
    "control_rate_hz": 20,
    "observations": {
        "joint_pos": {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "joints": JOINTS,
                      "align": {"rule": "asof", "tolerance_s": 0.02}},
        "eef_pos": {"topic": "/eef_pose", "type": "geometry_msgs/msg/PoseStamped", "field": "position"},
        "object": {"topic": "/object_state", "type": "std_msgs/msg/Float64MultiArray", "size": 2,
                   "align": {"rule": "hold"}},
        "wrist_image": {"topic": "/wrist/compressed", "type": "sensor_msgs/msg/CompressedImage",
                        "image": {"width": 8, "height": 6, "encoding": "rgb8"}, "align": {"rule": "asof", "tolerance_s": 0.03}},
        "side_image": {"topic": "/side/image_raw", "type": "sensor_msgs/msg/Image",
                       "image": {"width": 8, "height": 6, "encoding": "rgb8"}, "align": {"rule": "hold"}, "max_age_s": 0.15},
        "tool_pose": {"type": "tf", "parent_frame": "base", "child_frame": "tool", "field": "pose",
                      "align": {"rule": "asof", "tolerance_s": 0.03}},
        "camera_in_tool": {"type": "tf", "parent_frame": "tool", "child_frame": "camera", "field": "pose",
                           "align": {"rule": "asof", "tolerance_s": 0.03}},
    },
    "action": {"topic": "/cmd", "type": "std_msgs/msg/Float64MultiArray", "names": ["a", "b", "grip"],
               "limits": {"lower": [-100, -100, 0], "upper": [100, 100, 1]}},
}


# ---- building messages --------------------------------------------------------------------------------


def header(stamp: int, frame: str = "base"):
    return TYPES["std_msgs/msg/Header"](
        stamp=TYPES["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame)


def joint_state(stamp: int, names: list[str], position: list[float]):
    return TYPES["sensor_msgs/msg/JointState"](header=header(stamp), name=names, position=np.array(position, dtype=float),
                                              velocity=np.zeros(0), effort=np.zeros(0))


def float_array(values: list[float]):
    layout = TYPES["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return TYPES["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.array(values, dtype=float))


def pose_stamped(stamp: int, xyz: list[float]):
    point = TYPES["geometry_msgs/msg/Point"](x=xyz[0], y=xyz[1], z=xyz[2])
    quaternion = TYPES["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
    return TYPES["geometry_msgs/msg/PoseStamped"](header=header(stamp), pose=TYPES["geometry_msgs/msg/Pose"](
        position=point, orientation=quaternion))


def transform(stamp: int, parent: str, child: str, pose: np.ndarray):
    return TYPES["geometry_msgs/msg/TransformStamped"](
        header=header(stamp, parent), child_frame_id=child,
        transform=TYPES["geometry_msgs/msg/Transform"](
            translation=TYPES["geometry_msgs/msg/Vector3"](x=pose[0], y=pose[1], z=pose[2]),
            rotation=TYPES["geometry_msgs/msg/Quaternion"](x=pose[3], y=pose[4], z=pose[5], w=pose[6])))


def tf_message(transforms: list):
    return TYPES["tf2_msgs/msg/TFMessage"](transforms=transforms)


def pattern(index: int) -> np.ndarray:
    """A distinct 6x8 rgb8 image per index."""
    return ((np.arange(6 * 8 * 3).reshape(6, 8, 3) * 7 + index * 13) % 256).astype(np.uint8)


def compressed_png(stamp: int, rgb: np.ndarray):
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    return TYPES["sensor_msgs/msg/CompressedImage"](header=header(stamp), format="rgb8; png compressed bgr8", data=encoded)


def padded_bgr_image(stamp: int, rgb: np.ndarray, padding: int = 4):
    rows = np.concatenate([rgb[..., ::-1].reshape(6, 24), np.full((6, padding), 77, np.uint8)], axis=1)
    return TYPES["sensor_msgs/msg/Image"](header=header(stamp), height=6, width=8, encoding="bgr8", is_bigendian=0,
                                         step=24 + padding, data=rows.ravel())


def rotation_z(angle: float) -> list[float]:
    return [0.0, 0.0, float(np.sin(angle / 2)), float(np.cos(angle / 2))]


# ---- the scenario -------------------------------------------------------------------------------------


@dataclass
class Stream:
    """What was written on one key's topic: (stamp used for alignment, value, message id) per message."""

    samples: list[tuple[int, np.ndarray, int]] = field(default_factory=list)
    read: int = 0
    non_finite: int = 0


@dataclass
class Scenario:
    messages: list[tuple[str, str, int, object]]  # topic, type, receive time, message
    streams: dict[str, Stream]
    static: dict[tuple[str, str], np.ndarray]  # (parent, child) -> pose
    dynamic: list[tuple[int, np.ndarray, int]]  # link1 -> link2 transforms: stamp, pose, id


def awkward_scenario(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(seed)
    messages: list[tuple[str, str, int, object]] = []
    streams = {key: Stream() for key in [*CONTRACT["observations"], "action"] if key not in ("tool_pose", "camera_in_tool")}

    def add(key: str, topic: str, msgtype: str, receive: int, message: object, stamp: int, value) -> None:
        messages.append((topic, msgtype, receive, message))
        stream = streams[key]
        stream.read += 1
        if np.isfinite(np.asarray(value, dtype=float)).all():
            stream.samples.append((stamp, np.asarray(value), len(messages)))
        else:
            stream.non_finite += 1

    # joint states at 100 Hz: shuffled names, sometimes an extra joint, 3 dropped before the stale tick,
    # every 7th arriving 37 ms late, one NaN at tick 10, one duplicate stamp at tick 30 (the later wins).
    for m in range(-5, 5 * TICKS + 7):
        stamp = T0 + m * 10 * MS
        if stamp in range(T0 + STALE_TICK * PERIOD - 29 * MS, T0 + STALE_TICK * PERIOD + 1):
            continue
        names = list(rng.permutation(JOINTS + ["finger"] if m % 3 else JOINTS))
        values = {name: m * 10.0 + (JOINTS.index(name) + 1 if name in JOINTS else 9) for name in names}
        if stamp == T0 + 10 * PERIOD:
            values["j2"] = float("nan")
        receive = stamp + (37 * MS if m % 7 == 0 else MS)
        message = joint_state(stamp, names, [values[name] for name in names])
        add("joint_pos", "/joint_states", "sensor_msgs/msg/JointState", receive, message, stamp, [values[j] for j in JOINTS])
        if stamp == T0 + 30 * PERIOD:
            later = [values[j] + 0.5 for j in JOINTS]
            add("joint_pos", "/joint_states", "sensor_msgs/msg/JointState", receive + 5 * MS,
                joint_state(stamp, JOINTS, later), stamp, later)
    # end-effector pose at 50 Hz
    for n in range(-2, TICKS * 5 // 2 + 5):
        stamp = T0 + n * 20 * MS
        xyz = [n * 0.25, -n * 0.5, 1.0 + n]
        add("eef_pos", "/eef_pose", "geometry_msgs/msg/PoseStamped", stamp + 2 * MS, pose_stamped(stamp, xyz), stamp, xyz)
    # object state at 5 Hz, no header: stamped by receive time, held
    for i in range(12):
        receive = T0 - 100 * MS + i * 200 * MS
        add("object", "/object_state", "std_msgs/msg/Float64MultiArray", receive, float_array([i, -i]), receive, [i, -i])
    # PNG wrist camera at 20 Hz, the latest stream to start: the grid starts at its first stamp, T0
    for k in range(TICKS + 2):
        stamp = T0 + k * PERIOD
        add("wrist_image", "/wrist/compressed", "sensor_msgs/msg/CompressedImage", stamp + 4 * MS,
            compressed_png(stamp, pattern(k)), stamp, pattern(k))
    # raw bgr8 side camera at 10 Hz with row padding, held up to 0.15 s
    for i in range(TICKS // 2 + 2):
        stamp = T0 - 30 * MS + i * 100 * MS
        add("side_image", "/side/image_raw", "sensor_msgs/msg/Image", stamp + 3 * MS,
            padded_bgr_image(stamp, pattern(100 + i)), stamp, pattern(100 + i))
    # commands, received 3 ms after each tick
    for k in range(TICKS):
        receive = T0 + k * PERIOD + 3 * MS
        add("action", "/cmd", "std_msgs/msg/Float64MultiArray", receive, float_array([k, -k, 0.5]), receive, [k, -k, 0.5])

    # tf: base -> link1 -> link2 -> tool, link1 -> camera; link1 -> link2 moves at 50 Hz, the rest is static.
    static = {
        ("base", "link1"): np.array([0.0, 0.0, 0.3, *rotation_z(0.5)]),
        ("link2", "tool"): np.array([0.1, 0.0, 0.0, 0.0, np.sin(0.2), 0.0, np.cos(0.2)]),
        ("link1", "camera"): np.array([0.0, 0.2, 0.1, *rotation_z(-1.0)]),
    }
    messages.append(("/tf_static", "tf2_msgs/msg/TFMessage", T0 - 200 * MS,
                     tf_message([transform(T0 - 200 * MS, "/" + p, c, pose) for (p, c), pose in static.items()])))
    dynamic = []
    for n in range(-1, TICKS * 5 // 2 + 5):
        stamp = T0 + n * 20 * MS
        pose = np.array([0.1 * n, 0.0, 0.5, *rotation_z(0.01 * n)])
        others = [transform(stamp, "world", "base", np.array([1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0]))] if n % 5 == 0 else []
        transforms = tf_message([*others, transform(stamp, "link1", "link2", pose)])
        messages.append(("/tf", "tf2_msgs/msg/TFMessage", stamp + MS, transforms))
        dynamic.append((stamp, pose, len(messages)))
    return Scenario(messages, streams, static, dynamic)


def write_bag(path: Path, messages: list[tuple[str, str, int, object]], storage: str = "mcap",
              compression: CompressionMode = CompressionMode.NONE, raw: dict[int, bytes] | None = None,
              silent_topics: dict[str, str] | None = None) -> Path:
    """Write messages (serialized with the typestore unless `raw` gives bytes by message index).
    `silent_topics` (topic -> type) get a connection and no message, as a recorder leaves them."""
    writer = Writer(path, version=9, storage_plugin={"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage])
    writer.set_compression(compression, CompressionFormat.ZSTD)
    with writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=TYPESTORE)
                       for topic, msgtype in (silent_topics or {}).items()}
        for index, (topic, msgtype, receive, message) in enumerate(messages):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            data = (raw or {}).get(index) or TYPESTORE.serialize_cdr(message, msgtype)
            writer.write(connections[topic], receive, data)
    return path


# ---- the reference: the documented sampling rules as plain loops ---------------------------------------


def reference_sample(samples: list[tuple[int, np.ndarray, int]], tick: int, rule: str, limit_ns: float):
    """(value, message id) or None. asof/hold: latest at or before tick; next: first at or after;
    among equal stamps the last received."""
    if rule == "next":
        candidates = [s for s in samples if s[0] >= tick]
        best = min((s[0] for s in candidates), default=None)
        age = None if best is None else best - tick
    else:
        candidates = [s for s in samples if s[0] <= tick]
        best = max((s[0] for s in candidates), default=None)
        age = None if best is None else tick - best
    if best is None or age > limit_ns:
        return None
    stamp, value, message_id = [s for s in candidates if s[0] == best][-1]
    return value, message_id


def pose_matrix(pose: np.ndarray) -> np.ndarray:
    x, y, z, w = pose[3:] / np.linalg.norm(pose[3:])
    matrix = np.eye(4)
    matrix[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    matrix[:3, 3] = pose[:3]
    return matrix


def reference_tf(scenario: Scenario, tick: int, parent: str) -> np.ndarray | None:
    """tool_pose (parent base) or camera_in_tool (parent tool) as a 4x4 matrix, by matrix products."""
    moving = reference_sample(scenario.dynamic, tick, "asof", 30 * MS)
    if moving is None:
        return None
    s = {edge: pose_matrix(pose) for edge, pose in scenario.static.items()}
    link1_link2 = pose_matrix(moving[0])
    base_tool = s[("base", "link1")] @ link1_link2 @ s[("link2", "tool")]
    if parent == "base":
        return base_tool
    base_camera = s[("base", "link1")] @ s[("link1", "camera")]
    return np.linalg.inv(base_tool) @ base_camera


def write_contract(tmp_path: Path, contract: dict = CONTRACT) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(contract))
    return path


def convert(tmp_path: Path, *bags: Path, extra: tuple[str, ...] = (), contract: dict = CONTRACT) -> int:
    return main(["bag2hdf5", "--contract", str(write_contract(tmp_path, contract)), "--out", str(tmp_path / "out.hdf5"),
                 *extra, *map(str, bags)])


# ---- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("storage", "compression"),
    [("sqlite3", CompressionMode.NONE), ("mcap", CompressionMode.NONE), ("mcap", CompressionMode.MESSAGE),
     ("sqlite3", CompressionMode.FILE)],
    ids=["sqlite3", "mcap", "mcap-zstd-message", "sqlite3-zstd-file"],
)
def test_awkward_bag_converts_exactly(tmp_path: Path, capsys, storage: str, compression: CompressionMode) -> None:
    scenario = awkward_scenario()
    bag = write_bag(tmp_path / "bag", scenario.messages, storage, compression)
    env_args = tmp_path / "env.json"
    env_args.write_text(json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}}))
    assert convert(tmp_path, bag, extra=("--env-args", str(env_args))) == 0
    printed = capsys.readouterr().out

    contract = Contract.from_dict(CONTRACT)
    ticks = T0 + PERIOD * np.arange(TICKS)
    kept = [k for k in range(TICKS) if k != STALE_TICK]
    used: dict[str, set[int]] = {key: set() for key in scenario.streams}
    with h5py.File(tmp_path / "out.hdf5", "r") as file:
        demos = [file[f"data/demo_{i}"] for i in range(len(file["data"]))]
        assert [demo.attrs["num_samples"] for demo in demos] == [STALE_TICK, TICKS - STALE_TICK - 1]
        assert [demo.attrs["first_tick_ns"] for demo in demos] == [T0, T0 + (STALE_TICK + 1) * PERIOD]
        rows = [(demo, row) for demo in demos for row in range(demo.attrs["num_samples"])]
        for (demo, row), k in zip(rows, kept, strict=True):
            for key, stream in scenario.streams.items():
                spec = contract.action if key == "action" else contract.observations[key]
                value, message_id = reference_sample(stream.samples, int(ticks[k]), spec.align.rule, spec.age_limit_s() * 1e9)
                stored = demo["actions"][row] if key == "action" else demo[f"obs/{key}"][row]
                assert stored.dtype == (np.uint8 if key.endswith("image") else np.float64)
                np.testing.assert_array_equal(stored, value, err_msg=f"{key} at tick {k}")
                used[key].add(message_id)
            for key, parent in (("tool_pose", "base"), ("camera_in_tool", "tool")):
                pose = demo[f"obs/{key}"][row]
                np.testing.assert_allclose(pose_matrix(pose), reference_tf(scenario, int(ticks[k]), parent), atol=1e-12)
        assert demos[0]["obs/wrist_image"].dtype == np.uint8
        assert json.loads(file["data"].attrs["env_args"])["env_name"] == "Lift"
        assert json.loads(file.attrs["source_bags"]) == [str(bag)]
        assert Contract.from_dict(json.loads(file.attrs["contract"])) == contract
        assert file.attrs["tool"].startswith("mvp_ros ")

    # the grid really is the awkward one: tick 20 dropped for stale joints, the NaN at tick 10 skipped,
    # the duplicate at tick 30 resolved to the later message
    assert reference_sample(scenario.streams["joint_pos"].samples, int(ticks[STALE_TICK]), "asof", 20 * MS) is None
    joints = scenario.streams["joint_pos"]
    for key, stream in scenario.streams.items():
        topic = CONTRACT["action"]["topic"] if key == "action" else CONTRACT["observations"][key]["topic"]
        skipped = stream.read - len(used[key]) - stream.non_finite
        stale = 1 if key == "joint_pos" else 0
        expected_row = f"{key} {topic} {stream.read} {len(used[key])} {skipped} {stream.non_finite} 0 {stale}"
        assert expected_row in " ".join(printed.split()), printed
    assert joints.non_finite == 1
    assert f"{TICKS} ticks at 20 Hz, kept {TICKS - 1} in 2 episode(s); 1 dropped (joint_pos stale at 1)" in printed


def test_split_on_marker_topic_and_on_action_gap(tmp_path: Path) -> None:
    contract = {**CONTRACT, "observations": {"joint_pos": CONTRACT["observations"]["joint_pos"]}}
    messages = []
    for m in range(300):  # 3 s of joint states at 100 Hz
        stamp = T0 + m * 10 * MS
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", stamp, joint_state(stamp, JOINTS, [m, m, m])))
    for k in range(60):  # commands for 0.0-0.95 s and 2.0-2.95 s: a 1 s pause
        if 20 <= k < 40:
            continue
        messages.append(("/cmd", "std_msgs/msg/Float64MultiArray", T0 + k * PERIOD + MS, float_array([k, 0, 0])))
    marker = TYPES["std_msgs/msg/Empty"]()
    messages.append(("/episode_start", "std_msgs/msg/Empty", T0 + 500 * MS, marker))
    messages.sort(key=lambda item: item[2])
    bag = write_bag(tmp_path / "bag", messages, "sqlite3")

    def episode_actions() -> list[list[float]]:
        with h5py.File(tmp_path / "out.hdf5", "r") as file:
            return [file[f"data/demo_{i}/actions"][:, 0].tolist() for i in range(len(file["data"]))]

    assert convert(tmp_path, bag, contract=contract) == 0  # the pause is longer than the tolerance: split
    assert episode_actions() == [list(range(20)), list(range(40, 60))]
    assert convert(tmp_path, bag, extra=("--split-gap", "0.5"), contract=contract) == 0
    assert episode_actions() == [list(range(20)), list(range(40, 60))]
    assert convert(tmp_path, bag, extra=("--split-topic", "/episode_start"), contract=contract) == 0
    assert episode_actions() == [list(range(10)), list(range(10, 20)), list(range(40, 60))]


def test_several_bags_become_several_episodes(tmp_path: Path) -> None:
    contract = {**CONTRACT, "observations": {"joint_pos": CONTRACT["observations"]["joint_pos"]}}
    bags = []
    for b, length in enumerate((5, 8)):
        messages = []
        for k in range(length):
            stamp = T0 + k * PERIOD
            messages.append(("/joint_states", "sensor_msgs/msg/JointState", stamp, joint_state(stamp, JOINTS, [b, k, 0])))
            messages.append(("/cmd", "std_msgs/msg/Float64MultiArray", stamp + MS, float_array([b, k, 1])))
        bags.append(write_bag(tmp_path / f"bag{b}", messages, ["mcap", "sqlite3"][b]))
    assert convert(tmp_path, *bags, contract=contract) == 0
    with h5py.File(tmp_path / "out.hdf5", "r") as file:
        assert file["data"].attrs["total"] == 13
        for b, length in enumerate((5, 8)):
            demo = file[f"data/demo_{b}"]
            assert demo.attrs["source_bag"] == str(bags[b])
            np.testing.assert_array_equal(demo["obs/joint_pos"][:], [[b, k, 0] for k in range(length)])
        assert sorted(file["mask/train"][:].tolist() + file["mask/valid"][:].tolist()) == [b"demo_0", b"demo_1"]
    dataset = RobomimicDataset(tmp_path / "out.hdf5", ["joint_pos"], action_horizon=3)  # the training reader
    assert len(dataset) == 13 and dataset.action_dim == 3
    window = dataset[4]  # the last step of the first bag: actions padded with its last command
    np.testing.assert_array_equal(window["actions"], [[0, 4, 1]] * 3)


def test_batched_joint_state_decoding_matches_the_typestore() -> None:
    """Little-endian messages are decoded in batches; big-endian ones are left to the one-by-one path."""
    rng = np.random.default_rng(1)
    messages, raws = [], []
    for i in range(400):
        count = int(rng.integers(0, 5))
        names = [f"joint_{j}" for j in rng.permutation(count)]
        message = TYPES["sensor_msgs/msg/JointState"](
            header=header(int(rng.integers(0, 2**40)), "f" * int(rng.integers(0, 6))), name=names,
            position=rng.normal(size=count), velocity=rng.normal(size=count * int(rng.integers(0, 2))),
            effort=rng.normal(size=count * int(rng.integers(0, 2))))
        messages.append(message)
        raws.append(bytes(TYPESTORE.serialize_cdr(message, message.__msgtype__, little_endian=i % 10 != 0)))
    decoded = {}
    for batch in decode_joint_states(raws, TYPESTORE):
        for position, row in enumerate(batch.rows):
            decoded[int(row)] = (batch.names, batch.header_stamps[position],
                                 {name: values[position] for name, values in batch.fields.items()})
    assert sorted(decoded) == [row for row in range(len(raws)) if row % 10 != 0]
    for row, (names, stamp, fields) in decoded.items():
        message = messages[row]
        assert names == tuple(message.name)
        assert stamp == message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        for name in ("position", "velocity", "effort"):
            np.testing.assert_array_equal(fields[name], getattr(message, name))


# ---- errors name the bag and the topic ---------------------------------------------------------------


def small_bag(tmp_path: Path, storage: str = "mcap", names: list[str] = JOINTS, raw: dict[int, bytes] | None = None,
              cmd_type: str = "std_msgs/msg/Float64MultiArray", action_offset: int = MS, name: str | None = None,
              extra: list[tuple[str, str, int, object]] = (), silent_topics: dict[str, str] | None = None) -> Path:
    """30 ticks of joint states (all 1.0) and commands, plus `extra` messages."""
    messages = list(extra)
    for k in range(30):
        stamp = T0 + k * PERIOD
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", stamp, joint_state(stamp, names, [1.0] * len(names))))
        command = float_array([0, 0, 0]) if cmd_type.endswith("Float64MultiArray") else TYPES[cmd_type](
            layout=TYPES["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.zeros(3, np.float32))
        messages.append(("/cmd", cmd_type, stamp + action_offset, command))
    messages.sort(key=lambda item: item[2])
    return write_bag(tmp_path / (name or f"bag_{storage}"), messages, storage, raw=raw, silent_topics=silent_topics)


def empty_bag(path: Path) -> Path:
    """The small contract's topics without a message, as recorded when nothing was published."""
    return write_bag(path, [], silent_topics={"/joint_states": "sensor_msgs/msg/JointState",
                                              "/cmd": "std_msgs/msg/Float64MultiArray"})


def truncate_mcap(bag: Path) -> Path:
    (mcap,) = bag.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    return bag


SMALL_CONTRACT = {**CONTRACT, "observations": {"joint_pos": CONTRACT["observations"]["joint_pos"]}}


def convert_error(tmp_path: Path, capsys, bag: Path, contract: dict = SMALL_CONTRACT) -> str:
    assert convert(tmp_path, bag, contract=contract) != 0
    assert not (tmp_path / "out.hdf5").exists()
    return capsys.readouterr().err


def test_missing_topic_and_wrong_type(tmp_path: Path, capsys) -> None:
    bag = small_bag(tmp_path)
    contract = {**CONTRACT, "observations": {**SMALL_CONTRACT["observations"],
                                             "eef_pos": CONTRACT["observations"]["eef_pos"]}}
    error = convert_error(tmp_path, capsys, bag, contract)
    assert f"{bag}: topic /eef_pose (geometry_msgs/msg/PoseStamped) is not in the bag; it has ['/cmd', '/joint_states']" in error
    contract = {**CONTRACT, "observations": {"tool_pose": CONTRACT["observations"]["tool_pose"]}}
    assert "neither /tf nor /tf_static is in the bag (needed by ['tool_pose'])" in convert_error(tmp_path, capsys, bag, contract)

    wrong = small_bag(tmp_path, "sqlite3", cmd_type="std_msgs/msg/Float32MultiArray")
    error = convert_error(tmp_path, capsys, wrong)
    assert (f"{wrong}: topic /cmd is std_msgs/msg/Float32MultiArray in the bag, the contract reads"
            " std_msgs/msg/Float64MultiArray") in error


def test_empty_bag_and_topic_without_messages(tmp_path: Path, capsys) -> None:
    empty = empty_bag(tmp_path / "empty")
    error = convert_error(tmp_path, capsys, empty)
    assert f"{empty}: empty bag: no messages on any topic (the contract reads ['/cmd', '/joint_states'])" in error

    bag = small_bag(tmp_path, silent_topics={"/eef_pose": "geometry_msgs/msg/PoseStamped"})
    contract = {**CONTRACT, "observations": {**SMALL_CONTRACT["observations"],
                                             "eef_pos": CONTRACT["observations"]["eef_pos"]}}
    error = convert_error(tmp_path, capsys, bag, contract)
    assert f"{bag}: /eef_pose: no messages in the bag (the contract reads ['eef_pos'] from it)" in error


def test_topic_whose_messages_all_lack_a_joint(tmp_path: Path, capsys) -> None:
    bag = small_bag(tmp_path, names=["j1", "j2", "elbow"])
    error = convert_error(tmp_path, capsys, bag)
    assert (f"{bag}: /joint_states: no usable message for ['joint_pos']: all 30 dropped, 30 malformed (first: "
            f"message 0 (receive time {T0} ns) does not fit the contract: joint_pos: /joint_states JointState lacks "
            "joints ['j3'] (message has ['j1', 'j2', 'elbow']))") in error


def test_undecodable_message_bytes_are_dropped_as_malformed(tmp_path: Path, capsys) -> None:
    good = TYPESTORE.serialize_cdr(joint_state(T0, JOINTS, [1.0, 2.0, 3.0]), "sensor_msgs/msg/JointState")
    bag = small_bag(tmp_path, raw={4: bytes(good[:30])})  # message 4 is the third /joint_states message
    assert convert(tmp_path, bag, contract=SMALL_CONTRACT) == 0
    printed = capsys.readouterr().out
    assert (f"/joint_states: dropped 1 message(s): 1 malformed (first: message 2 (receive time {T0 + 2 * PERIOD} ns) "
            "cannot be decoded as sensor_msgs/msg/JointState") in printed
    assert "30 ticks at 20 Hz, kept 29 in 2 episode(s); 1 dropped (joint_pos stale at 1)" in printed


def test_truncated_mcap_and_corrupted_sqlite(tmp_path: Path, capsys) -> None:
    bag = truncate_mcap(small_bag(tmp_path, "mcap"))
    error = convert_error(tmp_path, capsys, bag)
    assert f"mvp bag2hdf5: error: {bag}: " in error and "corrupted or truncated" in error

    bag = small_bag(tmp_path, "sqlite3")
    (database,) = bag.glob("*.db3")
    data = bytearray(database.read_bytes())
    data[100:4096] = bytes(range(256)) * 15 + bytes(range(256))[:156]  # garbage over the schema page
    database.write_bytes(bytes(data))
    error = convert_error(tmp_path, capsys, bag)
    assert f"mvp bag2hdf5: error: {bag}: " in error and "corrupted or truncated" in error

    error = convert_error(tmp_path, capsys, tmp_path / "no_such_bag")
    assert f"{tmp_path / 'no_such_bag'}: no such bag" in error


def test_empty_results(tmp_path: Path, capsys) -> None:
    early = small_bag(tmp_path, action_offset=-10_000 * MS)  # every command before the first joint state
    error = convert_error(tmp_path, capsys, early)
    assert f"{early}: empty result: the streams do not overlap in time (joint_pos (/joint_states) " in error

    shutil.rmtree(early)
    stale = small_bag(tmp_path, action_offset=20 * MS)
    asof_commands = {**SMALL_CONTRACT, "action": {**CONTRACT["action"], "align": {"rule": "asof", "tolerance_s": 0.01}}}
    error = convert_error(tmp_path, capsys, stale, asof_commands)  # every tick's latest command is 30 ms old
    assert f"{stale}: empty result: none of 30 ticks has every stream within tolerance (action (/cmd) stale at 30)" in error


def test_tf_without_a_chain(tmp_path: Path, capsys) -> None:
    messages = [("/tf_static", "tf2_msgs/msg/TFMessage", T0,
                 tf_message([transform(T0, "base", "link1", np.array([0, 0, 0, 0, 0, 0, 1.0]))]))]
    for k in range(5):
        messages.append(("/cmd", "std_msgs/msg/Float64MultiArray", T0 + k * PERIOD + MS, float_array([0, 0, 0])))
    bag = write_bag(tmp_path / "bag", messages)
    contract = {**CONTRACT, "observations": {"tool_pose": CONTRACT["observations"]["tool_pose"]}}
    error = convert_error(tmp_path, capsys, bag, contract)
    assert (f"{bag}: /tf, /tf_static: no chain of transforms from 'base' to 'tool' for tool_pose"
            " (frames in the bag: ['base', 'link1'])") in error


# ---- messages the live node rejects are dropped, counted by reason ---------------------------------------


def table_rows(printed: str) -> dict[str, list[str]]:
    """Each key's row of the first summary table: topic, read, used, skipped, non_finite, malformed, stale ticks."""
    rows: dict[str, list[str]] = {}
    for line in printed.splitlines():
        key, *columns = line.split() or [""]
        if len(columns) == 7 and columns[1].isdigit():
            rows.setdefault(key, columns)
    return rows


def datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return found


def test_messages_the_node_rejects_are_dropped_and_counted_by_reason(tmp_path: Path, capsys) -> None:
    scenario = awkward_scenario()
    assert convert(tmp_path, write_bag(tmp_path / "clean", scenario.messages)) == 0
    clean_rows = table_rows(capsys.readouterr().out)
    clean = datasets(tmp_path / "out.hdf5")

    def tick(k: int) -> int:
        return T0 + k * PERIOD

    image = TYPES["sensor_msgs/msg/Image"]
    wrong_size = image(header=header(T0 + 70 * MS), height=3, width=4, encoding="rgb8", is_bigendian=0, step=12,
                       data=np.zeros(36, np.uint8))
    wrong_encoding = image(header=header(T0 + 170 * MS), height=6, width=8, encoding="yuv422", is_bigendian=0, step=16,
                           data=np.zeros(96, np.uint8))
    corrupt_jpeg = TYPES["sensor_msgs/msg/CompressedImage"](
        header=header(tick(15)), format="jpeg", data=np.frombuffer(b"\xff\xd8\xff\xe0" + bytes(range(64)), np.uint8))
    # Each is received after the good message of the same stamp, which it would replace if it were used.
    bad = [
        ("/joint_states", "sensor_msgs/msg/JointState", tick(12) + 2 * MS,
         joint_state(tick(12), ["j1", "j2"], [0.0, 0.0])),
        ("/wrist/compressed", "sensor_msgs/msg/CompressedImage", tick(15) + 6 * MS, corrupt_jpeg),
        ("/side/image_raw", "sensor_msgs/msg/Image", T0 + 75 * MS, wrong_size),
        ("/side/image_raw", "sensor_msgs/msg/Image", T0 + 175 * MS, wrong_encoding),
        ("/eef_pose", "geometry_msgs/msg/PoseStamped", tick(24) + 5 * MS, pose_stamped(tick(24), [np.nan, 0.0, 0.0])),
        ("/tf", "tf2_msgs/msg/TFMessage", tick(30) + 7 * MS, tf_message([])),
    ]
    messages = scenario.messages + bad
    raw = {len(messages) - 1: b"\x00\x01\x00\x00\xff\xff\xff\x7f"}  # the /tf message claims 2**31 - 1 transforms
    # A good joint state in big-endian CDR goes the one-by-one way too, and is used.
    big_endian = next(index for index, (topic, _, _, message) in enumerate(messages)
                      if topic == "/joint_states" and stamp_ns(message.header.stamp) == tick(8))
    raw[big_endian] = bytes(TYPESTORE.serialize_cdr(messages[big_endian][3], "sensor_msgs/msg/JointState",
                                                    little_endian=False))
    assert convert(tmp_path, write_bag(tmp_path / "noisy", messages, raw=raw)) == 0
    printed = capsys.readouterr().out

    noisy = datasets(tmp_path / "out.hdf5")
    assert noisy.keys() == clean.keys()
    for name, values in clean.items():
        np.testing.assert_array_equal(noisy[name], values, err_msg=name)
    added = {"joint_pos": Counter(malformed=1), "wrist_image": Counter(malformed=1), "side_image": Counter(malformed=2),
             "eef_pos": Counter(non_finite=1)}
    rows = table_rows(printed)
    for key, (topic, read, used, skipped, non_finite, malformed, stale) in clean_rows.items():
        more = added.get(key, Counter())
        expected = [topic, int(read) + more.total(), used, skipped, int(non_finite) + more["non_finite"],
                    int(malformed) + more["malformed"], stale]
        assert rows[key] == list(map(str, expected)), key
    for line in [
        f"/joint_states: dropped 2 message(s): 1 non_finite (first: message 54 (receive time {tick(10) + MS} ns) does "
        "not fit the contract: joint_pos: /joint_states message has NaN or inf in [501.0, nan, 503.0]), 1 malformed "
        f"(first: message 66 (receive time {tick(12) + 2 * MS} ns) does not fit the contract: joint_pos: /joint_states "
        "JointState lacks joints ['j3'] (message has ['j1', 'j2']))",
        f"/wrist/compressed: dropped 1 message(s): 1 malformed (first: message 16 (receive time {tick(15) + 6 * MS} ns) "
        "does not fit the contract: wrist_image: /wrist/compressed CompressedImage with format 'jpeg' could not be "
        "decoded (corrupt data))",
        f"/side/image_raw: dropped 2 message(s): 2 malformed (first: message 2 (receive time {T0 + 75 * MS} ns) does not "
        "fit the contract: side_image: /side/image_raw Image is 4x3, the contract says 8x6 (set image.resize, or resize"
        " upstream))",
        f"/eef_pose: dropped 1 message(s): 1 non_finite (first: message 63 (receive time {tick(24) + 5 * MS} ns) does not "
        "fit the contract: eef_pos: /eef_pose message has NaN or inf in [nan, 0.0, 0.0])",
        f"/tf: dropped 1 message(s): 1 malformed (first: message 77 (receive time {tick(30) + 7 * MS} ns) cannot be "
        "decoded as tf2_msgs/msg/TFMessage",
        "total: 1 bag(s) converted, 0 skipped; kept 39 of 40 ticks in 2 episode(s)",
        "/joint_states: dropped 2 message(s): 1 non_finite, 1 malformed\n",
        "/side/image_raw: dropped 2 message(s): 2 malformed\n",
    ]:
        assert line in printed, line


def test_a_message_bad_for_one_key_is_dropped_for_every_key_of_its_topic(tmp_path: Path, capsys) -> None:
    finger = {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "joints": ["finger"],
              "align": {"rule": "asof", "tolerance_s": 0.02}}
    contract = {**SMALL_CONTRACT, "observations": {**SMALL_CONTRACT["observations"], "finger": finger}}
    # Received after the good message of the same stamp, which they would replace for joint_pos if they were used.
    later = [
        ("/joint_states", "sensor_msgs/msg/JointState", T0 + 10 * PERIOD + 2 * MS,
         joint_state(T0 + 10 * PERIOD, [*JOINTS, "finger"], [9.0, 9.0, 9.0, np.nan])),
        ("/joint_states", "sensor_msgs/msg/JointState", T0 + 12 * PERIOD + 2 * MS,
         joint_state(T0 + 12 * PERIOD, JOINTS, [9.0, 9.0, 9.0])),
    ]
    bag = small_bag(tmp_path, names=[*JOINTS, "finger"], extra=later)
    assert convert(tmp_path, bag, contract=contract) == 0
    with h5py.File(tmp_path / "out.hdf5", "r") as file:
        np.testing.assert_array_equal(file["data/demo_0/obs/joint_pos"][:], np.ones((30, 3)))
        np.testing.assert_array_equal(file["data/demo_0/obs/finger"][:], np.ones((30, 1)))
    printed = " ".join(capsys.readouterr().out.split())
    for key in ("joint_pos", "finger"):
        assert f"{key} /joint_states 32 30 0 1 1 0" in printed


# ---- bad bags: stop before writing, or --skip-bad-bags ----------------------------------------------------


def test_a_bad_bag_stops_the_run_before_anything_is_written(tmp_path: Path, capsys) -> None:
    good = [small_bag(tmp_path, name=f"good_{index}") for index in range(2)]
    corrupt = truncate_mcap(small_bag(tmp_path, name="corrupt"))
    assert convert(tmp_path, *good, corrupt, contract=SMALL_CONTRACT) != 0
    captured = capsys.readouterr()
    assert f"mvp bag2hdf5: error: {corrupt}: cannot open bag, corrupted or truncated?" in captured.err
    assert "(--skip-bad-bags converts the other 2 bag(s))" in captured.err
    assert str(good[0]) not in captured.out  # every bag is checked before the first is converted
    assert not list(tmp_path.glob("*out.hdf5*"))


def test_skip_bad_bags_converts_the_rest_and_lists_the_skipped(tmp_path: Path, capsys) -> None:
    good = [small_bag(tmp_path, name=f"good_{index}") for index in range(2)]
    corrupt = truncate_mcap(small_bag(tmp_path, name="corrupt"))
    empty = empty_bag(tmp_path / "empty")
    unusable = small_bag(tmp_path, name="unusable", names=["j1", "j2", "elbow"])  # found out while reading it
    reasons = {corrupt: "cannot open bag, corrupted or truncated?", empty: "empty bag: no messages on any topic",
               unusable: "/joint_states: no usable message for ['joint_pos']: all 30 dropped, 30 malformed"}
    bags = [good[0], corrupt, empty, unusable, good[1]]
    assert convert(tmp_path, *bags, extra=("--skip-bad-bags",), contract=SMALL_CONTRACT) == 0
    printed = capsys.readouterr().out

    with h5py.File(tmp_path / "out.hdf5", "r") as file:
        skipped = json.loads(file.attrs["skipped_bags"])
        assert [Path(entry["bag"]) for entry in skipped] == list(reasons)
        assert all(entry["reason"].startswith(reasons[Path(entry["bag"])]) for entry in skipped), skipped
        assert json.loads(file.attrs["source_bags"]) == [str(bag) for bag in good]
        assert [file[f"data/demo_{index}"].attrs["source_bag"] for index in range(2)] == [str(bag) for bag in good]
    assert "total: 2 bag(s) converted, 3 skipped; kept 60 of 60 ticks in 2 episode(s)" in printed
    for bag, reason in reasons.items():
        assert f"  skipped {bag}: {reason}" in printed
    assert f"wrote {tmp_path / 'out.hdf5'}: 2 episode(s) from 2 bag(s), 3 skipped" in printed

    (tmp_path / "out.hdf5").unlink()
    assert convert(tmp_path, empty, unusable, extra=("--skip-bad-bags",), contract=SMALL_CONTRACT) != 0
    assert "all 2 bag(s) were skipped, there is nothing to write" in capsys.readouterr().err
    assert not list(tmp_path.glob("*out.hdf5*"))


# ---- real robots: joints from several publishers, the action over several controllers -------------------

ARM, GRIPPER = ["shoulder", "elbow", "wrist"], ["finger"]


def split_contract(gripper_topic: str) -> dict:
    return {
        "contract_version": 1, "robot": "arm_and_gripper", "control_rate_hz": 20,
        "observations": {"joint_pos": {
            "type": "sensor_msgs/msg/JointState", "joints": ["shoulder", "finger", "elbow", "wrist"],
            "sources": [{"topic": "/joint_states", "joints": ARM}, {"topic": gripper_topic, "joints": GRIPPER}],
            "align": {"rule": "asof", "tolerance_s": 0.05}}},
        "action": {"outputs": [
            {"type": "trajectory_msgs/msg/JointTrajectory", "topic": "/arm_controller/joint_trajectory", "names": ARM,
             "limits": {"lower": [-9] * 3, "upper": [9] * 3}},
            {"type": "std_msgs/msg/Float64MultiArray", "topic": "/gripper_controller/commands", "names": GRIPPER,
             "limits": {"lower": [0], "upper": [1]}}]},
    }


def trajectory(names: list[str], positions: list[float]):
    point = TYPES["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=np.array(positions), velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
        time_from_start=TYPES["builtin_interfaces/msg/Duration"](sec=0, nanosec=PERIOD))
    return TYPES["trajectory_msgs/msg/JointTrajectory"](header=header(0), joint_names=names, points=[point])


@pytest.mark.parametrize(("storage", "gripper_topic", "relative"), [
    ("mcap", "/joint_states", False), ("sqlite3", "/joint_states", False), ("mcap", "/gripper/joint_states", False),
    ("sqlite3", "/gripper/joint_states", False), ("mcap", "/joint_states", True)])
def test_arm_and_gripper_publishers_and_two_controllers_convert(tmp_path: Path, capsys, storage: str,
                                                                 gripper_topic: str, relative: bool) -> None:
    """The arm driver publishes at 100 Hz, the gripper driver at 25 Hz (on /joint_states too, or on a
    topic of its own); a message with neither's joints is dropped as malformed. Each joint takes its
    latest sample at the tick; the action is the arm's trajectory point then the gripper command. With
    the arm's output relative to joint_pos, its actions are the commands minus the tick's arm sample."""
    messages, arm_samples, gripper_samples, arm_commands, gripper_commands = [], [], [], [], []
    for k in range(100):  # 1 s of arm states
        stamp = T0 + k * 10 * MS
        position = [k * 0.01, -k * 0.02, 0.5]
        arm_samples.append((stamp, position))
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", stamp + MS, joint_state(stamp, ARM, position)))
        if k % 4 == 1:
            gripper_samples.append((stamp, [k * 0.001]))
            messages.append((gripper_topic, "sensor_msgs/msg/JointState", stamp + 2 * MS,
                             joint_state(stamp, GRIPPER, [k * 0.001])))
        if k % 5 == 2:
            arm_commands.append((stamp + 3 * MS, [k, -k, 0.0]))
            messages.append(("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", stamp + 3 * MS,
                             trajectory(["wrist", "shoulder", "elbow"], [0.0, k, -k])))  # by name, in any order
            gripper_commands.append((stamp + 4 * MS, [k / 100]))
            messages.append(("/gripper_controller/commands", "std_msgs/msg/Float64MultiArray", stamp + 4 * MS,
                             float_array([k / 100])))
    messages.append(("/joint_states", "sensor_msgs/msg/JointState", T0 + 505 * MS,
                     joint_state(T0 + 505 * MS, ["conveyor"], [1.0])))
    messages.sort(key=lambda message: message[2])
    bag = write_bag(tmp_path / "split", messages, storage)
    contract = split_contract(gripper_topic)
    if gripper_topic == "/joint_states":  # a plain key on the shared topic takes only the arm driver's messages
        contract["observations"]["arm_pos"] = {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states",
                                               "joints": ARM, "align": {"rule": "asof", "tolerance_s": 0.05}}
    if relative:
        contract["action"]["outputs"][0] |= {"relative_to": "joint_pos", "safe_action": {"rule": "hold", "zero": ARM}}
    assert convert(tmp_path, bag, contract=contract) == 0
    printed = capsys.readouterr().out
    assert "dropped 1 message(s): 1 malformed" in printed and "carries none of the joints of" in printed

    def asof(samples, tick):
        return next(value for stamp, value in reversed(samples) if stamp <= tick)

    def following(samples, tick):
        return next(value for stamp, value in samples if stamp >= tick)

    first = T0 + 10 * MS  # both sources have a sample (the gripper's first)
    ticks = [first + n * PERIOD for n in range(20)]  # until the last commands (T0 + 973 ms, 974 ms)
    expected_obs = [[asof(arm_samples, t)[0], asof(gripper_samples, t)[0], *asof(arm_samples, t)[1:]] for t in ticks]
    expected_actions = np.array([following(arm_commands, t) + following(gripper_commands, t) for t in ticks])
    if relative:
        expected_actions[:, :3] -= [asof(arm_samples, t) for t in ticks]
    found = datasets(tmp_path / "out.hdf5")
    np.testing.assert_array_equal(found["data/demo_0/obs/joint_pos"], expected_obs)
    if gripper_topic == "/joint_states":
        np.testing.assert_array_equal(found["data/demo_0/obs/arm_pos"], [asof(arm_samples, t) for t in ticks])
    np.testing.assert_array_equal(found["data/demo_0/actions"], expected_actions)


# ---- what Robomimic's algorithms read -------------------------------------------------------------------


def test_robomimics_sequence_dataset_loads_a_converted_bag_with_next_obs(tmp_path: Path) -> None:
    """robomimic 0.3.0's SequenceDataset, as BCQ, CQL, IQL and TD3-BC load it (next observations, rewards,
    dones), reads the awkward bag's two episodes: next_obs is the next step's observation (the last
    step's own at the end), dones are integers with 1 at the last step, rewards are zeros."""
    obs_utils = pytest.importorskip("robomimic.utils.obs_utils", reason="robomimic 0.3.0 not installed")
    from robomimic.utils.dataset import SequenceDataset

    assert convert(tmp_path, write_bag(tmp_path / "bag", awkward_scenario().messages)) == 0
    path = tmp_path / "out.hdf5"
    keys = ["eef_pos", "joint_pos", "object", "tool_pose"]
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": keys, "rgb": []}})
    found = datasets(path)
    for filter_key in ("train", "valid"):
        dataset = SequenceDataset(
            str(path), obs_keys=keys, dataset_keys=("actions", "rewards", "dones"), load_next_obs=True, frame_stack=1,
            seq_length=1, pad_frame_stack=True, pad_seq_length=True, goal_mode=None, hdf5_cache_mode="all",
            hdf5_use_swmr=True, filter_by_attribute=filter_key)
        assert list(dataset.demos) == [name.decode() for name in found[f"mask/{filter_key}"]] and len(dataset.demos) == 1
        demo = f"data/{dataset.demos[0]}"
        steps = len(found[f"{demo}/actions"])
        assert len(dataset) == steps
        for step in range(steps):
            item = dataset[step]
            last = step == steps - 1
            assert item["dones"][0] == last and item["rewards"][0] == 0.0
            np.testing.assert_array_equal(item["actions"][0], found[f"{demo}/actions"][step])
            for key in keys:
                np.testing.assert_array_equal(item["obs"][key][0], found[f"{demo}/obs/{key}"][step])
                np.testing.assert_array_equal(item["next_obs"][key][0], found[f"{demo}/obs/{key}"][min(step + 1, steps - 1)])
        dataset.close_and_delete_hdf5_handle()
    for demo in ("data/demo_0", "data/demo_1"):
        assert found[f"{demo}/dones"].dtype == np.int64 and found[f"{demo}/rewards"].dtype == np.float64
        for key in CONTRACT["observations"]:
            np.testing.assert_array_equal(found[f"{demo}/next_obs/{key}"][:-1], found[f"{demo}/obs/{key}"][1:])
