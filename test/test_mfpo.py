"""MFPO (mvp_ros.rl.mfpo) against closed forms: Hutchinson's divergence estimate, the average divergence
identity and a divergence network trained on linear fields, whose exact divergence is the trace of their
matrix; the log-likelihood of a mean-flow sample; effective sample sizes on a known distribution, the ESS
mixture of two estimates, the soft velocity target of a Gaussian Boltzmann policy and of one uniform on the
action box (through the truncated normal clean-action proposal); the authors' time distribution mirrored into
this package's convention; the categorical critics' projection and soft TD target by hand; and a short run
in Gymnasium's Hopper-v5 whose checkpoint `Policy.load` runs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mvp_ros.cli import main
from mvp_ros.policy import Policy
from mvp_ros.rl.gym_online import OBSERVATION_KEY, OnlineRunConfig, make_env, run_online, task_description
from mvp_ros.policy.critic import load_critic
from mvp_ros.rl.mfpo import (DivergenceNetwork, MfpoAgent, MfpoConfig, average_divergence_target,
                             categorical_projection, categorical_soft_td_target, effective_sample_size, ess_mixture,
                             hutchinson_divergence, rademacher, sample_with_log_likelihood, soft_velocity_target,
                             truncated_standard_normal)
from mvp_ros.rl.sac import TwinCritic
from mvp_ros.policy.mvp import sample_time_pairs

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from fixed_critics import DistanceCritic  # noqa: E402
from transition_batches import transitions  # noqa: E402

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

    for _ in range(400):
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


def gaussian_posterior_velocity(a_t: torch.Tensor, t: torch.Tensor, sigma: float) -> torch.Tensor:
    """v* = (E[a | a_t] - a_t) / (1 - t) for a ~ N(0, sigma^2) and a_t ~ N(t a, (1 - t)^2): the posterior mean
    is t sigma^2 a_t / (t^2 sigma^2 + (1 - t)^2)."""
    mean = t * sigma ** 2 * a_t / (t ** 2 * sigma ** 2 + (1 - t) ** 2)
    return (mean - a_t) / (1 - t)


def test_the_soft_velocity_target_is_the_velocity_of_the_boltzmann_policy():
    # Q(a) = -alpha a^2 / (2 sigma^2): pi* = N(0, sigma^2), inside the box for sigma = 0.25 up to 4 sigma
    alpha, sigma, samples = 0.5, 0.25, 40000
    generator = torch.Generator().manual_seed(5)

    def q_of(actions):
        return -alpha * actions[..., 0] ** 2 / (2 * sigma ** 2)

    a_t = torch.tensor([[0.3], [-0.2], [0.05]], dtype=torch.float64)
    t = torch.tensor([0.5, 0.7, 0.3], dtype=torch.float64)
    policy = torch.distributions.Normal(0.0, 0.5)  # a proposal wider than pi*, with a known log pi
    actions = policy.sample((3, samples, 1)).double().clamp(-1, 1)
    log_prob = policy.log_prob(actions)[..., 0]
    velocity, ess_policy, ess_clean = soft_velocity_target(q_of, a_t, t, actions, log_prob, q_of(actions), alpha,
                                                           samples, generator)
    assert torch.allclose(velocity[:, 0], gaussian_posterior_velocity(a_t[:, 0], t, sigma), atol=0.01)
    assert (ess_policy > 100).all() and (ess_clean > 100).all()


def truncated_normal_mean(mean, std, low: float, high: float):
    """E[x] of N(mean, std^2) restricted to [low, high]: mean + std (phi(a) - phi(b)) / (Phi(b) - Phi(a))."""
    a, b = (low - mean) / std, (high - mean) / std
    density = torch.distributions.Normal(0.0, 1.0).log_prob
    return mean + std * (density(a).exp() - density(b).exp()) / (torch.special.ndtr(b) - torch.special.ndtr(a))


def test_truncated_standard_normal_samples_stay_in_their_interval_with_the_closed_form_mean():
    generator = torch.Generator().manual_seed(6)
    low = torch.tensor([-1.0, 6.0, -9.0, 0.5], dtype=torch.float64).expand(100000, -1)
    high = torch.tensor([2.0, 8.0, -7.5, 0.6], dtype=torch.float64).expand(100000, -1)
    samples = truncated_standard_normal(low, high, generator)
    assert ((samples >= low) & (samples <= high)).all()
    expected = truncated_normal_mean(torch.zeros(4, dtype=torch.float64), 1.0, low[0], high[0])
    assert torch.allclose(samples.mean(dim=0), expected, atol=0.01)


def test_the_soft_velocity_target_of_a_policy_uniform_on_the_box_is_a_truncated_posterior_velocity():
    # Q constant: pi* is uniform on [-1, 1], so a | a_t ~ N(a_t / t, ((1 - t) / t)^2) truncated to [-1, 1]
    samples = 40000
    generator = torch.Generator().manual_seed(7)

    def q_of(actions):
        return torch.zeros(actions.shape[:-1], dtype=actions.dtype)

    a_t = torch.tensor([[0.15], [-0.5], [0.9]], dtype=torch.float64)
    t = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    actions = 2 * torch.rand((3, samples, 1), generator=generator, dtype=torch.float64) - 1  # the uniform policy
    log_prob = torch.full((3, samples), math.log(0.5), dtype=torch.float64)
    velocity, _, ess_clean = soft_velocity_target(q_of, a_t, t, actions, log_prob, q_of(actions), 1.0, samples,
                                                  generator)
    posterior_mean = truncated_normal_mean(a_t[:, 0] / t, (1 - t) / t, -1.0, 1.0)
    assert torch.allclose(velocity[:, 0], (posterior_mean - a_t[:, 0]) / (1 - t), atol=0.01)
    assert torch.allclose(ess_clean, torch.full((3,), float(samples), dtype=torch.float64))  # every sample counts


def test_mfpo_draws_its_times_from_the_authors_distribution_mirrored_to_noise_at_zero():
    # The authors draw two logit-normal(-0.4, 1) times with noise at t = 1 and give the r = t rows the larger; here
    # noise is at t = 0, so 1 - t of those rows is the larger of two logit-normal(-0.4, 1) samples, whose median m
    # has Phi(logit m + 0.4)^2 = 1/2.
    settings = MfpoConfig(hidden_dim=32, depth=2)
    policy_config, normalization = task_description(make_env("Hopper-v5"), "mvp", settings.hidden_dim, settings.depth,
                                                    mvp_steps=2, equal_time_fraction=0.75)
    agent = MfpoAgent(policy_config, normalization, settings, torch.device("cpu"))
    t, r, n_equal = sample_time_pairs(200000, agent.actor.config, torch.Generator().manual_seed(8), torch.device("cpu"))
    assert n_equal == 150000 and torch.equal(t[:n_equal], r[:n_equal])
    median = torch.sigmoid(torch.special.ndtri(torch.tensor(0.5).sqrt()) - 0.4)
    assert abs((1 - t[:n_equal]).median().item() - median.item()) < 0.005


def test_the_ess_mixture_ignores_a_proposal_without_a_sample_of_positive_weight():
    values_1, values_2 = torch.tensor([[[1.0], [3.0]]]), torch.tensor([[[100.0], [100.0]]])
    mixture, _, ess_2 = ess_mixture(values_1, torch.zeros(1, 2), values_2, torch.full((1, 2), -math.inf))
    assert ess_2.item() == 0.0 and torch.allclose(mixture, torch.tensor([[2.0]]))


@pytest.mark.slow
def test_a_short_mfpo_run_in_hopper_saves_a_two_step_policy_that_loads(tmp_path):
    out = run_online(OnlineRunConfig(algo="mfpo", env="Hopper-v5", online_steps=160, out=str(tmp_path / "mfpo"),
                                     batch_size=16, learning_starts=40, eval_every=160, eval_episodes=1,
                                     device="cpu", threads=1, agent={"hidden_dim": 64, "depth": 2,
                                                                     "proposal_samples": 8}), progress=False)
    log = json.loads((out / "online_log.json").read_text())
    assert log["updates"] == 120
    metrics = log["last_metrics"]
    assert {"loss_critic", "actor_loss", "loss_divergence", "alpha", "entropy", "ess_policy", "ess_clean"} <= set(metrics)
    assert all(math.isfinite(value) for value in metrics.values())
    assert math.isfinite(log["evaluations"][0]["mean_return"])
    policy = Policy.load(out, device="cpu")
    assert (policy.config.head, policy.config.mvp_steps, policy.config.equal_time_fraction) == ("mvp", 2, 0.75)
    observation = {"observation": np.zeros(11, np.float32)}
    assert policy.act(observation).shape == (1, 3)
    assert Policy.load(out, device="cpu", best_of=10).act(observation).shape == (1, 3)
    critic = load_critic(out)
    assert (critic.config.atoms, critic.config.value_min, critic.config.value_max) == (101, -1600.0, 1600.0)
    assert critic.outputs({"observation": torch.zeros(1, 1, 11)}, torch.zeros(1, 1, 1, 3)).shape == (2, 1, 1, 101)


def test_mvp_train_mfpo_refuses_a_head(tmp_path, capsys):
    assert main(["train", "--algo", "mfpo", "--env", "Hopper-v5", "--head", "flow", "--online-steps", "10",
                 "--out", str(tmp_path / "run")]) == 2
    assert "--head: MFPO's actor is fixed" in capsys.readouterr().err


@pytest.mark.slow
def test_soft_policy_improvement_steps_move_the_policy_towards_the_critics_best_action():
    settings = MfpoConfig(hidden_dim=64, depth=2, proposal_samples=8, actor_lr=3e-3)
    policy_config, normalization = task_description(make_env("Hopper-v5"), "mvp", settings.hidden_dim, settings.depth,
                                                    mvp_steps=2, equal_time_fraction=0.75)
    best_action = torch.tensor([0.6, -0.6, 0.3])
    obs = {OBSERVATION_KEY: torch.randn(64, 1, 11, generator=torch.Generator().manual_seed(0))}

    def distance_after_steps(sign: float, steps: int) -> float:
        """The two-step policy's mean distance to a* after `steps` improvement steps, from the same start."""
        torch.manual_seed(0)
        agent = MfpoAgent(policy_config, normalization, settings, torch.device("cpu"))
        agent.critics.critic = DistanceCritic(best_action, sign)
        generator = torch.Generator().manual_seed(1)
        for _ in range(steps):
            agent.update_policy(obs, 0.1, generator)
        with torch.no_grad():
            return (agent.sample(obs, 8, generator)[0] - best_action).norm(dim=-1).mean().item()

    start = distance_after_steps(-1.0, 0)
    assert distance_after_steps(-1.0, 60) < 0.5 * start < start < distance_after_steps(+1.0, 60)


SUPPORT = torch.linspace(0.0, 3.0, 4)  # the values 0, 1, 2, 3


def test_categorical_projection_keeps_atoms_on_the_support_and_splits_the_others_by_closeness():
    one_hot = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert torch.equal(categorical_projection(one_hot, SUPPORT[None], 0.0, 3.0), one_hot)
    # the atom at 1 moved to 1.25: a quarter of the way to 2, so three quarters stay at 1
    moved = categorical_projection(one_hot, (SUPPORT + 0.25)[None], 0.0, 3.0)
    assert torch.allclose(moved, torch.tensor([[0.0, 0.75, 0.25, 0.0]]))
    # atoms beyond the ends are clipped onto them
    assert torch.allclose(categorical_projection(one_hot, (SUPPORT + 10.0)[None], 0.0, 3.0),
                          torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    assert torch.allclose(categorical_projection(one_hot, (SUPPORT - 10.0)[None], 0.0, 3.0),
                          torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_categorical_projection_keeps_the_mass_and_the_mean_of_atoms_inside_the_support():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(5, 4, generator=generator), dim=-1)
    atoms = torch.rand(5, 4, generator=generator) * 3.0
    projected = categorical_projection(probs, atoms, 0.0, 3.0)
    assert torch.allclose(projected.sum(dim=-1), torch.ones(5))
    assert torch.allclose((projected * SUPPORT).sum(dim=-1), (probs * atoms).sum(dim=-1), atol=1e-6)


def test_categorical_soft_td_target_by_hand():
    batch = transitions(obs_dim=11, action_dim=3, rewards=[0.5, 1.0], bootstrap=[1.0, 0.0])
    support = torch.linspace(-4.0, 4.0, 9)
    # critic 1 puts its mass on 2, critic 2 on 1 (logits far apart enough to be one-hot in float32)
    next_logits = torch.full((2, 2, 9), -1e4)
    next_logits[0, :, 6], next_logits[1, :, 5] = 0.0, 0.0
    log_prob, alpha, gamma = torch.tensor([-1.0, -1.0]), 0.5, 0.5
    target_min = categorical_soft_td_target(batch, next_logits, support, log_prob, alpha, gamma, "min")
    # row 0 under critic 2: 0.5 + 0.5 (1 + 0.5) = 1.25, a quarter of the way from 1 to 2
    expected_row_0 = torch.zeros(9)
    expected_row_0[5], expected_row_0[6] = 0.75, 0.25
    # row 1 is terminal: all mass at its reward, 1.0, whichever critic
    expected_row_1 = torch.zeros(9)
    expected_row_1[5] = 1.0
    assert torch.allclose(target_min, torch.stack([expected_row_0, expected_row_1]), atol=1e-6)
    target_mean = categorical_soft_td_target(batch, next_logits, support, log_prob, alpha, gamma, "mean")
    # row 0 under critic 1 is 0.5 + 0.5 (2 + 0.5) = 1.75; the average of the two projections has mean 1.5
    assert (target_mean[0] * support).sum().item() == pytest.approx(1.5)
    assert torch.allclose(target_mean[1], expected_row_1, atol=1e-6)


def test_categorical_twin_critics_learn_a_target_distribution():
    policy_config, normalization = task_description(make_env("Hopper-v5"), "mvp", 32, 2, mvp_steps=2)
    torch.manual_seed(0)
    critics = TwinCritic(policy_config, normalization, 32, 2, 1e-2, torch.device("cpu"), atoms=21,
                         value_min=-10.0, value_max=10.0)
    batch = transitions(obs_dim=11, action_dim=3, rewards=[0.0] * 8, bootstrap=[1.0] * 8)
    batch.obs = {OBSERVATION_KEY: torch.randn(8, 1, 11, generator=torch.Generator().manual_seed(1))}
    target = categorical_projection(torch.ones(8, 21) / 21, torch.full((8, 21), 3.3), -10.0, 10.0)  # mass at 3 and 4
    for _ in range(300):
        critics.step(batch, target)
    chunks = batch.actions[:, None]
    assert torch.allclose(critics.critic.value(batch.obs, chunks), torch.full((8, 1), 3.3), atol=0.1)
