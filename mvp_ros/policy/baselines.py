"""Baseline heads on the same backbone as MVP: flow matching, DDPM/DDIM diffusion, MLP regression.

Each head pairs a loss on normalized, flattened action chunks (B, D) with a sampler from noise,
and calls the backbone as `net(x, cond, t, r)` with `cond` the encoded observations.
"""
from __future__ import annotations

import math

import torch

from .config import PolicyConfig
from .mvp import Backbone, weighted_mean


def flow_loss(net: Backbone, cond: torch.Tensor, actions: torch.Tensor, config: PolicyConfig,
              generator: torch.Generator | None = None,
              weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Conditional flow matching with the same path and time distribution as MVP; v(a_t, t) = net(a_t, t, t);
    `weights` (B,) multiply each sample's squared error."""
    eps = torch.randn(actions.shape, generator=generator, device=actions.device)
    logits = config.time_logit_mean + config.time_logit_std * torch.randn(
        actions.shape[0], generator=generator, device=actions.device)
    t = torch.sigmoid(logits)
    a_t = (1 - t)[:, None] * eps + t[:, None] * actions
    loss = weighted_mean((net(a_t, cond, t, t) - (actions - eps)).pow(2).sum(dim=-1), weights)
    return loss, {"loss": loss.item()}


def flow_sample(net: Backbone, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Euler integration of the instantaneous velocity from t = 0 to 1."""
    a = noise
    ones = torch.ones(noise.shape[0], device=noise.device)
    for i in range(steps):
        t = (i / steps) * ones
        a = a + net(a, cond, t, t) / steps
    return a


def cosine_alpha_bars(num_steps: int) -> torch.Tensor:
    """Cumulative signal fractions of the squared-cosine schedule (Nichol & Dhariwal), betas capped at 0.999."""
    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999) for i in range(num_steps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0).float()


def diffusion_loss(net: Backbone, cond: torch.Tensor, actions: torch.Tensor, alpha_bars: torch.Tensor,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """DDPM noise prediction; the network sees the step as t = r = k / K."""
    total = alpha_bars.shape[0]
    k = torch.randint(0, total, (actions.shape[0],), generator=generator, device=actions.device)
    eps = torch.randn(actions.shape, generator=generator, device=actions.device)
    signal = alpha_bars[k].sqrt()[:, None]
    noisy = signal * actions + (1 - alpha_bars[k]).sqrt()[:, None] * eps
    step_time = k.float() / total
    loss = (net(noisy, cond, step_time, step_time) - eps).pow(2).sum(dim=-1).mean()
    return loss, {"loss": loss.item()}


def diffusion_steps(total: int, sampler: str, ddim_steps: int) -> list[int]:
    """The steps k a sampler visits, from K - 1 down to 0: all of them (DDPM) or `ddim_steps` evenly spaced."""
    if sampler == "ddpm":
        return list(range(total - 1, -1, -1))
    return torch.linspace(total - 1, 0, ddim_steps).round().long().tolist()


def diffusion_sample(net: Backbone, cond: torch.Tensor, noise: torch.Tensor, alpha_bars: torch.Tensor, sampler: str,
                     steps: list[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM ancestral sampling or deterministic DDIM (eta = 0) over `steps` (`diffusion_steps`)."""
    total = alpha_bars.shape[0]
    x = noise
    ones = torch.ones(noise.shape[0], device=noise.device)
    for index, k in enumerate(steps):
        previous = steps[index + 1] if index + 1 < len(steps) else -1
        alpha_bar = alpha_bars[k]
        alpha_bar_prev = alpha_bars[previous] if previous >= 0 else torch.ones((), device=noise.device)
        predicted_eps = net(x, cond, ones * (k / total), ones * (k / total))
        x0 = ((x - (1 - alpha_bar).sqrt() * predicted_eps) / alpha_bar.sqrt()).clamp(-1, 1)
        if sampler == "ddim":
            eps_from_x0 = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
            x = alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev).sqrt() * eps_from_x0
            continue
        alpha = alpha_bar / alpha_bar_prev
        mean = (alpha_bar_prev.sqrt() * (1 - alpha) * x0 + alpha.sqrt() * (1 - alpha_bar_prev) * x) / (1 - alpha_bar)
        if previous >= 0:
            variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha)
            mean = mean + variance.sqrt() * torch.randn(x.shape, generator=generator, device=x.device)
        x = mean
    return x


def regression_loss(net: Backbone, cond: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Deterministic MLP regressor: the backbone with x = 0 and t = r = 0 predicts the chunk (MSE)."""
    loss = (regression_sample(net, cond, actions) - actions).pow(2).sum(dim=-1).mean()
    return loss, {"loss": loss.item()}


def regression_sample(net: Backbone, cond: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The noise slot is fed zeros: a deterministic regressor ignores `like` except for its shape."""
    times = torch.zeros(like.shape[0], device=like.device)
    return net(torch.zeros_like(like), cond, times, times)
