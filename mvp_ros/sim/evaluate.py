"""`mvp eval`: the success rate of a checkpoint in the MuJoCo (robosuite) environment it was trained for.

The environment is rebuilt from the `env_args` saved in the checkpoint and constructed with seed
`--seed`; episode i uses seed `--seed + i` for both the environment's reset and the policy's
sampling noise, so a run is reproducible. With `--init-states FILE`, episode i starts instead from
the initial state of the i-th demo of a Robomimic-format file, as Robomimic evaluates.
Reports the success rate with a 95% Wilson score interval, the lengths of successful episodes and
the time of each `policy.act` call; `--json` writes them, `--video` films the first episodes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterator

# Offscreen rendering (videos, camera observations) without a display. robosuite and mujoco read
# this when they are imported, so it is set before they are; a value the user chose is kept.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mvp_ros.policy import Policy  # noqa: E402
from mvp_ros.policy.config import PolicyConfig  # noqa: E402
from mvp_ros.sim.envs import SimEnv, build_env, with_cameras_of  # noqa: E402
from mvp_ros.policy.chunks import ACT_ENSEMBLE_DECAY, ChunkExecutor  # noqa: E402
from mvp_ros.data.robomimic import read_env_args, read_initial_states  # noqa: E402
from mvp_ros.sim.rollout import EpisodeResult, InitialState, run_episode  # noqa: E402
from mvp_ros.sim.success import wilson_interval  # noqa: E402

WARMUP_CALLS = 3


class IncompatibleCheckpointError(ValueError):
    """A checkpoint whose observations or actions do not fit the environment."""


def check_checkpoint_fits(config: PolicyConfig, env: SimEnv, obs: dict[str, np.ndarray], checkpoint: Path) -> None:
    """The checkpoint's observation keys and shapes exist in `obs`, and its action size is the env's."""
    env_name = env.env_args["env_name"]
    for key, shape in config.obs_shapes.items():
        if key not in obs:
            raise IncompatibleCheckpointError(
                f"checkpoint {checkpoint} needs observation {key!r}, which the {env_name} environment does not "
                f"provide (it has {', '.join(sorted(obs))}): is it a checkpoint for another task?")
        if obs[key].shape != shape:
            raise IncompatibleCheckpointError(
                f"checkpoint {checkpoint} expects observation {key!r} of shape {shape}, the {env_name} "
                f"environment gives {obs[key].shape}: is it a checkpoint for another task?")
    if config.action_dim != env.action_dim:
        raise IncompatibleCheckpointError(
            f"checkpoint {checkpoint} predicts {config.action_dim}-d actions, the {env_name} environment takes "
            f"{env.action_dim}-d actions: is it a checkpoint for another task?")


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(results: list[EpisodeResult], seeds: list[int]) -> dict:
    successes = sum(result.success for result in results)
    low, high = wilson_interval(successes, len(results))
    successful_lengths = [result.steps for result in results if result.success]
    inference_ms = [ms for result in results for ms in result.inference_ms]
    return {
        "episodes": len(results),
        "successes": successes,
        "success_rate": successes / len(results),
        "success_rate_ci95": [low, high],
        "episode_length_mean": float(np.mean(successful_lengths)) if successful_lengths else None,
        "episode_length_median": float(np.median(successful_lengths)) if successful_lengths else None,
        "seeds": seeds,
        "episode_success": [result.success for result in results],
        "episode_steps": [result.steps for result in results],
        "inference_calls": len(inference_ms),
        "inference_ms_p50": _percentile(inference_ms, 50),
        "inference_ms_p99": _percentile(inference_ms, 99),
    }


def _caption(frame: np.ndarray, text: str) -> np.ndarray:
    import cv2

    frame = np.ascontiguousarray(frame)
    scale = frame.shape[0] / 400
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # outlined, readable on any background
        cv2.putText(frame, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness,
                    cv2.LINE_AA)
    return frame


def write_video(path: Path, episodes: list[EpisodeResult], fps: float) -> int:
    """Writes the episodes' frames, captioned, as MP4 (mp4v) or GIF by the file suffix; returns the frame count."""
    frames = [_caption(frame, f"episode {index} {'success' if episode.success else 'failure'}")
              for index, episode in enumerate(episodes) for frame in episode.frames]
    height, width = frames[0].shape[:2]
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    else:
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"cannot write the video {path} (OpenCV's mp4v encoder did not open it)")
        for frame in frames:
            writer.write(frame[:, :, ::-1])  # RGB -> BGR
        writer.release()
    return len(frames)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory (from mvp train)")
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses seed SEED + i (default 0)")
    parser.add_argument("--init-states", type=Path, metavar="FILE",
                        help="start episode i from the initial state (states[0], model_file) of the i-th demo of "
                             "this Robomimic-format file, as Robomimic evaluates, instead of a seeded reset")
    parser.add_argument("--init-states-filter-key", metavar="KEY",
                        help="with --init-states: take the demos of mask/KEY (e.g. valid)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--video", type=Path, help="write the first episodes to this .mp4 or .gif file")
    parser.add_argument("--video-episodes", type=int, default=2, help="episodes in the video (default 2)")
    parser.add_argument("--video-camera", default="agentview", help="camera for the video (default agentview)")
    parser.add_argument("--video-size", type=int, default=256, help="video height and width (default 256)")
    parser.add_argument("--execute", type=int, help="actions executed per chunk before re-planning "
                        "(default: the chunk horizon; 1 with --temporal-ensemble)")
    parser.add_argument("--temporal-ensemble", action="store_true",
                        help="average overlapping chunk predictions with exponential weights, as in ACT")
    parser.add_argument("--ensemble-decay", type=float, default=ACT_ENSEMBLE_DECAY,
                        help=f"weight exp(-decay * i) of the i-th oldest prediction (default {ACT_ENSEMBLE_DECAY})")
    parser.add_argument("--max-steps", type=int, help="steps per episode (default: the environment's horizon)")
    parser.add_argument("--best-of", type=int, default=1, metavar="N",
                        help="generate and select: execute the critic's best of N one-step candidates (a checkpoint of "
                             "--algo mvp-rl, its critic beside it); default 1, the policy alone")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="default auto")
    # Batch-1 inference of a small network gains nothing from intra-op threads, and loses a lot when
    # the cores are busy (on a loaded 2-core machine: p50 40 ms with 2 threads, 0.4 ms with 1).
    parser.add_argument("--torch-threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes running episodes side by side, each with its own environment and policy "
                             "(default 1); the results are the same, the latency figures are taken while they "
                             "share the cores")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def _check_arguments(args: argparse.Namespace) -> None:
    for name in ("episodes", "video_episodes", "video_size", "max_steps", "torch_threads", "best_of", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.init_states_filter_key is not None and args.init_states is None:
        raise ValueError("--init-states-filter-key needs --init-states FILE")
    if args.video is not None and args.video.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--video {args.video}: the file must end in .mp4 or .gif")
    for path in (args.json, args.video):
        if path is not None and not path.absolute().parent.is_dir():
            raise ValueError(f"cannot write {path}: directory {path.absolute().parent} does not exist")


def _run_one(env: SimEnv, policy: Policy, executor: ChunkExecutor, episode: int, max_steps: int,
             args: argparse.Namespace, initial_state: InitialState | None) -> EpisodeResult:
    return run_episode(env, policy, args.seed + episode, max_steps, executor,
                       record_frames=args.video is not None and episode < args.video_episodes,
                       camera=args.video_camera, frame_size=args.video_size, initial_state=initial_state)


def run_episodes(env: SimEnv, policy: Policy, executor: ChunkExecutor, max_steps: int, args: argparse.Namespace,
                 initial_states: list[InitialState] | None = None) -> list[EpisodeResult]:
    """Episodes 0..--episodes-1 here, or spread over --workers processes (each episode is seeded on its
    own, so the results are the same either way)."""
    progress = tqdm(total=args.episodes, desc="eval", unit="episode", disable=args.no_progress)
    results: dict[int, EpisodeResult] = {}

    def done(episode: int, result: EpisodeResult) -> None:
        results[episode] = result
        progress.update()
        progress.set_postfix(success_rate=f"{sum(r.success for r in results.values()) / len(results):.2f}")

    with progress:
        if args.workers == 1:
            for episode in range(args.episodes):
                done(episode, _run_one(env, policy, executor, episode, max_steps, args,
                                       initial_states[episode] if initial_states else None))
        else:
            with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_start_worker, initargs=(args,)) as pool:
                futures = {pool.submit(_worker_episode, episode, max_steps,
                                       initial_states[episode] if initial_states else None): episode
                           for episode in range(args.episodes)}
                for future in as_completed(futures):
                    done(futures[future], future.result())
    return [results[episode] for episode in range(args.episodes)]


_worker: tuple[SimEnv, Policy, ChunkExecutor, argparse.Namespace] | None = None


def _start_worker(args: argparse.Namespace) -> None:
    global _worker
    torch.set_num_threads(args.torch_threads)
    policy, executor, env = _set_up(args)
    _warm_up(env, policy, args)
    _worker = (env, policy, executor, args)


def _worker_episode(episode: int, max_steps: int, initial_state: InitialState | None) -> EpisodeResult:
    env, policy, executor, args = _worker
    return _run_one(env, policy, executor, episode, max_steps, args, initial_state)


def dataset_initial_states(args: argparse.Namespace, env_name: str) -> tuple[list[str], list[InitialState] | None]:
    """The demos whose initial states `--init-states` asks for (the first --episodes of them), checked to
    be of the checkpoint's task."""
    if args.init_states is None:
        return [], None
    data_env = (read_env_args(args.init_states) or {}).get("env_name")
    if data_env is not None and data_env != env_name:
        raise ValueError(f"--init-states {args.init_states} holds {data_env} episodes, the checkpoint is for {env_name}")
    demos = read_initial_states(args.init_states, args.init_states_filter_key)
    if len(demos) < args.episodes:
        raise ValueError(f"--init-states {args.init_states} has {len(demos)} demos, fewer than --episodes {args.episodes}")
    chosen = demos[:args.episodes]
    return [name for name, _, _ in chosen], [InitialState(state, model_xml) for _, state, model_xml in chosen]


def _set_up(args: argparse.Namespace) -> tuple[Policy, ChunkExecutor, SimEnv]:
    policy = Policy.load(args.checkpoint, device=args.device, best_of=args.best_of)
    if not policy.info.env_args:
        raise ValueError(
            f"checkpoint {args.checkpoint} has no env_args: it was trained on data without a simulator; evaluate "
            "it on its robot with the policy node, or train on a dataset that records env_args (e.g. from mvp demos)")
    executor = ChunkExecutor(policy.horizon, args.execute, args.temporal_ensemble, args.ensemble_decay)
    env = build_env(with_cameras_of(policy.info.env_args, policy.obs_keys), args.seed,
                    offscreen_render=args.video is not None)
    return policy, executor, env


def _warm_up(env: SimEnv, policy: Policy, args: argparse.Namespace) -> None:
    obs = env.reset(seed=args.seed)
    check_checkpoint_fits(policy.config, env, obs, args.checkpoint)
    for _ in range(WARMUP_CALLS):  # the first calls are slow (allocation, kernel selection); not timed
        policy.act({key: obs[key] for key in policy.obs_keys})


def evaluate(args: argparse.Namespace) -> dict:
    policy, executor, env = _set_up(args)
    seeds = [args.seed + episode for episode in range(args.episodes)]
    max_steps = args.max_steps or env.horizon
    try:
        demos, initial_states = dataset_initial_states(args, policy.info.env_args["env_name"])
        _warm_up(env, policy, args)
        started = time.perf_counter()
        results = run_episodes(env, policy, executor, max_steps, args, initial_states)
        seconds = time.perf_counter() - started
    finally:
        env.close()
    summary = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "env_name": env.env_args["env_name"],
        **summarize(results, seeds),
        "seconds_per_episode": seconds / len(results),
        "settings": {"seed": args.seed, "max_steps": max_steps, "horizon": policy.horizon,
                     "execute": executor.execute, "temporal_ensemble": executor.temporal_ensemble,
                     "ensemble_decay": executor.ensemble_decay, "best_of": policy.best_of, "device": str(policy.device),
                     "torch_threads": args.torch_threads, "workers": args.workers},
    }
    if demos:
        summary["settings"] |= {"init_states": str(args.init_states), "init_states_filter_key": args.init_states_filter_key}
        summary["init_state_demos"] = demos
    if args.video is not None:
        summary["video"] = str(args.video)
        summary["video_frames"] = write_video(args.video, [r for r in results if r.frames], env.control_rate_hz)
    return summary


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    with torch_threads(args.torch_threads):
        summary = evaluate(args)
    low, high = summary["success_rate_ci95"]
    print(f"{summary['env_name']}: success rate {summary['success_rate']:.3f} "
          f"({summary['successes']}/{summary['episodes']}, 95% interval {low:.3f}-{high:.3f})")
    if summary["episode_length_mean"] is not None:
        print(f"successful episodes: mean length {summary['episode_length_mean']:.1f} steps, "
              f"median {summary['episode_length_median']:.1f}")
    print(f"inference: {summary['inference_calls']} calls, p50 {summary['inference_ms_p50']:.3f} ms, "
          f"p99 {summary['inference_ms_p99']:.3f} ms on {summary['settings']['device']}; "
          f"{summary['seconds_per_episode']:.2f} s per episode")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.video is not None:
        print(f"wrote {args.video} ({summary['video_frames']} frames)")
    return 0
