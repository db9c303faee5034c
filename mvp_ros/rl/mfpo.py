"""MFPO (Mean Flow Policy Optimization, arXiv 2604.14698): a two-step MeanFlow policy trained online by
maximum-entropy soft policy iteration, in Gymnasium tasks (mvp_ros.rl.gym_online). Its action
log-likelihood comes from an average divergence network; its policy improvement regresses the MeanFlow
onto an importance-weighted estimate of the velocity field of pi* proportional to exp(Q / alpha), mixing
two proposals by their effective sample sizes. Checked against the authors' public code (github.com/
dongxiaoyi-xyz/MFPO); docs/rl_online.md lists where it still differs. Notation of
mvp_ros.policy.mvp: noise at t = 0, action at t = 1, a_t = (1 - t) eps + t a.

Log-likelihood. Along a flow da/dt = v(a, t) from a_0 ~ N(0, I), d/dt log p_t(a_t) = -div v(a_t, t), so

    log pi(a_1) = log N(a_0; 0, I) - integral_0^1 div v(a_t, t) dt.

The average divergence over [t, r] along the flow from a_t, D(a_t, t, r) = 1/(r - t) integral_t^r
div v(a_tau, tau) dtau, obeys the MeanFlow identity with the divergence in place of the velocity:

    D(a_t, t, r) = div v(a_t, t) + (r - t) dD/dt,   dD/dt = v . d_a D + d_t D   (r fixed)

so a network D_phi learns it as the MeanFlow head learns u, from Hutchinson's unbiased estimate of
the divergence (e Rademacher, one forward-mode JVP of the policy's instantaneous field v = u(., t, t)):

    L_D = E (D_phi(a_t, t, r) - stopgrad(e^T (dv/da) e + (r - t) dD_phi/dt))^2

and a k-step sample a_{i+1} = a_i + (t_{i+1} - t_i) u(a_i, t_i, t_{i+1}) has
log pi(a_k) = log N(a_0) - sum_i (t_{i+1} - t_i) D_phi(a_i, t_i, t_{i+1}).

Effective sample size. Self-normalized importance weights w_i of n samples carry the information of
ESS = (sum w)^2 / sum w^2 samples drawn from the target, from 1 (one sample has all the weight) to n
(equal weights). Two estimates of the same quantity, one per proposal, are mixed by their ESS:
x = (ESS_1 x_1 + ESS_2 x_2) / (ESS_1 + ESS_2).

Soft policy improvement. The flow from N(0, I) to pi* along a_t = (1 - t) eps + t a has the velocity
v*(a_t, t) = E[(a - a_t) / (1 - t)] under the posterior p*(a | a_t) proportional to
exp(Q(s, a) / alpha) N(a_t; t a, (1 - t)^2 I) on the action box, estimated by self-normalized
importance sampling from two proposals:

    policy samples        a_i ~ pi(.|s):                   log w_i = Q/alpha - |a_t - t a_i|^2 / (2 (1-t)^2) - log pi(a_i|s)
    clean-action samples  a_i ~ N(a_t / t, ((1-t)/t)^2 I) truncated to the box:  log w_i = Q/alpha
                          (the Gaussians cancel, and the truncation's normalizer is the same for every a_i of a row)

mixed by their ESS. At points a_t built from the policy's own samples, with (t, r) pairs of which a
share has r = t, the MeanFlow + IVC loss (mvp_ros.policy.mvp.mean_flow_loss) regresses the policy onto
that velocity.

Critics. As in the authors' code, each twin critic is categorical: logits over atoms z_k evenly spaced
on [value_min, value_max], Q the expectation. The soft TD target of critic j moves Qbar_j(s', a')'s atoms
to r + gamma (1 - d) (z_k - alpha log pi(a'|s')), clipped to the support, and projects them back onto it
(each atom's probability split between its two neighbours in proportion to closeness, which keeps the
mean); of the two projected targets the one with the smaller mean is the target of both critics
(`twin_aggregate` "min"; "mean": their average), each trained by cross-entropy. With `value_atoms` 1 they
are scalar critics with the squared soft TD loss of mvp_ros.rl.sac instead.

Each update also takes a soft TD step of the twin critics, a step of D_phi, a temperature step
towards the target entropy -0.5 |A| (the entropy estimated from all the policy samples) and a Polyak step
of the target critics. It acts with one policy sample, and in evaluation with the best of
`eval_candidates` samples under the target critics.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..policy.checkpoint import save_checkpoint
from ..policy.config import ConfigError, PolicyConfig
from ..policy.critic import ChunkCritic, save_critic
from ..policy.model import ChunkPolicyModel
from ..policy.mvp import mean_flow_loss, sample_time_pairs
from ..policy.networks import TimeEmbedding, mlp
from ..policy.normalizer import Normalization
from .replay import ChunkBatch
from .sac import ActorCriticConfig, AgentState, TwinCritic, soft_td_target, temperature_loss
from .td import discounted_chunk_return

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # v(a, t)
AverageDivergence = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # D(a, t, r) -> (B,)
MeanVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # u(a, t, r)


class DivergenceNetwork(nn.Module):
    """D_phi(a_t, t, r | s): an MLP over [a_t, cond, emb(t), emb(r - t)] to one number per sample."""

    def __init__(self, action_dim: int, cond_dim: int, hidden_dim: int, depth: int, time_embed_dim: int = 16):
        super().__init__()
        self.time_embedding = TimeEmbedding(time_embed_dim)
        self.interval_embedding = TimeEmbedding(time_embed_dim)
        self.net = mlp(action_dim + cond_dim + 2 * time_embed_dim, hidden_dim, depth, 1)

    def forward(self, a: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        features = [a, cond, self.time_embedding(t), self.interval_embedding(r - t)]
        return self.net(torch.cat(features, dim=-1))[:, 0]


def categorical_projection(probs: torch.Tensor, atoms: torch.Tensor, value_min: float,
                           value_max: float) -> torch.Tensor:
    """Distributions with probabilities `probs` on values `atoms` (..., K) moved onto the K evenly spaced
    values of [value_min, value_max]: each atom clipped to the interval and its probability split between
    its two neighbouring support values, in proportion to how close it is to each."""
    count = probs.shape[-1]
    position = (atoms.clamp(value_min, value_max) - value_min) / ((value_max - value_min) / (count - 1))
    lower = position.floor().long().clamp(0, count - 1)
    upper = position.ceil().long().clamp(0, count - 1)
    on_support = lower == upper
    projected = torch.zeros_like(probs)
    projected.scatter_add_(-1, lower, probs * torch.where(on_support, 1.0, upper - position))
    projected.scatter_add_(-1, upper, probs * torch.where(on_support, 0.0, position - lower))
    return projected


def categorical_soft_td_target(batch: ChunkBatch, next_logits: torch.Tensor, support: torch.Tensor,
                               next_log_prob: torch.Tensor, alpha: float, gamma: float, aggregate: str) -> torch.Tensor:
    """The target distribution (B, K) of both critics from the target critics' logits at (s', a') (2, B, K) (module
    doc): each shifted by the chunk's discounted rewards and the discounted soft value of its atoms, projected
    onto the support; then the one with the smaller mean per row ("min"), or their average ("mean")."""
    rewards = discounted_chunk_return(batch.rewards, batch.step_mask, gamma)
    discount = gamma ** batch.rewards.shape[-1] * batch.bootstrap
    atoms = rewards[:, None] + discount[:, None] * (support - alpha * next_log_prob[:, None])
    projected = categorical_projection(torch.softmax(next_logits, dim=-1), atoms.expand_as(next_logits),
                                       float(support[0]), float(support[-1]))
    if aggregate == "mean":
        return projected.mean(dim=0)
    smaller = (projected * support).sum(dim=-1).argmin(dim=0)
    return projected[smaller, torch.arange(projected.shape[1], device=projected.device)]


def rademacher(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1


def hutchinson_divergence(velocity: Field, a: torch.Tensor, t: torch.Tensor,
                          probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(a, t), e^T (dv/da) e) per sample, from one forward-mode JVP; unbiased for E[e e^T] = I."""
    v, jacobian_probe = torch.func.jvp(lambda x: velocity(x, t), (a,), (probe,))
    return v, (probe * jacobian_probe).sum(dim=-1)


def average_divergence_target(divergence: AverageDivergence, velocity: Field, a: torch.Tensor, t: torch.Tensor,
                              r: torch.Tensor, probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(a_t, t, r), stopgrad(e^T (dv/da) e + (r - t) dD/dt)), dD/dt along v with r fixed."""
    with torch.no_grad():
        v, divergence_estimate = hutchinson_divergence(velocity, a, t, probe)
    value, d_dt = torch.func.jvp(divergence, (a, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    return value, (divergence_estimate + (r - t) * d_dt).detach()


def sample_with_log_likelihood(mean_velocity: MeanVelocity, divergence: AverageDivergence, noise: torch.Tensor,
                               steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k mean-flow steps from `noise` (B, D) -> (actions, log pi(actions)) by the average divergence."""
    a = noise
    log_prob = -0.5 * noise.pow(2).sum(dim=-1) - 0.5 * noise.shape[-1] * math.log(2 * math.pi)
    ones = noise.new_ones(noise.shape[0])
    times = torch.linspace(0.0, 1.0, steps + 1).tolist()
    for start, end in zip(times[:-1], times[1:]):
        t, r = start * ones, end * ones
        log_prob = log_prob - (end - start) * divergence(a, t, r)
        a = a + (end - start) * mean_velocity(a, t, r)
    return a, log_prob


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """(sum w)^2 / sum w^2 over the last axis, from unnormalized log-weights (stable at any scale)."""
    return torch.exp(2 * torch.logsumexp(log_weights, dim=-1) - torch.logsumexp(2 * log_weights, dim=-1))


def ess_mixture(values_1: torch.Tensor, log_weights_1: torch.Tensor, values_2: torch.Tensor,
                log_weights_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each proposal's self-normalized estimate sum_i w_i x_i (values (B, N, D), log-weights (B, N)),
    mixed by their ESS: (the mixture (B, D), ESS_1 (B,), ESS_2 (B,)). The first proposal needs a sample
    of positive weight in every row."""
    ess_1, ess_2 = (torch.nan_to_num(effective_sample_size(weights), nan=0.0)
                    for weights in (log_weights_1, log_weights_2))
    # a proposal with no sample of positive weight (all log-weights -inf) has ESS 0 and no say
    estimate_1 = (torch.nan_to_num(torch.softmax(log_weights_1, dim=-1))[..., None] * values_1).sum(dim=-2)
    estimate_2 = (torch.nan_to_num(torch.softmax(log_weights_2, dim=-1))[..., None] * values_2).sum(dim=-2)
    share_1 = (ess_1 / (ess_1 + ess_2))[:, None]
    return share_1 * estimate_1 + (1 - share_1) * estimate_2, ess_1, ess_2


def truncated_standard_normal(low: torch.Tensor, high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) samples restricted to [low, high] elementwise, by the inverse CDF in float64; an interval above zero is
    sampled as the mirror of its negative, where the CDF keeps its precision."""
    flip = low > 0
    low64, high64 = torch.where(flip, -high, low).double(), torch.where(flip, -low, high).double()
    cdf_low, cdf_high = torch.special.ndtr(low64), torch.special.ndtr(high64)
    uniform = torch.rand(low.shape, generator=generator, device=low.device, dtype=torch.float64)
    sample = torch.special.ndtri(cdf_low + uniform * (cdf_high - cdf_low))
    sample = torch.minimum(torch.maximum(sample, low64), high64).to(low.dtype)
    return torch.where(flip, -sample, sample)


def soft_velocity_target(q_of: Callable[[torch.Tensor], torch.Tensor], a_t: torch.Tensor, t: torch.Tensor,
                         policy_actions: torch.Tensor, policy_log_prob: torch.Tensor, policy_q: torch.Tensor,
                         alpha: float, clean_count: int, generator: torch.Generator | None,
                         min_time: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """v*(a_t, t) of pi* proportional to exp(Q / alpha) on [-1, 1]^|A| from the two proposals of the module
    doc: policy samples (B, M, |A|) with their log pi and Q (B, M), and `clean_count` clean-action
    samples per row, all inside the box, whose Q `q_of` gives ((B, N, |A|) -> (B, N)). Returns
    (v* (B, |A|), ESS_1, ESS_2)."""
    one_minus_t = (1 - t).clamp_min(min_time)[:, None, None]
    points = a_t[:, None]
    log_likelihood = -(points - t[:, None, None] * policy_actions).pow(2).sum(dim=-1) / (2 * one_minus_t[..., 0] ** 2)
    policy_log_weights = policy_q / alpha + log_likelihood - policy_log_prob
    safe_t = t.clamp_min(min_time)[:, None, None]
    # clean = (a_t - (1 - t) n) / t lies in [-1, 1] exactly when n lies in [(a_t - t) / (1 - t), (a_t + t) / (1 - t)]
    expanded = points.expand(-1, clean_count, -1)
    noise = truncated_standard_normal((expanded - safe_t) / one_minus_t, (expanded + safe_t) / one_minus_t, generator)
    clean = ((points - one_minus_t * noise) / safe_t).clamp(-1.0, 1.0)
    return ess_mixture((policy_actions - points) / one_minus_t, policy_log_weights, (clean - points) / one_minus_t,
                       q_of(clean) / alpha)


@dataclass
class MfpoConfig(ActorCriticConfig):
    """The authors' settings (their code's configs/mfpo_config.py), in this package's time convention."""

    initial_alpha: float = 0.01
    target_entropy_per_dim: float = -0.5
    sampling_steps: int = 2
    equal_time_fraction: float = 0.75  # of the batch trained with r = t
    # the authors' logit-normal(-0.4, 1) has noise at t = 1; with noise at t = 0 it is logit-normal(+0.4, 1)
    time_logit_mean: float = 0.4
    proposal_samples: int = 16  # policy samples per state
    clean_samples: int = 32  # clean-action samples per state
    eval_candidates: int = 10
    value_atoms: int = 101  # of each categorical critic; 1: scalar critics
    value_min: float = -1600.0
    value_max: float = 1600.0
    # their README's command turns the twin minimum off ("use_cdq False") on HalfCheetah: "mean" there
    twin_aggregate: str = "min"

    def __post_init__(self) -> None:
        for name in ("sampling_steps", "proposal_samples", "clean_samples", "eval_candidates", "value_atoms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.twin_aggregate not in ("min", "mean"):
            raise ConfigError(f"twin_aggregate: {self.twin_aggregate!r} is not 'min' or 'mean'")


class MfpoAgent:
    def __init__(self, policy_config: PolicyConfig, normalization: Normalization, config: MfpoConfig,
                 device: torch.device):
        self.config = config
        self.normalization = normalization
        policy_config = dataclasses.replace(policy_config, time_logit_mean=config.time_logit_mean)
        self.actor = ChunkPolicyModel(policy_config, normalization).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.divergence = DivergenceNetwork(policy_config.action_dim, self.actor.obs_encoder.output_dim,
                                            config.hidden_dim, config.depth).to(device)
        self.divergence_optimizer = torch.optim.Adam(self.divergence.parameters(), lr=config.actor_lr)
        self.critics = TwinCritic(policy_config, normalization, config.hidden_dim, config.depth, config.critic_lr,
                                  device, aggregate=config.twin_aggregate, atoms=config.value_atoms,
                                  value_min=config.value_min, value_max=config.value_max)
        self.log_alpha = torch.tensor(math.log(config.initial_alpha), device=device, requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)
        self.target_entropy = config.target_entropy_per_dim * policy_config.action_dim

    @property
    def alpha(self) -> float:
        return self.log_alpha.exp().item()

    def sample(self, obs: dict[str, torch.Tensor], count: int,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` normalized actions per state (B, count, |A|), clipped to the box, and the log pi (B, count) of
        each before the clipping, which moves only samples that left the box."""
        cond = self.actor.obs_encoder(obs).repeat_interleave(count, dim=0)
        noise = torch.randn(cond.shape[0], self.actor.config.action_dim, generator=generator, device=cond.device)
        actions, log_prob = sample_with_log_likelihood(
            lambda a, t, r: self.actor.backbone(a, cond, t, r), lambda a, t, r: self.divergence(a, cond, t, r),
            noise, self.config.sampling_steps)
        return actions.clamp(-1.0, 1.0).view(-1, count, actions.shape[-1]), log_prob.view(-1, count)

    def q_values(self, critic: ChunkCritic, obs: dict[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        """min_j Q_j (or their mean) (B, N) of normalized actions (B, N, |A|)."""
        return critic.value(obs, self.actor.action_scaler.unnormalize(actions)[:, :, None])

    def update(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        alpha, target_critic = self.alpha, self.critics.target
        with torch.no_grad():
            next_actions, next_log_prob = self.sample(batch.next_obs, 1, generator)
            if self.config.value_atoms > 1:
                next_logits = target_critic.outputs(batch.next_obs,
                                                    self.actor.action_scaler.unnormalize(next_actions)[:, :, None])
                target = categorical_soft_td_target(batch, next_logits[:, :, 0], target_critic.support,
                                                    next_log_prob[:, 0], alpha, self.config.gamma,
                                                    self.config.twin_aggregate)
            else:
                next_q = self.q_values(target_critic, batch.next_obs, next_actions)[:, 0]
                target = soft_td_target(batch, next_q, next_log_prob[:, 0], alpha, self.config.gamma)
        metrics = self.critics.step(batch, target)
        metrics.update(self.update_policy(batch.obs, alpha, generator))
        self.critics.update_target(self.config.tau)
        return metrics

    def update_policy(self, obs: dict[str, torch.Tensor], alpha: float,
                      generator: torch.Generator | None) -> dict[str, float]:
        """A soft policy improvement step, a divergence-network step and a temperature step (module doc)."""
        config = self.actor.config
        cond = self.actor.obs_encoder(obs)
        with torch.no_grad():
            actions, log_prob = self.sample(obs, self.config.proposal_samples, generator)
            q = self.q_values(self.critics.critic, obs, actions)
            batch = cond.shape[0]
            t, r, n_equal = sample_time_pairs(batch, config, generator, cond.device)
            eps = torch.randn(actions[:, 0].shape, generator=generator, device=cond.device)
            a_t = (1 - t)[:, None] * eps + t[:, None] * actions[:, 0]
            velocity, ess_policy, ess_clean = soft_velocity_target(
                lambda clean: self.q_values(self.critics.critic, obs, clean), a_t, t, actions, log_prob, q, alpha,
                self.config.clean_samples, generator)
        loss, loss_metrics = mean_flow_loss(self.actor.backbone, cond, a_t, t, r, n_equal, velocity, config)
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()

        value, divergence_target = average_divergence_target(
            lambda a, tt, rr: self.divergence(a, cond.detach(), tt, rr),
            lambda a, tt: self.actor.backbone(a, cond.detach(), tt, tt),
            a_t, t, r, rademacher(tuple(a_t.shape), generator, a_t.device))
        divergence_loss = (value - divergence_target).pow(2).mean()
        self.divergence_optimizer.zero_grad(set_to_none=True)
        divergence_loss.backward()
        self.divergence_optimizer.step()

        alpha_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        return {f"actor_{name}": value for name, value in loss_metrics.items()} | {
            "loss_divergence": divergence_loss.item(), "alpha": alpha, "entropy": -log_prob.mean().item(),
            "ess_policy": ess_policy.mean().item(), "ess_clean": ess_clean.mean().item()}

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], explore: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions (B, |A|) in the task's units: a policy sample, or (evaluation) the best of `eval_candidates`
        under the target critics, as the authors' code selects."""
        if explore:
            actions = self.sample(obs, 1, generator)[0][:, 0]
        else:
            candidates = self.sample(obs, self.config.eval_candidates, generator)[0]
            best = self.q_values(self.critics.target, obs, candidates).argmax(dim=-1)
            actions = candidates[torch.arange(candidates.shape[0], device=candidates.device), best]
        return self.actor.action_scaler.unnormalize(actions)

    def state(self) -> AgentState:
        return AgentState(modules={"actor": self.actor, "divergence": self.divergence, "critic": self.critics.critic,
                                   "critic_target": self.critics.target},
                          optimizers={"actor": self.actor_optimizer, "divergence": self.divergence_optimizer,
                                      "critic": self.critics.optimizer, "alpha": self.alpha_optimizer},
                          tensors={"log_alpha": self.log_alpha})

    def restore_counters(self, counters: dict) -> None:
        """MFPO counts nothing."""

    def save(self, directory: str | Path, training: dict) -> Path:
        """The actor as a policy checkpoint (`Policy.load`, two steps) and the twin critics beside it."""
        save_checkpoint(directory, self.actor, self.normalization, training=training)
        save_critic(directory, self.critics.critic)
        return Path(directory)
