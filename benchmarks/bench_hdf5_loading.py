"""Windows per second from RobomimicDataset.get_batch on synthetic Robomimic-format datasets.

    .venv/bin/python benchmarks/bench_hdf5_loading.py --json results.json

Measures, for a low-dim dataset and an image one (two 84x84 cameras): write time, load time
(opening with cache=True), and windows/s of get_batch(batch) with random indices, cached and lazy.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mvp_ros.data.robomimic import Episode, RobomimicDataset, write_robomimic

LOW_DIM_SHAPES = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "robot0_joint_pos": 7, "object": 10}
CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")


def synthetic_episodes(demos: int, steps: int, images: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(demos):
        obs = {key: rng.normal(size=(steps, dim)) for key, dim in LOW_DIM_SHAPES.items()}
        if images:
            # smooth gradients plus noise: compressible like camera images, unlike pure noise
            base = np.linspace(0, 200, 84 * 84 * 3).reshape(84, 84, 3).astype(np.uint8)
            for camera in CAMERAS:
                obs[camera] = base + rng.integers(0, 40, size=(steps, 84, 84, 3), dtype=np.uint8)
        yield Episode(obs=obs, actions=rng.uniform(-1, 1, size=(steps, 7)))


def windows_per_second(dataset: RobomimicDataset, batch: int, seconds: float) -> float:
    rng = np.random.default_rng(1)
    dataset.get_batch(rng.integers(0, len(dataset), batch))  # warm-up (opens the file when lazy)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset.get_batch(rng.integers(0, len(dataset), batch))
        count += batch
    return count / (time.perf_counter() - start)


def bench(name: str, folder: Path, demos: int, steps: int, images: bool, args) -> dict:
    path = folder / f"{name}.hdf5"
    start = time.perf_counter()
    write_robomimic(path, synthetic_episodes(demos, steps, images))
    write_s = time.perf_counter() - start
    keys = list(LOW_DIM_SHAPES) + (list(CAMERAS) if images else [])
    options = dict(action_horizon=args.horizon, frame_stack=args.frame_stack)
    start = time.perf_counter()
    cached = RobomimicDataset(path, keys, **options)
    load_s = time.perf_counter() - start
    result = {
        "demos": demos, "steps_per_demo": steps, "obs_keys": keys, "file_mb": path.stat().st_size / 2**20,
        "write_s": write_s, "load_cached_s": load_s,
        "cached_windows_per_s": windows_per_second(cached, args.batch, args.seconds),
    }
    del cached
    lazy = RobomimicDataset(path, keys, cache=False, **options)
    result["lazy_windows_per_s"] = windows_per_second(lazy, args.batch, args.seconds)
    lazy.close()
    print(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in result.items() if k != "obs_keys"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--demos", type=int, default=200, help="low-dim dataset demos")
    parser.add_argument("--image-demos", type=int, default=50, help="image dataset demos")
    parser.add_argument("--steps", type=int, default=150, help="steps per demo")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--frame-stack", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = {
            "batch": args.batch, "action_horizon": args.horizon, "frame_stack": args.frame_stack,
            "low_dim": bench("low_dim", Path(folder), args.demos, args.steps, False, args),
            "images": bench("images", Path(folder), args.image_demos, args.steps, True, args),
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
