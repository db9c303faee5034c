"""Batches of horizon-1 windows as the replay buffer gives them, for tests of TD targets and critic steps."""
from __future__ import annotations

import torch

from mvp_ros.rl.gym_online import OBSERVATION_KEY
from mvp_ros.rl.replay import ChunkBatch


def transitions(rewards: list[float], bootstrap: list[float], obs_dim: int = 3, action_dim: int = 2) -> ChunkBatch:
    """Zero observations and actions; the reward and bootstrap fields as given."""
    rows = len(rewards)
    observations = {OBSERVATION_KEY: torch.zeros(rows, 1, obs_dim)}
    return ChunkBatch(obs=observations, actions=torch.zeros(rows, 1, action_dim),
                      rewards=torch.tensor(rewards)[:, None], step_mask=torch.ones(rows, 1),
                      bootstrap=torch.tensor(bootstrap), next_obs=observations)
