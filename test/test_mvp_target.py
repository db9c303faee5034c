"""The MVP target and sampler against fields whose mean velocity is known in closed form.

Gaussian data a ~ N(mu, s^2) per dimension, noise eps ~ N(0, 1), path a_t = (1 - t) eps + t a.
The marginal at t is N(m_t, sigma_t^2) with m_t = t mu and sigma_t = sqrt((1 - t)^2 + t^2 s^2);
the flow is affine, so the exact mean velocity from t to r and the instantaneous velocity are

    u(z, t, r) = (m_r + sigma_r (z - m_t) / sigma_t - z) / (r - t)
    v(z, t)    = mu + sigma_t' (z - m_t) / sigma_t,     sigma_t' = (-(1 - t) + t s^2) / sigma_t
"""
from __future__ import annotations

import math

import pytest
import torch

from mvp_ros.policy.config import PolicyConfig
from mvp_ros.policy.mvp import mean_flow_target, mvp_loss, mvp_sample, sample_time_pairs, squared_error
from mvp_ros.policy.networks import ChunkBackbone

DIM = 3
MU = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
S = torch.tensor([0.3, 1.5, 0.8], dtype=torch.float64)


def sigma(t: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((1 - t) ** 2 + t**2 * S**2)


def flow_map(z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Where the probability-flow ODE takes z from time t to time r."""
    t, r = t[:, None], r[:, None]
    return r * MU + sigma(r) * (z - t * MU) / sigma(t)


def exact_mean_velocity(z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return (flow_map(z, t, r) - z) / (r - t)[:, None]


def exact_velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t[:, None]
    sigma_t = sigma(t)
    sigma_dot = (-(1 - t) + t * S**2) / sigma_t
    return MU + sigma_dot * (z - t * MU) / sigma_t


def gaussian_points(batch: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, DIM, generator=generator, dtype=torch.float64)
    t = 0.9 * torch.rand(batch, generator=generator, dtype=torch.float64)
    r = t + (1 - t) * (0.05 + 0.95 * torch.rand(batch, generator=generator, dtype=torch.float64))
    return z, t, r


def target_with_tangents(u_fn, z, t, r, v, tangent_t: float, tangent_r: float, sign: float = 1.0) -> torch.Tensor:
    """The MeanFlow target under a (possibly wrong) convention, to show the check discriminates."""
    _, derivative = torch.func.jvp(u_fn, (z, t, r), (v, tangent_t * torch.ones_like(t), tangent_r * torch.ones_like(r)))
    return v + sign * (r - t)[:, None] * derivative


def test_exact_gaussian_mean_velocity_is_a_fixed_point_of_the_target():
    z, t, r = gaussian_points()
    v = exact_velocity(z, t)
    u, target = mean_flow_target(exact_mean_velocity, z, t, r, v)
    assert u.dtype == torch.float64
    torch.testing.assert_close(u, exact_mean_velocity(z, t, r), rtol=0, atol=0)
    torch.testing.assert_close(target, u, rtol=1e-10, atol=1e-10)
    assert not target.requires_grad


def test_closed_form_velocities_are_consistent():
    """v is the r -> t limit of u, and u integrates v: the reference fields themselves are right."""
    z, t, _ = gaussian_points()
    torch.testing.assert_close(exact_mean_velocity(z, t, t + 1e-7), exact_velocity(z, t), rtol=1e-5, atol=1e-5)
    # Trapezoid integral of v along the exact trajectory from t to r equals (r - t) * u.
    t0, r0 = torch.full((1,), 0.2, dtype=torch.float64), torch.full((1,), 0.9, dtype=torch.float64)
    z0 = torch.tensor([[0.3, -0.7, 1.1]], dtype=torch.float64)
    taus = torch.linspace(0.2, 0.9, 2001, dtype=torch.float64)
    velocities = torch.stack([exact_velocity(flow_map(z0, t0, tau[None]), tau[None])[0] for tau in taus])
    integral = torch.trapezoid(velocities, taus, dim=0)
    torch.testing.assert_close(integral / 0.7, exact_mean_velocity(z0, t0, r0)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tangent_t, tangent_r, sign", [
    (-1.0, 0.0, 1.0),  # time running backwards
    (0.0, 1.0, 1.0),   # differentiating in r instead of t
    (1.0, 1.0, 1.0),   # moving r along with t
    (1.0, 0.0, -1.0),  # u = v - (r - t) du/dt
])
def test_wrong_conventions_do_not_give_a_fixed_point(tangent_t, tangent_r, sign):
    z, t, r = gaussian_points()
    v = exact_velocity(z, t)
    u = exact_mean_velocity(z, t, r)
    right = target_with_tangents(exact_mean_velocity, z, t, r, v, 1.0, 0.0)
    torch.testing.assert_close(right, u, rtol=1e-10, atol=1e-10)
    wrong = target_with_tangents(exact_mean_velocity, z, t, r, v, tangent_t, tangent_r, sign)
    assert (wrong - u).abs().max() > 1e-2


def test_swapping_t_and_r_does_not_give_a_fixed_point():
    z, t, r = gaussian_points()
    v = exact_velocity(z, t)
    _, target = mean_flow_target(exact_mean_velocity, z, r, t, v)
    assert (target - exact_mean_velocity(z, t, r)).abs().max() > 1e-2


def test_mean_flow_identity_alone_admits_offsets_that_ivc_excludes():
    """u + C(z_r) / (r - t), with C constant along trajectories, also satisfies the identity (docs/method.md, IVC)."""
    z, t, r = gaussian_points()
    v = exact_velocity(z, t)

    def offset_field(z, t, r):
        return exact_mean_velocity(z, t, r) + torch.sin(flow_map(z, t, r)) / (r - t)[:, None]

    u, target = mean_flow_target(offset_field, z, t, r, v)
    torch.testing.assert_close(target, u, rtol=1e-9, atol=1e-9)
    assert (u - exact_mean_velocity(z, t, r)).abs().max() > 0.1
    # The boundary condition u(z, t, t) = v is what rules the offset out: it blows up as r -> t.
    near = t + 1e-4
    assert (offset_field(z, t, near) - v).abs().max() > 100
    torch.testing.assert_close(exact_mean_velocity(z, t, near), v, rtol=1e-3, atol=1e-3)


def test_linear_field_target_matches_hand_derived_jvp():
    generator = torch.Generator().manual_seed(1)
    a_matrix = torch.randn(DIM, DIM, generator=generator, dtype=torch.float64)
    b, c = torch.randn(2, DIM, generator=generator, dtype=torch.float64)

    def linear_field(z, t, r):
        return z @ a_matrix.T + t[:, None] * b + (r * r)[:, None] * c

    z, t, r = gaussian_points(seed=2)
    v = torch.randn(z.shape, generator=generator, dtype=torch.float64)
    u, target = mean_flow_target(linear_field, z, t, r, v)
    # du/dt along (v, 1, 0) = A v + b; r is held fixed so c does not enter.
    expected = v + (r - t)[:, None] * (v @ a_matrix.T + b)
    torch.testing.assert_close(u, linear_field(z, t, r))
    torch.testing.assert_close(target, expected, rtol=1e-12, atol=1e-12)


def test_jvp_through_the_backbone_matches_finite_differences():
    config = PolicyConfig(head="mvp", action_dim=DIM, horizon=1, obs_shapes={"o": (2,)}, hidden_dim=32, depth=2)
    torch.manual_seed(0)
    net = ChunkBackbone(DIM, 2, config).double()
    z, t, r = gaussian_points(batch=16, seed=3)
    cond = torch.randn(16, 2, dtype=torch.float64)
    v = torch.randn(16, DIM, dtype=torch.float64)

    def field(a, tt, rr):
        return net(a, cond, tt, rr)

    with torch.no_grad():
        _, target = mean_flow_target(field, z, t, r, v)
        h = 1e-6
        derivative = (field(z + h * v, t + h, r) - field(z - h * v, t - h, r)) / (2 * h)
    torch.testing.assert_close(target, v + (r - t)[:, None] * derivative, rtol=1e-6, atol=1e-7)


def gaussian_net(a, cond, t, r):
    """A backbone-shaped wrapper of the exact Gaussian mean velocity (cond unused)."""
    return exact_mean_velocity(a, t.double(), r.double())


def test_one_step_sample_is_noise_plus_mean_velocity_from_0_to_1():
    noise = torch.randn(32, DIM, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    cond = torch.zeros(32, 1, dtype=torch.float64)
    zeros, ones = torch.zeros(32, dtype=torch.float64), torch.ones(32, dtype=torch.float64)
    one_step = mvp_sample(gaussian_net, cond, noise, steps=1)
    torch.testing.assert_close(one_step, noise + exact_mean_velocity(noise, zeros, ones), rtol=0, atol=1e-12)
    # The exact endpoint of the flow: the noise rescaled to the data's distribution.
    torch.testing.assert_close(one_step, MU + S * noise, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [2, 3, 7])
def test_k_step_sampling_on_the_exact_field_reaches_the_exact_endpoint(steps):
    noise = torch.randn(32, DIM, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    cond = torch.zeros(32, 1, dtype=torch.float64)
    torch.testing.assert_close(mvp_sample(gaussian_net, cond, noise, steps), MU + S * noise, rtol=1e-6, atol=1e-6)


def test_k_steps_follow_the_field_step_by_step():
    """With a field that is not an exact mean velocity, k steps differ from one: the loop really uses (t, r)."""
    def field(a, cond, t, r):
        return torch.sin(3 * a) * (r - t)[:, None] + t[:, None]

    noise = torch.randn(8, DIM, generator=torch.Generator().manual_seed(6))
    cond = torch.zeros(8, 1)
    expected = noise
    for start, end in ((0.0, 0.5), (0.5, 1.0)):
        expected = expected + (end - start) * field(expected, cond, torch.full((8,), start), torch.full((8,), end))
    torch.testing.assert_close(mvp_sample(field, cond, noise, 2), expected)
    assert (mvp_sample(field, cond, noise, 1) - expected).abs().max() > 1e-2


def mvp_config(**overrides) -> PolicyConfig:
    settings = dict(head="mvp", action_dim=DIM, horizon=2, obs_shapes={"o": (4,)}, hidden_dim=32, depth=2)
    settings.update(overrides)
    return PolicyConfig(**settings)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_time_pairs_are_ordered_with_the_configured_equal_share(fraction):
    config = mvp_config(equal_time_fraction=fraction)
    batch = 20_000
    t, r, n_equal = sample_time_pairs(batch, config, torch.Generator().manual_seed(7), torch.device("cpu"))
    assert n_equal == round(fraction * batch)
    assert torch.all(t <= r)
    assert torch.all((t > 0) & (t < 1) & (r > 0) & (r < 1))
    assert torch.equal(t[:n_equal], r[:n_equal])
    assert torch.all(t[n_equal:] < r[n_equal:])
    if n_equal < batch:
        # The unequal pairs are sorted pairs of logit-normal(-0.4, 1) draws.
        logits = torch.logit(torch.cat([t[n_equal:], r[n_equal:]]).double())
        assert abs(logits.mean().item() - config.time_logit_mean) < 0.05
        assert abs(logits.std().item() - config.time_logit_std) < 0.05


def test_time_pairs_follow_the_generator():
    config = mvp_config()
    first = sample_time_pairs(64, config, torch.Generator().manual_seed(8), torch.device("cpu"))
    again = sample_time_pairs(64, config, torch.Generator().manual_seed(8), torch.device("cpu"))
    other = sample_time_pairs(64, config, torch.Generator().manual_seed(9), torch.device("cpu"))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def loss_inputs(config: PolicyConfig, batch: int = 32):
    torch.manual_seed(10)
    net = ChunkBackbone(config.chunk_dim, 4, config)
    generator = torch.Generator().manual_seed(11)
    cond = torch.randn(batch, 4, generator=generator)
    actions = torch.rand(batch, config.chunk_dim, generator=generator) * 2 - 1
    return net, cond, actions


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_loss_gradients_reach_every_backbone_parameter(fraction):
    config = mvp_config(equal_time_fraction=fraction)
    net, cond, actions = loss_inputs(config)
    loss, stats = mvp_loss(net, cond, actions, config, torch.Generator().manual_seed(12))
    loss.backward()
    assert math.isfinite(stats["loss"])
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_loss_matches_a_manual_computation_with_finite_differences():
    """Path, velocity sign, time pairs and target, recomputed by hand from the same random draws."""
    config = mvp_config(equal_time_fraction=0.25, adaptive_weight_power=0.0, ivc_weight=0.7)
    net, cond, actions = loss_inputs(config)
    net = net.double()
    cond, actions = cond.double(), actions.double()
    loss, stats = mvp_loss(net, cond, actions, config, torch.Generator().manual_seed(13))

    generator = torch.Generator().manual_seed(13)
    eps = torch.randn(actions.shape, generator=generator)
    t, r, n_equal = sample_time_pairs(actions.shape[0], config, generator, torch.device("cpu"))
    a_t = (1 - t)[:, None] * eps + t[:, None] * actions
    v = actions - eps
    with torch.no_grad():
        ivc = (net(a_t, cond, t, t) - v)[:n_equal].pow(2).sum(-1).mean()
        h, t64 = 1e-6, t.double()
        du_dt = (net(a_t + h * v, cond, t64 + h, r) - net(a_t - h * v, cond, t64 - h, r)) / (2 * h)
        target = v + (r - t)[:, None] * du_dt
        mf = (net(a_t, cond, t, r) - target)[n_equal:].pow(2).sum(-1).mean()
    assert stats["loss_ivc"] == pytest.approx(ivc.item(), rel=1e-6)
    assert stats["loss_mf"] == pytest.approx(mf.item(), rel=1e-6)
    assert loss.item() == pytest.approx(mf.item() + 0.7 * ivc.item(), rel=1e-6)


def test_ivc_weight_zero_leaves_only_the_mean_flow_term():
    config = mvp_config(ivc_weight=0.0)
    net, cond, actions = loss_inputs(config)
    loss, stats = mvp_loss(net, cond, actions, config, torch.Generator().manual_seed(14))
    assert stats["loss_ivc"] > 0  # the r = t share was evaluated ...
    assert loss.item() == stats["loss_mf"]  # ... and contributes nothing
    loss.backward()
    gradient_without_ivc = [p.grad.clone() for p in net.parameters()]

    # The same draws with the r = t share removed from the batch entirely give the same gradient.
    net.zero_grad()
    only_mean = mvp_config(ivc_weight=0.0, equal_time_fraction=0.0)
    generator = torch.Generator().manual_seed(14)
    eps = torch.randn(actions.shape, generator=generator)
    t, r, n_equal = sample_time_pairs(actions.shape[0], config, generator, torch.device("cpu"))
    a_t = (1 - t)[:, None] * eps + t[:, None] * actions
    keep = slice(n_equal, None)
    u, target = mean_flow_target(lambda a, tt, rr: net(a, cond[keep], tt, rr), a_t[keep], t[keep], r[keep],
                                 (actions - eps)[keep])
    squared_error(u, target, only_mean).mean().backward()
    for expected, parameter in zip(gradient_without_ivc, net.parameters()):
        torch.testing.assert_close(parameter.grad, expected)


def test_ivc_weight_scales_the_ivc_term():
    config = mvp_config(ivc_weight=0.5)
    net, cond, actions = loss_inputs(config)
    loss, stats = mvp_loss(net, cond, actions, config, torch.Generator().manual_seed(15))
    assert loss.item() == pytest.approx(stats["loss_mf"] + 0.5 * stats["loss_ivc"], rel=1e-6)


def test_adaptive_weight_divides_by_the_detached_error():
    config = mvp_config(adaptive_weight_power=0.5, adaptive_weight_eps=1e-3)
    prediction = torch.tensor([[1.0, 2.0], [0.0, 0.1]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    error = torch.tensor([5.0, 0.01])
    weight = (error + 1e-3) ** -0.5
    weighted = squared_error(prediction, target, config)
    torch.testing.assert_close(weighted, weight * error)
    weighted.sum().backward()
    # The weight is a constant for the gradient: d/dp (w * ||p||^2) = 2 w p.
    torch.testing.assert_close(prediction.grad, 2 * weight[:, None] * prediction.detach())
    torch.testing.assert_close(squared_error(prediction, target, mvp_config(adaptive_weight_power=0.0)), error)
