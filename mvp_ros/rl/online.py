"""The pieces of online fine-tuning (the loop is mvp_ros.training.rl's `fine_tune_online`):
`FrameStack`, the policy's stacked observations while acting; `OnlineState`, the loop's position
that a resumed run continues from; `replay_running_episode`, which brings a new environment back
into the episode a run was saved in; `check_env`, the environment against the policy it serves.
Transitions enter the replay buffer one by one (ChunkReplay.add_step); a success terminates the
episode, with no bootstrap past it, a time limit does not.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..policy.config import ConfigError
from .learner import MvpRlLearner
from .replay import ChunkReplay

if TYPE_CHECKING:  # mujoco and robosuite load only where an environment is built
    from ..sim.envs import SimEnv


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


@dataclass
class OnlineState:
    """Where the online phase is, saved with the run so that `--resume` continues it exactly: the
    counts, the running episode's reset seed, and the actions left of the chunk being executed."""

    env_steps: int = 0
    episodes: int = 0
    successes: int = 0
    episode_seed: int | None = None
    chunk_left: list[list[float]] = field(default_factory=list)

    @property
    def stats(self) -> dict:
        """The log's columns once the phase has begun: environment steps, finished episodes and their success rate."""
        if not self.env_steps:
            return {}
        return {"env_steps": self.env_steps, "episodes": self.episodes,
                "success_rate": self.successes / self.episodes if self.episodes else 0.0}


def replay_running_episode(env: SimEnv, replay: ChunkReplay, seed: int, stack: FrameStack) -> dict[str, np.ndarray]:
    """Brings a new environment to where a resumed run's running episode stopped: reset with its seed,
    then its stored actions again, each observation checked against the stored one (the simulation
    is deterministic); returns the observation the next action is taken in."""
    obs = env.reset(seed=seed)
    stack.reset(obs)
    start = replay.size - replay.running_steps
    for step in range(start, replay.size):
        for key, stored in replay.obs.items():
            if not np.array_equal(np.asarray(obs[key], stored.dtype), stored[step]):
                raise ConfigError(f"resuming the online phase: the simulation did not reproduce the saved episode "
                                  f"(observation {key!r} differs at its step {step - start}); the environment or "
                                  "its software changed since the run was saved")
        obs, _, _, _ = env.step(replay.actions[step])
        stack.push(obs)
    return obs


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
