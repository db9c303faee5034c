"""Pieces of MFPO (Mean Flow Policy Optimization, arXiv 2604.14698): the action log-likelihood of a
MeanFlow policy from an average divergence network, and the effective sample sizes by which its soft
policy improvement mixes two importance-sampling estimates. The agent that trains with them is not
written yet (docs/rl_online.md). Notation of mvp_ros.policy.mvp: noise at t = 0, action at t = 1.

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
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..policy.networks import TimeEmbedding, mlp

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
    mixed by their ESS: (the mixture (B, D), ESS_1 (B,), ESS_2 (B,))."""
    ess_1, ess_2 = effective_sample_size(log_weights_1), effective_sample_size(log_weights_2)
    estimate_1 = (torch.softmax(log_weights_1, dim=-1)[..., None] * values_1).sum(dim=-2)
    estimate_2 = (torch.softmax(log_weights_2, dim=-1)[..., None] * values_2).sum(dim=-2)
    share_1 = (ess_1 / (ess_1 + ess_2))[:, None]
    return share_1 * estimate_1 + (1 - share_1) * estimate_2, ess_1, ess_2
