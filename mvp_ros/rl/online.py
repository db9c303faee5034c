"""The pieces of online fine-tuning (the loop is mvp_ros.training.rl's `fine_tune_online`):
`FrameStack`, the policy's stacked observations while acting; `EpisodeRecord`, the running episode,
stored whole into the replay buffer when it ends (a success terminates the episode, no bootstrap
past it; a time limit does not); `check_env`, the environment against the policy it serves.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

from ..policy.config import ConfigError
from ..sim.envs import SimEnv
from .learner import MvpRlLearner
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
