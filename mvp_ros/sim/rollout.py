"""Closed-loop episodes in simulation: a chunk policy, its chunk executor (mvp_ros/policy/chunks.py)
and a seeded environment, as `mvp eval` runs them."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from mvp_ros.policy.chunks import ChunkExecutor

if TYPE_CHECKING:  # robosuite takes seconds to import
    from mvp_ros.sim.envs import SimEnv


class ChunkPolicy(Protocol):
    """What `run_episode` needs from a policy; `mvp_ros.policy.Policy` is one."""

    obs_keys: list[str]
    horizon: int

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class EpisodeResult:
    success: bool
    steps: int
    inference_ms: list[float] = field(default_factory=list)  # one entry per policy.act call
    frames: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) uint8, right side up, if recorded


@dataclass
class InitialState:
    """Where an episode starts instead of a seeded reset: a recorded episode's `states[0]` and its
    `model_file` (Robomimic-style evaluation from a dataset's initial states)."""

    state: np.ndarray
    model_xml: str | None = None


def run_episode(env: SimEnv, policy: ChunkPolicy, seed: int, max_steps: int, executor: ChunkExecutor,
                record_frames: bool = False, camera: str = "agentview", frame_size: int = 256,
                initial_state: InitialState | None = None) -> EpisodeResult:
    """One seeded episode, ended by success or after `max_steps` steps.

    The environment and the policy's sampling noise are both seeded with `seed`; with `initial_state`
    the environment starts there instead. With `record_frames`, a `camera` image (frame_size x
    frame_size) is rendered after the reset and after every step; otherwise nothing is rendered.
    """
    if initial_state is None:
        obs = env.reset(seed=seed)
    else:
        obs = env.reset_to(initial_state.state, initial_state.model_xml)
    policy.reset(seed)
    executor.reset()
    result = EpisodeResult(success=False, steps=0)
    if record_frames:
        result.frames.append(env.render(camera, frame_size, frame_size))
    while result.steps < max_steps and not result.success:
        if executor.needs_chunk:
            policy_obs = {key: obs[key] for key in policy.obs_keys}
            started = time.perf_counter()
            chunk = policy.act(policy_obs)
            result.inference_ms.append((time.perf_counter() - started) * 1e3)
            executor.add_chunk(chunk)
        obs, _, _, info = env.step(executor.next_action())
        result.steps += 1
        result.success = bool(info["success"])
        if record_frames:
            result.frames.append(env.render(camera, frame_size, frame_size))
    return result
