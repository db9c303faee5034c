"""The SAC baseline (mvp_ros.rl.sac): its soft TD target, temperature loss and tanh-Gaussian log-likelihood
against closed forms, and a short run in Gymnasium's Hopper-v5 whose actor checkpoint loads."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mvp_ros.cli import main
from mvp_ros.policy import CheckpointError
from mvp_ros.rl.gym_online import (OBSERVATION_KEY, OnlineRunConfig, TransitionReplay, make_env, run_online,
                                   task_description)
from mvp_ros.rl.sac import ACTOR_WEIGHTS, TanhGaussianActor, load_sac_actor, soft_td_target, tanh_log_det, temperature_loss

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from transition_batches import transitions  # noqa: E402

SMALL_AGENT = {"hidden_dim": 64, "depth": 2}


def test_soft_td_target_by_hand():
    batch = transitions(rewards=[1.0, 2.0], bootstrap=[1.0, 0.0])
    target = soft_td_target(batch, next_q=torch.tensor([10.0, 20.0]), next_log_prob=torch.tensor([-1.0, 3.0]),
                            alpha=0.5, gamma=0.9)
    # y = r + gamma (1 - d) (Qbar - alpha log pi); the second transition is terminal
    assert torch.allclose(target, torch.tensor([1.0 + 0.9 * (10.0 + 0.5), 2.0]))


def test_temperature_loss_and_its_gradient_by_hand():
    log_alpha = torch.tensor(math.log(2.0), requires_grad=True)
    log_prob = torch.tensor([-1.0, -3.0])  # entropy estimate 2, above the target -2
    loss = temperature_loss(log_alpha, log_prob, target_entropy=-2.0)
    loss.backward()
    assert loss.item() == pytest.approx(-math.log(2.0) * ((-1.0 - 2.0) + (-3.0 - 2.0)) / 2)
    # dL/dlog_alpha = -(mean log pi + H_target) = 4 > 0: a gradient step lowers alpha
    assert log_alpha.grad.item() == pytest.approx(4.0)


def test_tanh_log_det_is_exact_and_finite_where_tanh_saturates():
    u = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5], dtype=torch.float64)
    assert torch.allclose(tanh_log_det(u), torch.log(1 - torch.tanh(u) ** 2))
    assert torch.isfinite(tanh_log_det(torch.tensor([40.0, -40.0]))).all()
    assert tanh_log_det(torch.tensor([40.0])).item() == pytest.approx(2 * (math.log(2) - 40.0))


def test_the_actor_log_likelihood_is_the_change_of_variables_of_its_gaussian():
    env = make_env("Hopper-v5")
    config, normalization = task_description(env, "mlp", **SMALL_AGENT)
    torch.manual_seed(0)
    actor = TanhGaussianActor(config, normalization, **SMALL_AGENT)
    obs = {OBSERVATION_KEY: torch.randn(16, 1, env.observation_space.shape[0])}
    actions, log_prob = actor(obs, torch.Generator().manual_seed(1))
    mu, raw_log_std = actor.net(actor.obs_encoder(obs)).chunk(2, dim=-1)
    std = torch.exp(-5.0 + 3.5 * (torch.tanh(raw_log_std) + 1))  # log std in [-5, 2]
    u = torch.atanh(actions.double()).float()
    expected = (torch.distributions.Normal(mu, std).log_prob(u) - torch.log(1 - actions.pow(2))).sum(dim=-1)
    assert torch.allclose(log_prob, expected, atol=1e-3)
    assert actions.abs().max() < 1.0


def test_the_transition_replay_keeps_the_last_transitions_with_their_bootstrap():
    replay = TransitionReplay(obs_dim=2, action_dim=1, capacity=3)
    for step in range(5):  # steps 0 and 1 are overwritten; step 3 ends at a time limit, step 4 terminates
        replay.add(np.full(2, step), np.full(1, -step), float(10 * step), np.full(2, step + 1), terminated=step == 4)
    assert replay.size == 3
    batch = replay.sample(64, np.random.default_rng(0), torch.device("cpu"))
    steps = batch.obs[OBSERVATION_KEY][:, 0, 0]
    assert set(steps.tolist()) == {2.0, 3.0, 4.0}
    assert torch.equal(batch.next_obs[OBSERVATION_KEY][:, 0, 0], steps + 1)
    assert torch.equal(batch.actions[:, 0, 0], -steps) and torch.equal(batch.rewards[:, 0], 10 * steps)
    assert torch.equal(batch.bootstrap, (steps != 4).float())
    # y = r + gamma * bootstrap * V(s'): no bootstrap past the terminal step only
    target = soft_td_target(batch, next_q=torch.ones(64), next_log_prob=torch.zeros(64), alpha=0.0, gamma=0.5)
    assert torch.equal(target, 10 * steps + 0.5 * (steps != 4).float())


@pytest.mark.slow
def test_a_short_sac_run_in_hopper_logs_returns_and_saves_an_actor_that_loads(tmp_path):
    out = run_online(OnlineRunConfig(algo="sac", env="Hopper-v5", online_steps=200, out=str(tmp_path / "sac"),
                                     batch_size=32, learning_starts=50, eval_every=100, eval_episodes=1,
                                     device="cpu", threads=1, agent=SMALL_AGENT), progress=False)
    log = json.loads((out / "online_log.json").read_text())
    assert log["updates"] == 150 and log["updates_per_second"] > 0 and 0 < log["act_ms_p50"] <= log["act_ms_p99"]
    assert set(log["last_metrics"]) >= {"loss_critic", "loss_actor", "loss_alpha", "alpha", "entropy"}
    assert all(math.isfinite(value) for value in log["last_metrics"].values())
    steps = [episode["env_steps"] for episode in log["episodes"]]
    assert steps == sorted(steps) and steps[-1] <= 200 and all(math.isfinite(e["return"]) for e in log["episodes"])
    assert sum(episode["length"] for episode in log["episodes"]) == steps[-1]
    assert [evaluation["env_steps"] for evaluation in log["evaluations"]] == [100, 200] and log["env_steps"] == 200
    assert all(math.isfinite(evaluation["mean_return"]) for evaluation in log["evaluations"])
    assert (out / "returns.png").read_bytes().startswith(b"\x89PNG")

    actor = load_sac_actor(out)
    env = make_env("Hopper-v5")
    obs, _ = env.reset(seed=0)
    action = actor.act({OBSERVATION_KEY: torch.as_tensor(obs, dtype=torch.float32)[None, None]}, deterministic=True)
    assert action.shape == (1, 3) and env.action_space.contains(action[0].numpy().astype(np.float32))

    weights = out / ACTOR_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="sac_actor.safetensors does not match the SHA-256"):
        load_sac_actor(out)


def test_mvp_train_sac_refuses_what_does_not_apply(tmp_path, capsys):
    for arguments, message in [
        (["--env", "Hopper-v5", "--head", "flow"], "--head: SAC's actor is fixed"),
        (["--env", "NoSuchTask-v0"], "--env 'NoSuchTask-v0': Gymnasium cannot make this task"),
        ([], "give it with --env"),
        (["--env", "Hopper-v5", "--dataset", "demos.hdf5"], "--dataset does not apply"),
        (["--env", "Hopper-v5", "--resume"], "holds no online run to continue"),
        (["--env", "Hopper-v5", "--lr", "1e-3", "--horizon", "4"], "--horizon, --lr: not settings of --algo sac"),
    ]:
        assert main(["train", "--algo", "sac", "--online-steps", "10", "--out", str(tmp_path / "run"),
                     *arguments]) == 2
        assert message in capsys.readouterr().err
