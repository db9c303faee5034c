"""Converting camera bags: peak memory and speed of `mvp bag2hdf5` on a 640x480 JPEG camera.

Writes MCAP bags with rosbags: a 30 Hz sensor_msgs/CompressedImage camera (640x480 JPEG, format
"rgb8; jpeg compressed bgr8"), 100 Hz joint states and 10 Hz commands, for each bag length asked.
Each bag is converted by `mvp bag2hdf5` in a fresh process, whose peak resident memory (its own
VmHWM: a forked child's ru_maxrss also counts the parent's memory at the fork) and wall time are
reported, once with the contract cropping the image to 480x480 and resizing it to 84x84 (what the
policy sees) and once, for the shortest bag, storing the full 640x480 image. With --compare-with
REV every conversion is also run with the package as it was at git revision REV, on the same bag,
and the two files' observations and actions are compared.

    python benchmarks/bench_image_conversion.py --seconds 20 60 --compare-with 6feb956 \
        --json benchmarks/results/image_conversion.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import yaml
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_typestore

CAMERA_HZ, JOINTS_HZ, COMMAND_HZ = 30, 100, 10
WIDTH, HEIGHT = 640, 480
JOINTS = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]
RESIZED = {"width": 84, "height": 84, "encoding": "rgb8", "crop": {"x": 80, "y": 0, "width": 480, "height": 480},
           "resize": "area"}
FULL = {"width": WIDTH, "height": HEIGHT, "encoding": "rgb8"}
REPO = Path(__file__).resolve().parents[1]
CONVERT_AND_REPORT_PEAK = """
import sys
from mvp_ros.cli import main
code = main(sys.argv[1:])
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")))
sys.exit(code)
"""


def contract(image: dict) -> dict:
    return {
        "contract_version": 1, "robot": "camera_benchmark", "control_rate_hz": COMMAND_HZ,
        "observations": {
            "joint_pos": {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states", "joints": JOINTS},
            "wrist_image": {"type": "sensor_msgs/msg/CompressedImage", "topic": "/wrist/image_raw/compressed",
                            "image": image, "align": {"rule": "asof", "tolerance_s": 0.05}},
        },
        "action": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/command", "names": JOINTS,
                   "limits": {"lower": [-7] * 6, "upper": [7] * 6}},
    }


def camera_frames(count: int) -> list[bytes]:
    """Distinct JPEGs of a textured scene (gradients, shapes, sensor noise), as a camera's are."""
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for index in range(count):
        scene = np.stack([(rows // 2 + index) % 256, (columns // 3 + 2 * index) % 256, (rows + columns) // 5 % 256], 2)
        scene = scene.astype(np.int16)
        cv2.circle(scene, (100 + 3 * index % 400, 240), 60, (30, 200, 90), -1)
        noisy = np.clip(scene + rng.normal(0, 6, scene.shape), 0, 255).astype(np.uint8)
        ok, encoded = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        frames.append(encoded.tobytes())
    return frames


def write_bag(path: Path, seconds: float, frames: list[bytes]) -> int:
    """The bag; its size in bytes."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    start = 1_700_000_000 * 10**9

    def header(stamp: int):
        return types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="")

    events = [(start + i * 10**9 // CAMERA_HZ, "camera", i) for i in range(int(seconds * CAMERA_HZ))]
    events += [(start + i * 10**9 // JOINTS_HZ, "joints", i) for i in range(int(seconds * JOINTS_HZ))]
    events += [(start + i * 10**9 // COMMAND_HZ + 2_000_000, "command", i) for i in range(int(seconds * COMMAND_HZ))]
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {
            "camera": writer.add_connection("/wrist/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                                            typestore=typestore),
            "joints": writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=typestore),
            "command": writer.add_connection("/command", "std_msgs/msg/Float64MultiArray", typestore=typestore),
        }
        for stamp, kind, index in sorted(events):
            if kind == "camera":
                message = types["sensor_msgs/msg/CompressedImage"](
                    header=header(stamp), format="rgb8; jpeg compressed bgr8",
                    data=np.frombuffer(frames[index % len(frames)], np.uint8))
                msgtype = "sensor_msgs/msg/CompressedImage"
            elif kind == "joints":
                message = types["sensor_msgs/msg/JointState"](header=header(stamp), name=JOINTS,
                                                              position=np.full(6, index * 1e-3), velocity=np.zeros(6),
                                                              effort=np.zeros(0))
                msgtype = "sensor_msgs/msg/JointState"
            else:
                message = types["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.full(6, index * 1e-2))
                msgtype = "std_msgs/msg/Float64MultiArray"
            writer.write(connections[kind], stamp + 1_000_000, typestore.serialize_cdr(message, msgtype))
    return sum(file.stat().st_size for file in path.iterdir())


def convert_in_subprocess(bag: Path, image: dict, directory: Path, out: Path, code: Path = REPO) -> dict:
    """`mvp bag2hdf5` (the package in directory `code`) in a child process: its wall seconds and peak
    resident memory."""
    contract_path = directory / "contract.yaml"
    contract_path.write_text(yaml.safe_dump(contract(image), sort_keys=False))
    begin = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CONVERT_AND_REPORT_PEAK, "bag2hdf5", "--contract", str(contract_path),
                             "--out", str(out), str(bag)], cwd=code, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(code)})
    seconds = time.perf_counter() - begin
    if result.returncode != 0:
        raise RuntimeError(f"conversion failed:\n{result.stdout}{result.stderr}")
    *output, peak = result.stdout.strip().splitlines()
    return {"seconds": seconds, "peak_rss_mib": int(peak.split()[1]) / 1024, "output": output[-1]}


def same_obs_and_actions(first: Path, second: Path) -> bool:
    """Whether two converted files hold the same demos with equal observations and actions."""
    with h5py.File(first, "r") as a, h5py.File(second, "r") as b:
        if sorted(a["data"]) != sorted(b["data"]):
            return False
        for demo in a["data"]:
            names = ["actions", *(f"obs/{key}" for key in a[f"data/{demo}/obs"])]
            if sorted(a[f"data/{demo}/obs"]) != sorted(b[f"data/{demo}/obs"]):
                return False
            if not all(np.array_equal(a[f"data/{demo}/{name}"][()], b[f"data/{demo}/{name}"][()]) for name in names):
                return False
    return True


def package_at(revision: str, directory: Path) -> Path:
    """The mvp_ros package (and its config files) as it was at git `revision`, extracted under `directory`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "mvp_ros", "config"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def measured_run(bag: Path, seconds: float, image: dict, stored: str, directory: Path,
                 before: tuple[str, Path] | None) -> dict:
    """One conversion (and, with `before` = (revision, its package), the same conversion at that revision)."""
    out = directory / "out.hdf5"
    result = convert_in_subprocess(bag, image, directory, out)
    run = {"bag_seconds": seconds, "image_messages": int(seconds * CAMERA_HZ), "stored_image": stored, **result,
           "image_messages_per_s": int(seconds * CAMERA_HZ) / result["seconds"]}
    if before is not None:
        revision, code = before
        earlier_out = directory / "out_before.hdf5"
        earlier = convert_in_subprocess(bag, image, directory, earlier_out, code)
        run["before"] = {"revision": revision, **earlier,
                         "image_messages_per_s": int(seconds * CAMERA_HZ) / earlier["seconds"]}
        run["same_obs_and_actions_as_before"] = same_obs_and_actions(out, earlier_out)
        earlier_out.unlink()
    out.unlink()
    print(json.dumps(run))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[20.0], help="bag lengths in seconds")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--compare-with", metavar="REV", help="also convert with the package at this git revision")
    args = parser.parse_args()
    frames = camera_frames(90)
    runs = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        before = None
        if args.compare_with:
            before = (args.compare_with, package_at(args.compare_with, Path(tempfile.mkdtemp(dir=directory))))
        for seconds in sorted(args.seconds):
            bag = directory / f"bag_{seconds:g}s"
            size = write_bag(bag, seconds, frames)
            runs.append({**measured_run(bag, seconds, RESIZED, "84x84 (crop 480x480 at x 80, resize area)", directory,
                                        before), "bag_mib": size / 2**20})
        seconds = min(args.seconds)
        runs.append(measured_run(directory / f"bag_{seconds:g}s", seconds, FULL, "640x480 (no resize)", directory,
                                 before))
    results = {
        "command": " ".join(["python", *sys.argv]),
        "camera": f"{WIDTH}x{HEIGHT} JPEG sensor_msgs/CompressedImage at {CAMERA_HZ} Hz, MCAP bag written with rosbags",
        "runs": runs,
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} cores",
        "load_average_1min": os.getloadavg()[0],  # the machine may be shared: higher load, slower conversion
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
