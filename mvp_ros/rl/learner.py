"""`MvpRlLearner`: the policy and critic of `mvp train --algo mvp-rl` and their update (the loops
that drive it are mvp_ros.training.rl's).

One update, on one batch of chunk windows from the replay buffer (mvp_ros.rl.replay):
  policy  L_MF + lambda * L_IVC on the replay action chunks, exactly the behaviour-cloning loss (the
          critic sends no gradient into the generator), then the EMA weights follow.
  critic  sum over the ensemble of mean (Q_j(s_k, A_k) - y_k)^2, with the chunked TD target y_k of
          mvp_ros.rl.td; its bootstrap action is the best of N one-step samples of the EMA policy at
          s_{k+h} under the target critic. Then the target critic moves towards the critic by tau.
The EMA policy is the one that acts (online, and in `best_of_n` at evaluation) and the one saved.

The bootstrap is most of an update's arithmetic: at batch B and N candidates it puts B * N rows
through the actor and every critic. It runs as one call (`next_values`: sampling from given noise,
the critic ensemble as one batched module, the argmax), compiled with torch.compile when
`rl.compile` is set, which fuses the layer norms, activations and the rest between the matrix
multiplications into a few kernels; so is the critic's loss, forward and backward.
"""
from __future__ import annotations

import copy
from typing import Protocol

import torch

from ..policy.critic import ChunkCritic, best_of_n
from ..policy.model import ChunkPolicyModel, update_ema
from ..policy.normalizer import Normalization
from .config import RLConfig
from .replay import ChunkBatch
from .td import chunk_td_target


class OptimizerSettings(Protocol):
    """The settings of a training config (mvp_ros.training.workspace.TrainConfig) the learner reads."""

    lr: float
    weight_decay: float
    ema_decay: float


class MvpRlLearner:
    """The policy (raw and EMA weights), the critic ensemble and its target, their optimizers, one update."""

    def __init__(self, model: ChunkPolicyModel, normalization: Normalization, config: OptimizerSettings,
                 rl: RLConfig, device: torch.device):
        self.rl = rl
        self.ema_decay = config.ema_decay
        self.model = model.to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.critic = ChunkCritic(model.config, normalization, rl.critic_config()).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.policy_optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                                  weight_decay=config.weight_decay)
        # fused: one kernel for all the critic's parameters (the default, a kernel per operation and
        # parameter list, was most of the critic's step after its arithmetic)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=rl.critic_lr, fused=True)
        self.updates = 0
        self.next_values = torch.compile(self._next_values, dynamic=False) if rl.compile else self._next_values
        self.critic_loss = torch.compile(self._critic_loss, dynamic=False) if rl.compile else self._critic_loss

    def _next_values(self, next_obs: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """Qbar(s', a*') of the best of N EMA-policy samples from `noise` (B * N, chunk_dim): (B,)."""
        candidates = self.ema.sample_with_noise(next_obs, noise, self.rl.num_candidates)
        return self.target_critic.value(next_obs, candidates).max(dim=-1).values

    def _critic_loss(self, obs: dict[str, torch.Tensor], actions: torch.Tensor,
                     target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The TD loss summed over the ensemble, and each member's Q of the replay chunks (K, B)."""
        q_values = self.critic(obs, actions[:, None])[..., 0]
        return (q_values - target).pow(2).mean(dim=1).sum(), q_values

    def update(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        metrics = self.update_policy(batch, generator)
        metrics.update(self.update_critic(batch, generator))
        self.updates += 1
        return metrics

    def update_policy(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        loss, metrics = self.model.loss(batch.obs, batch.actions, generator)
        self.policy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.policy_optimizer.step()
        update_ema(self.ema, self.model, self.ema_decay if self.updates > 0 else 0.0)
        return metrics

    def td_target(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        """y = sum_{i<h} gamma^i r_{k+i} + gamma^h Qbar(s_{k+h}, a*'), a*' the best of N EMA-policy samples."""
        with torch.no_grad():
            rows = batch.rewards.shape[0] * self.rl.num_candidates
            noise = torch.randn(rows, self.ema.config.chunk_dim, generator=generator, device=batch.rewards.device)
            next_value = self.next_values(batch.next_obs, noise)
            return chunk_td_target(batch.rewards, batch.step_mask, batch.bootstrap, next_value, self.rl.gamma)

    def update_critic(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        target = self.td_target(batch, generator)
        loss, q_values = self.critic_loss(batch.obs, batch.actions, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        update_ema(self.target_critic, self.critic, 1.0 - self.rl.tau)  # Polyak averaging with rate tau
        return {"loss_critic": loss.item(), "q_mean": q_values.mean().item(), "target_mean": target.mean().item()}

    def state(self) -> tuple[dict[str, torch.nn.Module], dict[str, tuple[torch.optim.Optimizer, torch.nn.Module]]]:
        """What `--resume` saves and restores (the EMA policy is the checkpoint itself)."""
        modules = {"model": self.model, "critic": self.critic, "target_critic": self.target_critic}
        optimizers = {"optimizer": (self.policy_optimizer, self.model), "critic_optimizer": (self.critic_optimizer, self.critic)}
        return modules, optimizers

    def act(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """The chunk to execute: best of N EMA-policy samples under the critic, (B, horizon, action_dim)."""
        return best_of_n(self.ema, self.critic, obs, self.rl.num_candidates, generator)[0]
