"""Online fine-tuning: act in the robosuite task with best-of-N chunks, grow the replay buffer.

Each chunk is executed open loop, stopping early when the episode ends (success, or the task's
horizon). After every environment step the caller's `after_env_step` runs (the gradient updates
and the log). Whole episodes enter the replay buffer when they end: a success terminates the
episode (no bootstrap past it), a time limit does not; the episode the step budget cuts short is
added as not terminated. The buffer already holds the offline data, so updates keep drawing on it.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..policy.config import ConfigError
from ..sim.envs import SimEnv, make_env
from .offline import MvpRlLearner
from .replay import ChunkReplay, episode_rewards


class FrameStack:
    """The last `frame_stack` observations per key as a batch of one; the first frame repeated after a reset."""

    def __init__(self, keys: list[str], frame_stack: int):
        self.frames = {key: deque(maxlen=frame_stack) for key in keys}

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        for key, frames in self.frames.items():
            frames.clear()
            frames.extend([obs[key]] * frames.maxlen)

    def push(self, obs: dict[str, np.ndarray]) -> None:
        for key, frames in self.frames.items():
            frames.append(obs[key])

    def batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        batch = {}
        for key, frames in self.frames.items():
            values = torch.from_numpy(np.stack(frames))[None]
            batch[key] = (values if values.dtype == torch.uint8 else values.float()).to(device)
        return batch


class EpisodeRecord:
    """The steps of the running episode, in the dataset's layout (obs before each action)."""

    def __init__(self, keys: list[str]):
        self.obs: dict[str, list[np.ndarray]] = {key: [] for key in keys}
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.successes: list[bool] = []

    def add(self, obs: dict[str, np.ndarray], action: np.ndarray, reward: float, success: bool) -> None:
        for key, values in self.obs.items():
            values.append(obs[key])
        self.actions.append(action)
        self.rewards.append(reward)
        self.successes.append(success)

    def store(self, replay: ChunkReplay, reward_mode: str) -> None:
        rewards, terminated = episode_rewards(np.asarray(self.rewards), np.asarray(self.successes), reward_mode)
        replay.add_episode({key: np.stack(values) for key, values in self.obs.items()}, np.stack(self.actions),
                           rewards, terminated)


def check_env(env: SimEnv, obs: dict[str, np.ndarray], learner: MvpRlLearner) -> None:
    """The environment must observe every policy key with the trained shape and take the policy's actions."""
    config = learner.model.config
    missing = [key for key in config.obs_shapes if key not in obs]
    if missing:
        raise ConfigError(f"the environment {env.env_args['env_name']} does not observe {missing}, which the policy "
                          f"needs; it observes {sorted(obs)}")
    for key, shape in config.obs_shapes.items():
        if np.shape(obs[key]) != shape:
            raise ConfigError(f"the environment's observation {key!r} has shape {np.shape(obs[key])}, the dataset's "
                              f"has {shape}")
    if env.action_dim != config.action_dim:
        raise ConfigError(f"the environment {env.env_args['env_name']} takes {env.action_dim}-d actions, the policy "
                          f"makes {config.action_dim}-d ones")


def fine_tune_online(learner: MvpRlLearner, replay: ChunkReplay, env_args: dict, env_steps: int,
                     rng: np.random.Generator, generator: torch.Generator, device: torch.device, reward_mode: str,
                     after_env_step: Callable[[dict], None], progress: bool = True) -> dict:
    """Runs `env_steps` environment steps; returns {env_steps, episodes, success_rate} (finished episodes)."""
    env = make_env(env_args)
    try:
        keys = list(learner.model.config.obs_shapes)
        stack = FrameStack(keys, learner.model.config.frame_stack)
        stats = {"env_steps": 0, "episodes": 0, "success_rate": 0.0}
        successes = 0
        bar = tqdm(total=env_steps, desc="online mvp-rl", unit="env step", disable=not progress)
        while stats["env_steps"] < env_steps:
            obs = env.reset(seed=int(rng.integers(2**31)))
            check_env(env, obs, learner)
            stack.reset(obs)
            episode, done = EpisodeRecord(keys), False
            while not done and stats["env_steps"] < env_steps:
                chunk = learner.act(stack.batch(device), generator)[0].cpu().numpy()
                for action in chunk:  # open loop, until the episode or the step budget ends
                    next_obs, reward, done, info = env.step(action)
                    episode.add(obs, action, reward, bool(info["success"]))
                    obs = next_obs
                    stack.push(obs)
                    stats["env_steps"] += 1
                    bar.update(1)
                    if done:
                        stats["episodes"] += 1
                        successes += bool(info["success"])
                        stats["success_rate"] = successes / stats["episodes"]
                    after_env_step(dict(stats))
                    if done or stats["env_steps"] == env_steps:
                        break
            episode.store(replay, reward_mode)
        bar.close()
        return stats
    finally:
        env.close()
