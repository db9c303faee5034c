"""`mvp bag2hdf5` streams camera frames: converting a bag three times as long, with full-size 320x240
frames stored, costs no more peak memory (the converting process's own high-water mark); the frames
written a block at a time are the camera's, tick by tick, in `obs` and in `next_obs`, and the file
equals the one written from the same episodes held in memory, as conversion wrote them before."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mvp_ros.data import robomimic
from mvp_ros.data.bag2hdf5 import bag_episodes, convert
from mvp_ros.data.contract import Contract
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.data.rosbag_reader import Frames, default_typestore, read_bag
from test_bag2hdf5 import MS, T0, TYPES, datasets, float_array, header, joint_state, write_bag

REPO = Path(__file__).parents[1]
WIDTH, HEIGHT = 320, 240
CAMERA_HZ, JOINTS_HZ, RATE_HZ = 30, 100, 10
CONTRACT = {
    "contract_version": 1, "robot": "streaming_camera", "control_rate_hz": RATE_HZ,
    "observations": {
        "joint_pos": {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states", "joints": ["j1"]},
        "camera": {"type": "sensor_msgs/msg/Image", "topic": "/camera/image_raw",
                   "image": {"width": WIDTH, "height": HEIGHT, "encoding": "rgb8"},
                   "align": {"rule": "asof", "tolerance_s": 0.05}},
    },
    "action": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/command", "names": ["j1"],
               "limits": {"lower": [-100], "upper": [100]}},
}


def frame(index: int) -> np.ndarray:
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([(rows + index) % 256, (columns + 2 * index) % 256, np.full_like(rows, index % 256)], 2).astype(np.uint8)


def camera_bag(path: Path, seconds: int) -> Path:
    """Camera frames at 30 Hz (frame i stamped i/30 s after T0), joint states at 100 Hz, commands at 10 Hz."""
    messages = []
    for index in range(seconds * CAMERA_HZ):
        stamp = T0 + index * 10**9 // CAMERA_HZ
        image = TYPES["sensor_msgs/msg/Image"](header=header(stamp), height=HEIGHT, width=WIDTH, encoding="rgb8",
                                               is_bigendian=0, step=3 * WIDTH, data=frame(index).ravel())
        messages.append(("/camera/image_raw", "sensor_msgs/msg/Image", stamp + MS, image))
    for index in range(seconds * JOINTS_HZ):
        stamp = T0 + index * 10 * MS
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", stamp + MS, joint_state(stamp, ["j1"], [index])))
        if index % 10 == 0:
            messages.append(("/command", "std_msgs/msg/Float64MultiArray", stamp + 2 * MS, float_array([index])))
    return write_bag(path, sorted(messages, key=lambda message: message[2]))


# The child's own high-water mark: ru_maxrss of a forked child also counts the parent's memory at the fork.
CONVERT_AND_REPORT_PEAK = """
import sys
from mvp_ros.cli import main
code = main(sys.argv[1:])
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")))
sys.exit(code)
"""


def convert_in_subprocess(bag: Path, directory: Path) -> float:
    """Peak resident memory (MiB) of `mvp bag2hdf5` converting `bag` in a process of its own."""
    contract = directory / "contract.yaml"
    contract.write_text(yaml.safe_dump(CONTRACT))
    result = subprocess.run([sys.executable, "-c", CONVERT_AND_REPORT_PEAK, "bag2hdf5", "--contract", str(contract),
                             "--out", str(directory / f"{bag.name}.hdf5"), str(bag)], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return int(result.stdout.split()[-2]) / 1024  # "VmHWM: <kB> kB"


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_bag_length_and_the_streamed_frames_are_the_cameras(tmp_path: Path) -> None:
    short, long = (convert_in_subprocess(camera_bag(tmp_path / f"bag_{seconds}s", seconds), tmp_path)
                   for seconds in (4, 12))
    # The long bag has 240 more camera frames (53 MiB) and stores 80 more ticks twice (obs, next_obs: 35 MiB);
    # holding the decoded frames, as conversion did before it streamed, grew the peak by twice the frames.
    assert long - short < 5, (short, long)
    with h5py.File(tmp_path / "bag_12s.hdf5", "r") as file:
        demo = file["data/demo_0"]
        ticks = len(demo["actions"])
        assert ticks == 12 * RATE_HZ
        first_frame = (demo.attrs["first_tick_ns"] - T0) * CAMERA_HZ // 10**9
        for tick in range(ticks):  # more ticks than one block of frames written at a time
            expected = frame(first_frame + tick * CAMERA_HZ // RATE_HZ)
            np.testing.assert_array_equal(demo["obs/camera"][tick], expected, err_msg=f"tick {tick}")
        obs, next_obs = demo["obs/camera"][()], demo["next_obs/camera"][()]
        np.testing.assert_array_equal(next_obs[:-1], obs[1:])
        np.testing.assert_array_equal(next_obs[-1], obs[-1])


def test_streamed_file_equals_the_one_written_from_memory(tmp_path: Path) -> None:
    bag = camera_bag(tmp_path / "bag", 4)
    contract = Contract.from_dict(CONTRACT)
    convert([bag], contract, tmp_path / "streamed.hdf5", log=lambda line: None)
    (episode,), _ = bag_episodes(read_bag(bag, contract, default_typestore()), contract)
    assert isinstance(episode.obs["camera"], Frames) and isinstance(episode.next_obs["camera"], Frames)
    assert episode.obs["camera"].shape[0] * WIDTH * HEIGHT * 3 > 2 * robomimic._BLOCK_BYTES  # written in 3 blocks
    in_memory = Episode(obs={key: np.asarray(value) for key, value in episode.obs.items()}, actions=episode.actions,
                        next_obs={key: np.asarray(value) for key, value in episode.next_obs.items()}, attrs=episode.attrs)
    write_robomimic(tmp_path / "in_memory.hdf5", [in_memory])
    streamed, expected = datasets(tmp_path / "streamed.hdf5"), datasets(tmp_path / "in_memory.hdf5")
    assert sorted(streamed) == sorted(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(streamed[name], array, err_msg=name)
