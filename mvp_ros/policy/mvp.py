"""Mean Velocity Policy head: MeanFlow loss + instantaneous velocity constraint, one-step sampling.

Notation (docs/method.md): noise at t = 0, action at t = 1.
    a_t = (1 - t) * eps + t * a_star            v = a_star - eps
    u(a_t, t, r) = 1 / (r - t) * integral_t^r v(a_tau, tau) dtau        (r >= t)
    MeanFlow identity:  u = v + (r - t) * du/dt,   du/dt = v . d_a u + d_t u   (r fixed)
    L_MF  = E || u_theta(a_t, t, r) - stopgrad(v + (r - t) * du/dt) ||^2        on pairs with r > t
    L_IVC = E || u_theta(a_t, t, t) - v ||^2                                     on pairs with r = t
    L = L_MF + lambda * L_IVC
    one-step action:  a = eps + u_theta(eps, 0, 1)

`net(a, cond, t, r)` is the backbone and `cond` the encoded observations, one row per sample. Each
squared error may be divided by (||delta||^2 + c)^p (adaptive weighting).
"""
from __future__ import annotations

from typing import Callable

import torch

from .config import PolicyConfig

Backbone = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sample_time_pairs(batch: int, config: PolicyConfig, generator: torch.Generator | None,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Two logit-normal samples sorted so t <= r; the first `n_equal` pairs get r = t (the IVC share)."""
    logits = config.time_logit_mean + config.time_logit_std * torch.randn(batch, 2, generator=generator, device=device)
    times = torch.sigmoid(logits)
    t, r = times.min(dim=1).values, times.max(dim=1).values
    n_equal = int(round(config.equal_time_fraction * batch))
    r = torch.cat([t[:n_equal], r[n_equal:]])
    return t, r, n_equal


def mean_flow_target(u_fn: VelocityFn, a_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor,
                     v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (u_theta(a_t, t, r), stopgrad(v + (r - t) * du/dt)) with du/dt from one forward-mode JVP."""
    u, du_dt = torch.func.jvp(u_fn, (a_t, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    return u, (v + (r - t)[:, None] * du_dt).detach()


def squared_error(prediction: torch.Tensor, target: torch.Tensor, config: PolicyConfig) -> torch.Tensor:
    """Per-sample ||delta||^2, adaptively weighted by 1 / (||delta||^2 + c)^p (weight not differentiated)."""
    error = (prediction - target).pow(2).sum(dim=-1)
    if config.adaptive_weight_power == 0:
        return error
    weight = (error.detach() + config.adaptive_weight_eps).pow(-config.adaptive_weight_power)
    return weight * error


def weighted_mean(errors: torch.Tensor, weights: torch.Tensor | None, rows: slice = slice(None)) -> torch.Tensor:
    """The mean of per-sample errors, each times its weight (weights[rows]) when there are weights."""
    return errors.mean() if weights is None else (weights[rows] * errors).mean()


def mvp_loss(net: Backbone, cond: torch.Tensor, actions: torch.Tensor, config: PolicyConfig,
             generator: torch.Generator | None = None,
             weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_MF + lambda * L_IVC on a batch of normalized, flattened action chunks (B, D); `weights` (B,)
    multiply each sample's squared error (importance-weighted fitting, mvp_ros.rl.fpmd)."""
    eps = torch.randn(actions.shape, generator=generator, device=actions.device)
    t, r, n_equal = sample_time_pairs(actions.shape[0], config, generator, actions.device)
    a_t = (1 - t)[:, None] * eps + t[:, None] * actions
    return mean_flow_loss(net, cond, a_t, t, r, n_equal, actions - eps, config, weights)


def mean_flow_loss(net: Backbone, cond: torch.Tensor, a_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor,
                   n_equal: int, v: torch.Tensor, config: PolicyConfig,
                   weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_MF + lambda * L_IVC at points a_t (B, D) with times t <= r, the first `n_equal` pairs with r = t,
    towards the velocities v: mvp_loss's v = a_star - eps, or an estimate of a target policy's field
    (mvp_ros.rl.mfpo)."""
    zero = a_t.new_zeros(())
    loss_ivc = zero
    if n_equal > 0:
        equal = slice(0, n_equal)
        u = net(a_t[equal], cond[equal], t[equal], t[equal])
        loss_ivc = weighted_mean(squared_error(u, v[equal], config), weights, equal)
    loss_mf = zero
    if n_equal < a_t.shape[0]:
        mean = slice(n_equal, None)
        cond_mean = cond[mean]
        u, target = mean_flow_target(lambda a, tt, rr: net(a, cond_mean, tt, rr), a_t[mean], t[mean], r[mean], v[mean])
        loss_mf = weighted_mean(squared_error(u, target, config), weights, mean)

    loss = loss_mf + config.ivc_weight * loss_ivc
    return loss, {"loss": loss.item(), "loss_mf": loss_mf.item(), "loss_ivc": loss_ivc.item()}


def mvp_sample(net: Backbone, cond: torch.Tensor, noise: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """Follow the mean field from t = 0 to 1: one step is a = eps + u(eps, 0, 1); k steps only for comparison."""
    if steps == 1:
        return noise + net(noise, cond, noise.new_zeros(noise.shape[0]), noise.new_ones(noise.shape[0]))
    a = noise
    times = torch.linspace(0.0, 1.0, steps + 1, device=noise.device)
    ones = torch.ones(noise.shape[0], device=noise.device)
    for start, end in zip(times[:-1], times[1:]):
        a = a + (end - start) * net(a, cond, start * ones, end * ones)
    return a
