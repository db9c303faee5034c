"""Bag conversion speed: write a large synthetic bag (JointState at 500 Hz, 9 joints, plus 20 Hz
commands), convert it with `mvp bag2hdf5`'s conversion, and report JointState messages per second
(target: >= 50k/s). For comparison it also times reading + typestore deserialization alone, the
per-message path the batched JointState decoder replaces.

    python benchmarks/bench_bag_conversion.py --messages 200000 --storage mcap --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_typestore

from mvp_ros.data.bag2hdf5 import convert
from mvp_ros.data.contract import Contract

JOINT_RATE_HZ = 500
JOINTS = [f"robot0_joint{i}" for i in range(1, 8)] + ["gripper0_right_finger_joint1", "gripper0_right_finger_joint2"]
CONTRACT = {
    "contract_version": 1,
    "robot": "benchmark",
    "control_rate_hz": 20,
    "observations": {
        "robot0_joint_pos": {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "joints": JOINTS[:7],
                             "align": {"rule": "asof", "tolerance_s": 0.01}},
        "robot0_gripper_qpos": {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "joints": JOINTS[7:],
                                "align": {"rule": "asof", "tolerance_s": 0.01}},
    },
    "action": {"topic": "/policy/command", "type": "std_msgs/msg/Float64MultiArray", "names": list("abcdefg"),
               "limits": {"lower": [-1] * 7, "upper": [1] * 7}},
}


def write_synthetic_bag(path: Path, messages: int, storage: str) -> None:
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    rng = np.random.default_rng(0)
    start = 1_700_000_000 * 10**9
    joint_period = 10**9 // JOINT_RATE_HZ
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        joints = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=typestore)
        commands = writer.add_connection("/policy/command", "std_msgs/msg/Float64MultiArray", typestore=typestore)
        for index in range(messages):
            stamp = start + index * joint_period
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="")
            message = types["sensor_msgs/msg/JointState"](header=header, name=JOINTS, position=rng.normal(size=9),
                                                          velocity=rng.normal(size=9), effort=np.zeros(9))
            writer.write(joints, stamp + 300_000, typestore.serialize_cdr(message, "sensor_msgs/msg/JointState"))
            if index % (JOINT_RATE_HZ // 20) == 0:
                command = types["std_msgs/msg/Float64MultiArray"](layout=layout, data=rng.uniform(-1, 1, 7))
                writer.write(commands, stamp + 2_000_000, typestore.serialize_cdr(command, command.__msgtype__))


def time_typestore_only(path: Path) -> float:
    """Seconds to read and deserialize every JointState with the typestore, one by one."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    begin = time.perf_counter()
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic == "/joint_states"]
        for connection, _, raw in reader.messages(connections):
            typestore.deserialize_cdr(raw, connection.msgtype)
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="JointState messages in the bag")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--repeats", type=int, default=3, help="conversions timed; the best is reported")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        bag = Path(directory) / "bag"
        begin = time.perf_counter()
        write_synthetic_bag(bag, args.messages, args.storage)
        print(f"wrote {args.messages} JointState messages ({args.storage}) in {time.perf_counter() - begin:.1f} s")
        contract = Contract.from_dict(CONTRACT)
        seconds = []
        for repeat in range(args.repeats):
            begin = time.perf_counter()
            convert([bag], contract, Path(directory) / f"out{repeat}.hdf5", log=lambda line: None)
            seconds.append(time.perf_counter() - begin)
        typestore_seconds = time_typestore_only(bag)

    results = {
        "command": " ".join(["python", *sys.argv]),
        "joint_state_messages": args.messages,
        "storage": args.storage,
        "conversion_seconds_best": min(seconds),
        "conversion_seconds_all": seconds,
        "joint_state_messages_per_s": args.messages / min(seconds),
        "typestore_read_and_deserialize_messages_per_s": args.messages / typestore_seconds,
        "target_messages_per_s": 50_000,
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} cores",
        "load_average_1min": os.getloadavg()[0],  # the machine may be shared: higher load, lower rates
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
