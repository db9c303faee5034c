"""`mvp train --algo fpmd|mfpo|sac --env Lift`: the robosuite task with dense reward as a Gymnasium task
(mvp_ros.rl.gym_online.RobosuiteTask), and a few online steps of each algorithm in it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mvp_ros.policy import Policy
from mvp_ros.rl.gym_online import LOG_JSON, OnlineRunConfig, RobosuiteTask, make_env, run_online


def test_lift_observes_low_dim_keys_and_rewards_densely_without_ending_at_success():
    env = make_env("Lift")
    assert isinstance(env, RobosuiteTask) and env.sim.env_args["env_kwargs"]["reward_shaping"]
    first, _ = env.reset(seed=5)
    assert first.shape == env.observation_space.shape == (3 + 4 + 2 + 10,)
    assert np.array_equal(env.reset(seed=5)[0], first)  # the seed places the cube
    env.action_space.seed(0)
    rewards = []
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        rewards.append(reward)
        assert not terminated and not truncated and obs.shape == first.shape
    # the shaped reward's reaching term, 1 - tanh(10 distance) scaled, is positive and moves with the gripper;
    # the sparse reward is 0 until the cube is lifted
    assert all(0 < reward < 1 for reward in rewards) and len(set(rewards)) == len(rewards)
    env.sim.unwrapped.timestep = env.sim.horizon - 1
    assert env.step(np.zeros(env.action_space.shape))[3]  # the horizon truncates
    env.close()


@pytest.mark.parametrize(("algo", "head"), [("sac", "mvp"), ("fpmd", "mvp"), ("mfpo", "mvp")])
def test_a_few_online_steps_in_lift(algo, head, tmp_path):
    out = run_online(OnlineRunConfig(algo=algo, head=head, env="Lift", online_steps=24, out=str(tmp_path), seed=0,
                                     batch_size=8, learning_starts=12, threads=1,
                                     agent={"hidden_dim": 32, "depth": 2}), progress=False)
    log = json.loads((out / LOG_JSON).read_text())
    assert log["env_steps"] == 24 and log["updates"] == 12
    assert all(np.isfinite(value) for value in log["last_metrics"].values())
    if algo != "sac":
        policy = Policy.load(out)
        action = policy.act({"observation": np.zeros(19)})
        assert np.asarray(action).shape[-1] == 7 and np.isfinite(action).all()
