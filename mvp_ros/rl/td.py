"""The chunked TD target, as small pure functions on tensors (best-of-N selection: mvp_ros.policy.critic).

For the window that starts at step k, with action chunk A_k = (a_k, ..., a_{k+h-1}):

    y_k = sum_{i<h} gamma^i r_{k+i}  +  gamma^h * Qbar(s_{k+h}, a*')
    a*' = argmax_{i<N} Qbar(s_{k+h}, a_i),   a_i = eps_i + u_theta(eps_i, 0, 1 | s_{k+h})

If the episode terminates at step k+j with j < h (success, or a stored done), the sum stops after
r_{k+j} (`step_mask` is 1 for i <= j, 0 after) and there is no bootstrap (`bootstrap` = 0).
"""
from __future__ import annotations

import torch


def discounted_chunk_return(rewards: torch.Tensor, step_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """sum_{i<h} gamma^i r_{k+i} over the steps that happened: rewards, step_mask (B, h) -> (B,)."""
    horizon = rewards.shape[-1]
    discounts = gamma ** torch.arange(horizon, dtype=rewards.dtype, device=rewards.device)
    return (rewards * step_mask * discounts).sum(dim=-1)


def chunk_td_target(rewards: torch.Tensor, step_mask: torch.Tensor, bootstrap: torch.Tensor,
                    next_value: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = sum_{i<h} gamma^i r_{k+i} + gamma^h * bootstrap * Qbar(s_{k+h}, a*'); bootstrap is 0 after a terminal."""
    horizon = rewards.shape[-1]
    return discounted_chunk_return(rewards, step_mask, gamma) + gamma ** horizon * bootstrap * next_value
