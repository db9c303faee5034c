"""FPMD (mvp_ros.rl.fpmd): the mirror-descent weights, the running statistics of Q and the entropy estimate
against closed forms, the importance-weighted MVP and flow losses, and short FPMD-M and FPMD-R runs in
Gymnasium's Hopper-v5 whose checkpoints `Policy.load` runs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mvp_ros.cli import main
from mvp_ros.policy import Policy, PolicyConfig
from mvp_ros.policy.config import ConfigError
from mvp_ros.policy.baselines import flow_loss
from mvp_ros.policy.mvp import mvp_loss
from mvp_ros.policy.networks import ChunkBackbone
from mvp_ros.rl.fpmd import FpmdAgent, FpmdConfig, RunningMoments, mirror_descent_weights, noise_entropy
from mvp_ros.rl.gym_online import OBSERVATION_KEY, OnlineRunConfig, make_env, run_online, task_description

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from fixed_critics import DistanceCritic  # noqa: E402

SMALL_AGENT = {"hidden_dim": 64, "depth": 2, "num_candidates": 8, "train_flow_steps": 3}


def test_mirror_descent_weights_standardize_clip_exponentiate_and_normalize():
    q = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    weights = mirror_descent_weights(q, mean=2.0, std=1.0, alpha=0.5, clip=3.0)
    # z = clip((q - 2) / 1, -3, 3) = [-2, -1, 0, 1, 3]; w = exp(z / 0.5) / mean(exp(z / 0.5))
    unnormalized = [math.exp(z / 0.5) for z in (-2.0, -1.0, 0.0, 1.0, 3.0)]
    expected = torch.tensor([w / (sum(unnormalized) / 5) for w in unnormalized])
    assert torch.allclose(weights, expected, rtol=1e-5)
    assert weights.sum().item() == pytest.approx(5.0)
    # the clip bounds the largest ratio at exp(2 * 3 / alpha) however far Q is from the mean
    far = mirror_descent_weights(torch.tensor([-1e6, 1e6]), mean=0.0, std=1.0, alpha=1.0, clip=3.0)
    assert (far[1] / far[0]).item() == pytest.approx(math.exp(6.0), rel=1e-5)


def test_mirror_descent_weights_do_not_overflow_at_a_small_temperature():
    weights = mirror_descent_weights(torch.tensor([0.0, 1.0, 3.0]), mean=1.0, std=1.0, alpha=1e-3, clip=3.0)
    assert torch.isfinite(weights).all()
    assert torch.allclose(weights, torch.tensor([0.0, 0.0, 3.0]))


def test_running_moments_of_q_by_hand():
    moments = RunningMoments(rate=0.5)
    moments.update(torch.tensor([1.0, 3.0]))  # the first batch sets them: mean 2, mean square 5
    assert (moments.mean, moments.std) == (pytest.approx(2.0), pytest.approx(1.0))
    moments.update(torch.tensor([5.0, 5.0]))  # mean 2 + 0.5 (5 - 2) = 3.5, mean square 5 + 0.5 (25 - 5) = 15
    assert moments.mean == pytest.approx(3.5)
    assert moments.std == pytest.approx(math.sqrt(15.0 - 3.5 ** 2))


def test_noise_entropy_is_the_gaussians_closed_form():
    # N(0, 0.5^2 I) in 3 dimensions: 3 * 1/2 log(2 pi e 0.25)
    assert noise_entropy(3, 0.5) == pytest.approx(1.5 * math.log(2 * math.pi * math.e * 0.25), rel=1e-12)


def test_alpha_steps_move_the_noise_entropy_towards_the_target():
    """Alpha is the noise's scale: its fixed point is sigma* = exp(H_target / |A|) / sqrt(2 pi e),
    alpha* = sigma* / noise_scale; from above it falls, from below it rises."""
    env = make_env("Hopper-v5")
    settings = FpmdConfig(**SMALL_AGENT)
    policy_config, normalization = task_description(env, "mvp", settings.hidden_dim, settings.depth)
    sigma_star = math.exp(settings.target_entropy_per_dim) / math.sqrt(2 * math.pi * math.e)
    alpha_star = sigma_star / settings.noise_scale
    assert noise_entropy(3, settings.noise_scale * alpha_star) == pytest.approx(settings.target_entropy_per_dim * 3)
    for start, direction in ((10 * alpha_star, -1.0), (alpha_star / 10, +1.0)):
        agent = FpmdAgent(policy_config, normalization, FpmdConfig(**SMALL_AGENT, initial_alpha=start),
                          total_updates=10, device=torch.device("cpu"))
        agent.update_alpha()
        assert math.copysign(1.0, agent.alpha - start) == direction


@pytest.mark.parametrize("head", ["mvp", "flow"])
def test_the_weighted_losses_weigh_each_sample_and_equal_the_unweighted_ones_at_weight_one(head):
    config = PolicyConfig(head=head, action_dim=3, horizon=1, obs_shapes={"observation": (4,)}, hidden_dim=32, depth=2)
    torch.manual_seed(0)
    backbone = ChunkBackbone(config.chunk_dim, 4, config)
    cond, actions = torch.randn(8, 4), torch.rand(8, 3) * 2 - 1
    loss_fn = mvp_loss if head == "mvp" else flow_loss

    def loss(weights):
        return loss_fn(backbone, cond, actions, config, torch.Generator().manual_seed(1), weights)[0]

    unweighted = loss(None)
    assert loss(torch.ones(8)).item() == pytest.approx(unweighted.item(), rel=1e-6)
    assert loss(torch.full((8,), 2.0)).item() == pytest.approx(2 * unweighted.item(), rel=1e-6)
    # one sample's weight alone: the loss is its own error over the batch size, so the sum over
    # samples of the one-hot losses is the unweighted loss
    one_hot = sum(loss(torch.eye(8)[i]).item() for i in range(8))
    assert one_hot == pytest.approx(unweighted.item(), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["mvp", "flow"])
def test_a_short_fpmd_run_in_hopper_saves_a_policy_that_loads(head, tmp_path):
    out = run_online(OnlineRunConfig(algo="fpmd", env="Hopper-v5", online_steps=160, out=str(tmp_path / head),
                                     head=head, batch_size=16, learning_starts=40, device="cpu", threads=1,
                                     agent=SMALL_AGENT), progress=False)
    log = json.loads((out / "online_log.json").read_text())
    assert log["updates"] == 120 and log["agent"]["head"] == head
    metrics = log["last_metrics"]
    assert {"loss_critic", "actor_loss", "alpha", "entropy", "weight_max"} <= set(metrics)
    assert all(math.isfinite(value) for value in metrics.values())
    assert log["episodes"] and all(math.isfinite(episode["return"]) for episode in log["episodes"])

    policy = Policy.load(out, device="cpu")
    assert (policy.config.head, policy.config.horizon, policy.config.flow_steps) == (head, 1, 1)
    observation = {"observation": np.zeros(11, np.float32)}
    action = policy.act(observation)
    assert action.shape == (1, 3) and np.all(np.abs(action) <= 1.0)
    assert Policy.load(out, device="cpu", best_of=8).act(observation).shape == (1, 3)


@pytest.mark.slow
def test_mvp_train_fpmd_end_to_end(tmp_path, capsys):
    out = tmp_path / "fpmd"
    assert main(["train", "--algo", "fpmd", "--head", "mvp", "--env", "Hopper-v5", "--online-steps", "40",
                 "--batch-size", "8", "--seed", "3", "--device", "cpu", "--threads", "1", "--out", str(out),
                 "--no-progress"]) == 0
    assert f"saved checkpoint to {out}" in capsys.readouterr().out
    log = json.loads((out / "online_log.json").read_text())
    assert (log["settings"]["seed"], log["settings"]["learning_starts"], log["updates"]) == (3, 4, 36)
    assert Policy.load(out, device="cpu").info.training["env"] == "Hopper-v5"
    assert main(["train", "--algo", "fpmd", "--head", "diffusion", "--env", "Hopper-v5", "--online-steps", "10",
                 "--out", str(tmp_path / "other")]) == 2
    assert "FPMD trains an MVP head (FPMD-M) or a flow head (FPMD-R)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("head", ["mvp", "flow"])
def test_mirror_descent_steps_move_the_policy_towards_the_critics_best_action(head):
    env = make_env("Hopper-v5")
    settings = FpmdConfig(head=head, actor_lr=3e-3, final_actor_lr=3e-3, **SMALL_AGENT)
    policy_config, normalization = task_description(env, head, settings.hidden_dim, settings.depth)
    best_action = torch.tensor([0.6, -0.6, 0.3])
    obs = {OBSERVATION_KEY: torch.randn(64, 1, 11, generator=torch.Generator().manual_seed(0))}

    def distance_after_steps(sign: float, steps: int) -> float:
        """The policy's mean distance to a* after `steps` mirror-descent steps, from the same start."""
        torch.manual_seed(0)
        agent = FpmdAgent(policy_config, normalization, settings, total_updates=1000, device=torch.device("cpu"))
        agent.critics.critic = DistanceCritic(best_action, sign)
        generator = torch.Generator().manual_seed(1)
        for _ in range(steps):
            with torch.no_grad():
                actions = agent.explore(agent.best_of(obs, generator), generator)
            agent.update_policy(obs, actions, generator)
        with torch.no_grad():
            return (agent.sample(obs, 8, generator) - best_action).norm(dim=-1).mean().item()

    start = distance_after_steps(-1.0, 0)
    towards, away = distance_after_steps(-1.0, 60), distance_after_steps(+1.0, 60)
    assert towards < 0.95 * start < away


def test_bad_fpmd_settings_name_the_setting(tmp_path):
    def config(**changes):
        settings = {"algo": "fpmd", "env": "Hopper-v5", "online_steps": 10, "out": str(tmp_path / "run"), **changes}
        return OnlineRunConfig(**settings)

    with pytest.raises(ConfigError, match="agent: num_critics not settings of --algo fpmd"):
        run_online(config(agent={"num_critics": 3}), progress=False)
    with pytest.raises(ConfigError, match="num_candidates: must be at least 1"):
        run_online(config(agent={"num_candidates": 0}), progress=False)
    with pytest.raises(ConfigError, match="batch_size: must be at least 1"):
        config(batch_size=0)
    assert not (tmp_path / "run").exists()
