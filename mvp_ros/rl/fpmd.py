"""FPMD: online RL by policy mirror descent with a one-step flow policy ("One-Step Flow Policy Mirror
Descent", arXiv 2507.23675), in Gymnasium tasks (mvp_ros.rl.gym_online). Actions normalized to [-1, 1]^|A|.

A mirror-descent step with a KL proximity term moves the policy to

    pi_new(a|s)  proportional to  pi_old(a|s) * exp(Q(s, a) / lambda),

and FPMD fits pi_new with the generative model's own loss on actions of pi_old, importance-weighted.
As in the authors' code, the fitted actions are the bootstrap's: at each next state s'_i of the batch,

    a_i = clip(argmax_{x in X_i} min_j Q_j(s'_i, x) + sigma * n_i, -1, 1),  X_i: N samples of pi_old(.|s'_i)
    z_i = clip((min_j Q_j(s'_i, a_i) - m) / d, -3, 3)     m, d: running mean and std of the batches' Q
    w_i = exp(z_i / alpha) / mean_k exp(z_k / alpha)     a constant factor does not move the minimizer
    L_pi = mean_i w_i * l(a_i | s'_i)

with l the MeanFlow + IVC loss of mvp_ros.policy.mvp (FPMD-M, head "mvp") or flow matching (FPMD-R,
head "flow"). A straight flow's one-step error is bounded by its target's variance, so both act in one
step once trained (the saved checkpoint); FPMD-R integrates `train_flow_steps` Euler steps while training.

    critic       y = r + gamma (1 - d) min_j Qbar_j(s', a), a the action above, N = 32
                 (the twin critics of mvp_ros.rl.sac.TwinCritic)
    acting       the same rule: the best of N samples under min_j Q_j, plus N(0, sigma^2) noise,
                 sigma = noise_scale * alpha; without the noise in evaluation
    temperature  H = 1/2 |A| log(2 pi e sigma^2), the entropy of the exploration noise;
                 L_alpha = log alpha * (H - H_target), a step every `alpha_delay` critic steps
    schedule     a policy step and a target step (tau) after every `policy_delay` critic
                 steps; the actor's learning rate decays linearly to `final_actor_lr` over the run's
                 updates (or `actor_lr_decay_updates`); a run resumed with more steps continues the decay
                 from the rate it had reached to `final_actor_lr` at its new end
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..policy.baselines import flow_loss, flow_sample
from ..policy.checkpoint import save_checkpoint
from ..policy.config import ConfigError, PolicyConfig
from ..policy.critic import ChunkCritic, save_critic
from ..policy.model import ChunkPolicyModel
from ..policy.mvp import mvp_loss
from ..policy.normalizer import Normalization
from .replay import ChunkBatch
from .sac import ActorCriticConfig, AgentState, TwinCritic
from .td import chunk_td_target

FPMD_HEADS = ("mvp", "flow")


@dataclass
class FpmdConfig(ActorCriticConfig):
    head: str = "mvp"  # mvp: FPMD-M; flow: FPMD-R
    final_actor_lr: float = 3e-5
    initial_alpha: float = 5.0
    alpha_lr: float = 7e-3
    alpha_delay: int = 250
    noise_scale: float = 0.1
    target_entropy_per_dim: float = -1.5
    num_candidates: int = 32
    policy_delay: int = 2
    weight_clip: float = 3.0
    q_statistics_rate: float = 0.001
    train_flow_steps: int = 20
    actor_lr_decay_updates: int = 0  # critic updates over which the actor's rate decays; 0: all of the run's

    def __post_init__(self) -> None:
        if self.head not in FPMD_HEADS:
            raise ConfigError(f"head: FPMD trains an MVP head (FPMD-M) or a flow head (FPMD-R), not {self.head!r}")
        for name in ("num_candidates", "policy_delay", "alpha_delay", "train_flow_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.actor_lr_decay_updates < 0:
            raise ConfigError(f"actor_lr_decay_updates: must be 0 (the run's updates) or more, got {self.actor_lr_decay_updates}")
        for name in ("initial_alpha", "weight_clip", "actor_lr", "final_actor_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")


class RunningMoments:
    """Exponential moving averages of the mean and the mean square of Q; the first batch sets both."""

    def __init__(self, rate: float):
        self.rate = rate
        self.mean: float | None = None
        self.mean_square = 0.0

    def update(self, values: torch.Tensor) -> None:
        mean, mean_square = values.mean().item(), values.pow(2).mean().item()
        if self.mean is None:
            self.mean, self.mean_square = mean, mean_square
            return
        self.mean += self.rate * (mean - self.mean)
        self.mean_square += self.rate * (mean_square - self.mean_square)

    @property
    def std(self) -> float:
        return math.sqrt(max(self.mean_square - self.mean ** 2, 1e-12))


def mirror_descent_weights(q: torch.Tensor, mean: float, std: float, alpha: float, clip: float) -> torch.Tensor:
    """w_i = exp(z_i / alpha) / mean_k exp(z_k / alpha), z = clip((q - mean) / std, -clip, clip); as a
    softmax, so a small alpha cannot overflow."""
    z = ((q - mean) / std).clamp(-clip, clip)
    return q.numel() * torch.softmax(z / alpha, dim=0)


def noise_entropy(action_dim: int, noise_std: float) -> float:
    """The entropy of N(0, noise_std^2 I) in `action_dim` dimensions: 1/2 |A| log(2 pi e noise_std^2)."""
    return 0.5 * action_dim * math.log(2 * math.pi * math.e * noise_std ** 2)


class FpmdAgent:
    def __init__(self, policy_config: PolicyConfig, normalization: Normalization, config: FpmdConfig,
                 total_updates: int, device: torch.device):
        self.config = config
        self.normalization = normalization
        self.actor = ChunkPolicyModel(policy_config, normalization).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.planned_policy_updates = max((config.actor_lr_decay_updates or total_updates) // config.policy_delay, 1)
        self.policy_updates = 0
        self.lr_anchor = (0, config.actor_lr)  # (policy update, rate) the linear decay starts from
        self.critics = TwinCritic(policy_config, normalization, config.hidden_dim, config.depth, config.critic_lr,
                                  device)
        self.log_alpha = torch.tensor(math.log(config.initial_alpha), device=device, requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)
        self.target_entropy = config.target_entropy_per_dim * policy_config.action_dim
        self.q_moments = RunningMoments(config.q_statistics_rate)
        self.updates = 0

    @property
    def alpha(self) -> float:
        return self.log_alpha.exp().item()

    @property
    def noise_std(self) -> float:
        return self.config.noise_scale * self.alpha

    def sample(self, obs: dict[str, torch.Tensor], count: int, generator: torch.Generator | None) -> torch.Tensor:
        """`count` normalized actions per state (B, count, |A|) from the current policy, as it samples in training."""
        cond = self.actor.obs_encoder(obs).repeat_interleave(count, dim=0)
        noise = torch.randn(cond.shape[0], self.actor.config.chunk_dim, generator=generator, device=cond.device)
        if self.config.head == "flow":
            actions = flow_sample(self.actor.backbone, cond, noise, self.config.train_flow_steps).clamp(-1.0, 1.0)
        else:
            actions = self.actor.sample_normalized(cond, noise)
        return actions.view(-1, count, self.actor.config.action_dim)

    def q_values(self, critic: ChunkCritic, obs: dict[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        """min_j Q_j (B, N) of normalized actions (B, N, |A|)."""
        return critic.value(obs, self.actor.action_scaler.unnormalize(actions)[:, :, None])

    def best_of(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None) -> torch.Tensor:
        """The best (B, |A|) of N samples per state under the online critics' min_j Q_j."""
        candidates = self.sample(obs, self.config.num_candidates, generator)
        best = self.q_values(self.critics.critic, obs, candidates).argmax(dim=-1)
        return candidates[torch.arange(candidates.shape[0], device=candidates.device), best]

    def explore(self, actions: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(actions.shape, generator=generator, device=actions.device)
        return (actions + self.noise_std * noise).clamp(-1.0, 1.0)

    def update(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        with torch.no_grad():
            next_actions = self.explore(self.best_of(batch.next_obs, generator), generator)
            next_q = self.q_values(self.critics.target, batch.next_obs, next_actions[:, None])[:, 0]
            target = chunk_td_target(batch.rewards, batch.step_mask, batch.bootstrap, next_q, self.config.gamma)
        metrics = self.critics.step(batch, target)
        self.updates += 1
        if self.updates % self.config.policy_delay == 0:
            metrics.update(self.update_policy(batch.next_obs, next_actions, generator))
            self.critics.update_target(self.config.tau)
        if self.updates % self.config.alpha_delay == 0:
            self.update_alpha()
        return metrics | {"alpha": self.alpha, "entropy": self.entropy()}

    def update_policy(self, obs: dict[str, torch.Tensor], actions: torch.Tensor,
                      generator: torch.Generator | None = None) -> dict[str, float]:
        """One importance-weighted fitting step towards pi_old * exp(Q / alpha) on `actions` (B, |A|) of
        pi_old at `obs` (module doc)."""
        with torch.no_grad():
            q = self.q_values(self.critics.critic, obs, actions[:, None])[:, 0]
            self.q_moments.update(q)
            weights = mirror_descent_weights(q, self.q_moments.mean, self.q_moments.std, self.alpha,
                                             self.config.weight_clip)
        cond = self.actor.obs_encoder(obs)
        loss_fn = mvp_loss if self.config.head == "mvp" else flow_loss
        loss, loss_metrics = loss_fn(self.actor.backbone, cond, actions, self.actor.config, generator, weights)
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        self.policy_updates += 1
        for group in self.actor_optimizer.param_groups:
            group["lr"] = self.actor_lr()
        return {f"actor_{name}": value for name, value in loss_metrics.items()} | {
            "weight_max": weights.max().item()}

    def actor_lr(self) -> float:
        """The rate after `policy_updates` policy steps: linear from the anchor to `final_actor_lr` at the planned end."""
        start_update, start_lr = self.lr_anchor
        fraction = min((self.policy_updates - start_update) / max(self.planned_policy_updates - start_update, 1), 1.0)
        return start_lr + (self.config.final_actor_lr - start_lr) * fraction

    def entropy(self) -> float:
        return noise_entropy(self.actor.config.action_dim, self.noise_std)

    def update_alpha(self) -> None:
        loss = self.log_alpha * (self.entropy() - self.target_entropy)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.alpha_optimizer.step()

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], explore: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions (B, |A|) in the task's units: the best of N under the critic, with exploration noise if `explore`."""
        actions = self.best_of(obs, generator)
        return self.actor.action_scaler.unnormalize(self.explore(actions, generator) if explore else actions)

    def state(self) -> AgentState:
        return AgentState(modules={"actor": self.actor, "critic": self.critics.critic, "critic_target": self.critics.target},
                          optimizers={"actor": self.actor_optimizer, "critic": self.critics.optimizer,
                                      "alpha": self.alpha_optimizer},
                          tensors={"log_alpha": self.log_alpha},
                          counters={"updates": self.updates, "policy_updates": self.policy_updates,
                                    "planned_policy_updates": self.planned_policy_updates,
                                    "lr_anchor": list(self.lr_anchor), "q_mean": self.q_moments.mean,
                                    "q_mean_square": self.q_moments.mean_square})

    def restore_counters(self, counters: dict) -> None:
        """The counters of `state()`, saved by a run that may have planned fewer updates: then the rate's
        decay restarts from the rate reached (restored with the optimizer) towards the new end."""
        self.updates, self.policy_updates = counters["updates"], counters["policy_updates"]
        self.q_moments.mean, self.q_moments.mean_square = counters["q_mean"], counters["q_mean_square"]
        if counters["planned_policy_updates"] == self.planned_policy_updates:
            self.lr_anchor = tuple(counters["lr_anchor"])
        else:
            self.lr_anchor = (self.policy_updates, self.actor_optimizer.param_groups[0]["lr"])

    def save(self, directory: str | Path, training: dict) -> Path:
        """The actor as a policy checkpoint (`Policy.load`) and the twin critics beside it (`best_of`)."""
        save_checkpoint(directory, self.actor, self.normalization, training=training)
        save_critic(directory, self.critics.critic)
        return Path(directory)
