"""MFPO's pieces (mvp_ros.rl.mfpo) against closed forms: Hutchinson's divergence estimate, the average
divergence identity and a divergence network trained on linear fields, whose exact divergence is the trace
of their matrix; the log-likelihood of a mean-flow sample; effective sample sizes on a known distribution
and the ESS mixture of two estimates."""
from __future__ import annotations

import math

import pytest
import torch

from mvp_ros.rl.mfpo import (DivergenceNetwork, average_divergence_target, effective_sample_size, ess_mixture,
                             hutchinson_divergence, rademacher, sample_with_log_likelihood)

MATRIX = torch.tensor([[0.5, 1.0, -0.3], [0.2, -1.5, 0.7], [-0.4, 0.1, 2.0]])  # trace 1.0


def linear_field(matrix: torch.Tensor):
    """v(x, t) = t A x: div v = t tr(A), so D(x, t, r) = tr(A) (t + r) / 2 wherever the flow goes."""
    return lambda x, t: t[:, None] * (x @ matrix.T)


def exact_average_divergence(matrix: torch.Tensor):
    return lambda x, t, r: torch.trace(matrix) * (t + r) / 2


def test_hutchinson_is_exact_for_a_diagonal_field_and_unbiased_for_any():
    generator = torch.Generator().manual_seed(0)
    x, t = torch.randn(5, 3, generator=generator), torch.rand(5, generator=generator)
    diagonal = torch.diag(torch.tensor([0.5, -1.5, 2.0]))
    _, estimate = hutchinson_divergence(linear_field(diagonal), x, t, rademacher((5, 3), generator, x.device))
    assert torch.allclose(estimate, t * 1.0)  # e^T (t D) e = t tr(D) when e_i^2 = 1
    many = 40000
    x, t = torch.randn(many, 3, generator=generator), torch.ones(many)
    v, estimate = hutchinson_divergence(linear_field(MATRIX), x, t, rademacher((many, 3), generator, x.device))
    assert torch.allclose(v, x @ MATRIX.T)
    assert estimate.mean().item() == pytest.approx(1.0, abs=0.03)  # standard error 0.006


def test_the_average_divergence_target_of_the_exact_solution_is_itself():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=generator)
    t = torch.rand(6, generator=generator) * 0.5
    r = t + torch.rand(6, generator=generator) * 0.5
    diagonal = torch.diag(torch.tensor([0.5, -1.5, 2.0]))
    value, target = average_divergence_target(exact_average_divergence(diagonal), linear_field(diagonal), x, t, r,
                                              rademacher((6, 3), generator, x.device))
    # tr(A) t + (r - t) tr(A) / 2 = tr(A) (t + r) / 2
    assert torch.allclose(target, value) and torch.allclose(value, (t + r) / 2)


@pytest.mark.slow
def test_a_divergence_network_learns_the_exact_divergence_of_a_linear_field():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    network = DivergenceNetwork(action_dim=3, cond_dim=0, hidden_dim=64, depth=2)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    field = linear_field(MATRIX)
    batch = 256

    def divergence(x, t, r):
        return network(x, x.new_zeros(x.shape[0], 0), t, r)

    for _ in range(600):
        x = torch.randn(batch, 3, generator=generator)
        t, r = torch.rand(batch, 2, generator=generator).sort(dim=1).values.unbind(dim=1)
        value, target = average_divergence_target(divergence, field, x, t, r, rademacher((batch, 3), generator, x.device))
        loss = (value - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = torch.randn(2000, 3, generator=generator)
        t, r = torch.rand(2000, 2, generator=generator).sort(dim=1).values.unbind(dim=1)
        error = divergence(x, t, r) - exact_average_divergence(MATRIX)(x, t, r)
    # the exact values span 0 to 1: an untrained network misses them by about half of that, and one
    # trained without the identity's (r - t) dD/dt term (on the instantaneous divergence alone) by twice the bound
    assert error.abs().mean().item() < 0.08


@pytest.mark.parametrize("steps", [1, 2])
def test_the_log_likelihood_of_a_mean_flow_sample_is_exact_for_an_exponential_flow(steps):
    # v(a, t) = k a moves a_0 ~ N(0, I) to a_1 = e^k a_0 ~ N(0, e^{2k} I); u(a, t, r) = a (e^{k(r-t)} - 1) / (r - t)
    # and D = k * dim
    k, dim = 0.7, 4
    noise = torch.randn(10, dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    actions, log_prob = sample_with_log_likelihood(
        lambda a, t, r: a * ((torch.exp(k * (r - t)) - 1) / (r - t))[:, None],
        lambda a, t, r: torch.full_like(t, k * dim), noise, steps)
    assert torch.allclose(actions, math.exp(k) * noise)
    exact = torch.distributions.Normal(0.0, math.exp(k)).log_prob(actions).sum(dim=-1)
    assert torch.allclose(log_prob, exact)


def test_effective_sample_size_at_its_bounds_and_on_a_known_distribution():
    assert effective_sample_size(torch.zeros(2, 50)).tolist() == pytest.approx([50.0, 50.0])
    assert effective_sample_size(torch.tensor([0.0, -1e4, -1e4])).item() == pytest.approx(1.0)
    assert effective_sample_size(torch.tensor([1e4, 1e4, -1e4], dtype=torch.float64)).item() == pytest.approx(2.0)
    # proposal N(0, 1), target N(mu, 1): log w = mu x - mu^2 / 2, and ESS / n -> 1 / E_q[w^2] = exp(-mu^2)
    n, mu = 400000, 0.5
    x = torch.randn(n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert (effective_sample_size(mu * x - mu ** 2 / 2) / n).item() == pytest.approx(math.exp(-mu ** 2), rel=0.02)


def test_the_ess_mixture_weighs_each_estimate_by_its_effective_sample_size():
    values_1 = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 6.0]]])  # equal weights: mean (4, 3), ESS 4
    values_2 = torch.tensor([[[10.0, 10.0], [-2.0, 8.0], [0.0, 0.0], [0.0, 0.0]]])  # one sample: (-2, 8), ESS 1
    one_hot = torch.tensor([[-1e4, 0.0, -1e4, -1e4]])
    mixture, ess_1, ess_2 = ess_mixture(values_1, torch.zeros(1, 4), values_2, one_hot)
    assert (ess_1.item(), ess_2.item()) == (pytest.approx(4.0), pytest.approx(1.0))
    assert torch.allclose(mixture, (4 * torch.tensor([[4.0, 3.0]]) + torch.tensor([[-2.0, 8.0]])) / 5)
