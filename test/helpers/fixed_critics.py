"""A fixed critic for testing policy-improvement steps: its best action is known, so a step's direction is."""
from __future__ import annotations

import torch


class DistanceCritic(torch.nn.Module):
    """Q(s, a) = sign * ||a - a*||^2 in the task's units, the same for every state; `value` as ChunkCritic's:
    chunks (B, N, horizon 1, |A|) -> (B, N)."""

    def __init__(self, best_action: torch.Tensor, sign: float):
        super().__init__()
        self.best_action, self.sign = best_action, sign

    def value(self, obs, chunks):
        return self.sign * (chunks[:, :, 0] - self.best_action).pow(2).sum(dim=-1)
