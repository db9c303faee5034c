"""One-step MVP keeps both modes of a bimodal conditional action distribution; MLP regression averages them.

The toy (helpers/toy.py): o ~ U[-1, 1], a = (+-0.7, 0.5 o) + 0.05 N(0, I), both modes equally likely.
"Near a mode" is within 0.15 of a centre, "between modes" farther than 0.35 from both.
Over seeds 0-5 one-step MVP gave near 0.86, between 0.07-0.08 and 0.40-0.46 of all samples on
each mode; the MLP head gave near 0.00 and between 1.00. MVP_TEST_SEED picks another seed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from mvp_ros.policy.normalizer import ActionScaler

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from toy import ToyTask, evaluate_toy, exact_flow, mode_metrics, toy_normalization, train_toy  # noqa: E402

SEED = int(os.environ.get("MVP_TEST_SEED", "0"))
TASK = ToyTask()
# Smaller than the 4x512 default so the test stays fast; a higher rate (with cosine decay) makes up for fewer steps.
TRAINING = dict(hidden_dim=128, depth=3, learning_rate=3e-3)


def trained_metrics(head: str, steps: int) -> dict[str, float]:
    metrics = evaluate_toy(train_toy(head, steps, SEED, TASK, **TRAINING), TASK, seed=SEED)
    print(f"{head} toy metrics, seed {SEED}: {metrics}")  # shown with pytest -s, to check the margins
    return metrics


@pytest.fixture(scope="module")
def mvp_metrics() -> dict[str, float]:
    return trained_metrics("mvp", 1500)


@pytest.fixture(scope="module")
def mlp_metrics() -> dict[str, float]:
    return trained_metrics("mlp", 300)


def test_metrics_recognize_the_data_itself():
    """Fresh data is near a mode, never between, balanced, and close in sliced Wasserstein distance."""
    generator = torch.Generator().manual_seed(SEED)
    obs, actions = TASK.sample_batch(2000, generator)
    metrics = mode_metrics(TASK, obs, actions, seed=SEED + 1)
    assert metrics["near_mode"] > 0.98
    assert metrics["between_modes"] == 0.0
    assert min(metrics["mode_0"], metrics["mode_1"]) > 0.45
    assert metrics["sliced_wasserstein"] < 0.04
    averaged = torch.stack([torch.zeros_like(obs), TASK.slope * obs], dim=-1)
    assert mode_metrics(TASK, obs, averaged)["between_modes"] == 1.0


@pytest.mark.parametrize("num_modes", [2, 4])
def test_exact_marginal_velocity_carries_noise_to_the_data(num_modes):
    """The closed-form velocity of the toy (used by the IVC ablation) really transports noise onto the modes."""
    task = ToyTask(num_modes=num_modes)
    normalization = toy_normalization(task)
    scaler = ActionScaler(normalization.action_min, normalization.action_max)
    center, half_range = scaler.center.double(), scaler.half_range.double()
    generator = torch.Generator().manual_seed(SEED)
    obs = task.sample_obs(2000, generator).double()
    noise = torch.randn(2000, 2, generator=generator, dtype=torch.float64)
    expected_start = ((task.mode_centres(obs) - center) / half_range).mean(dim=1) - noise
    torch.testing.assert_close(task.marginal_velocity(obs, noise, torch.zeros(2000, dtype=torch.float64), center,
                                                      half_range), expected_start)
    actions = exact_flow(task, obs, noise, center, half_range) * half_range + center
    metrics = mode_metrics(task, obs, actions, seed=SEED + 1)
    assert metrics["near_mode"] > 0.97 and metrics["between_modes"] < 0.01, metrics
    assert metrics["balance"] > 0.9 / num_modes and metrics["sliced_wasserstein"] < 0.04, metrics


@pytest.mark.slow
def test_one_step_mvp_covers_every_mode(mvp_metrics):
    assert mvp_metrics["near_mode"] > 0.6, mvp_metrics
    assert mvp_metrics["mode_0"] >= 0.3 and mvp_metrics["mode_1"] >= 0.3, mvp_metrics


@pytest.mark.slow
def test_one_step_mvp_puts_few_samples_between_modes(mvp_metrics):
    assert mvp_metrics["between_modes"] < 0.2, mvp_metrics


@pytest.mark.slow
def test_mlp_regression_averages_the_modes(mlp_metrics):
    assert mlp_metrics["between_modes"] > 0.9, mlp_metrics
    assert mlp_metrics["near_mode"] < 0.05, mlp_metrics


@pytest.mark.slow
def test_mvp_is_closer_to_the_data_than_mlp(mvp_metrics, mlp_metrics):
    assert mvp_metrics["sliced_wasserstein"] < 0.5 * mlp_metrics["sliced_wasserstein"], (mvp_metrics, mlp_metrics)
