"""Scripted-expert success rate and time per demonstration, low-dim and with two 84x84 cameras.

    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_demos.py --episodes 50 --json results.json

For each task and observation setting, runs the expert for `--episodes` attempts (seeded like
`mvp demos --seed S`) and reports the success rate (overall and per strategy), steps per
episode, seconds per attempt and seconds per successful demonstration (including failed attempts),
plus simulator steps per second.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mvp_ros.sim.envs import env_args_for, make_env  # noqa: E402
from mvp_ros.sim.experts import episode_seed, run_expert  # noqa: E402
from mvp_ros.sim.write_demos import IMAGE_KEYS, LOW_DIM_KEYS  # noqa: E402


def bench(task: str, images: bool, episodes: int, seed: int) -> dict:
    env = make_env(env_args_for(task, images=images))
    obs_keys = LOW_DIM_KEYS + (IMAGE_KEYS if images else ())
    attempts, successes, lengths = Counter(), Counter(), []
    start = time.perf_counter()
    for attempt in tqdm(range(episodes), desc=f"{task} {'images' if images else 'low-dim'}", unit="episode"):
        result = run_expert(env, task, episode_seed(seed, attempt), obs_keys)
        attempts[result.strategy] += 1
        successes[result.strategy] += result.success
        lengths.append(len(result.episode.actions))
    seconds = time.perf_counter() - start
    env.close()
    total_successes = sum(successes.values())
    return {
        "task": task,
        "images": images,
        "attempts": episodes,
        "successes": total_successes,
        "success_rate": total_successes / episodes,
        "success_rate_by_strategy": {name: successes[name] / attempts[name] for name in sorted(attempts)},
        "attempts_by_strategy": dict(sorted(attempts.items())),
        "steps_per_episode_mean": float(np.mean(lengths)),
        "seconds_per_attempt": seconds / episodes,
        "seconds_per_demo": seconds / max(total_successes, 1),
        "sim_steps_per_second": sum(lengths) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50, help="attempts per setting (default 50)")
    parser.add_argument("--tasks", default="lift,can", help="comma-separated tasks (default lift,can)")
    parser.add_argument("--no-images", action="store_true", help="skip the image settings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    settings = [(task, images) for task in args.tasks.split(",") for images in (False, True) if not (images and args.no_images)]
    results = [bench(task, images, args.episodes, args.seed) for task, images in settings]
    for result in results:
        print(
            f"{result['task']:5s} {'images ' if result['images'] else 'low-dim'}: success {result['success_rate']:.3f} "
            f"({result['successes']}/{result['attempts']}, by strategy {result['success_rate_by_strategy']}), "
            f"{result['steps_per_episode_mean']:.0f} steps/episode, {result['seconds_per_demo']:.2f} s per demonstration"
        )
    if args.json:
        machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()}
        with open(args.json, "w") as file:
            json.dump({"machine": machine, "results": results}, file, indent=2)


if __name__ == "__main__":
    main()
