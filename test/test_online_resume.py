"""`--resume` of the online Gymnasium runs (mvp_ros.rl.gym_online): a run stopped at N environment steps
and resumed to 2N ends where one run to 2N ends, bit for bit (weights, optimizers, episodes, losses),
for every algorithm; its log continues; its checkpoint loads; and the settings a resumed run keeps
cannot be changed."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mvp_ros.cli import main
from mvp_ros.policy import ConfigError, Policy
from mvp_ros.rl.gym_online import LOG_JSON, STATE_WEIGHTS, OnlineRunConfig, resume_config, run_online

# FPMD's learning-rate decay is fixed to an update count, so it does not depend on the run's total
# (few candidates and samples: an evaluation episode of a still policy can last the task's 1,000 steps)
RUNS = {"sac": ("sac", "mvp", {}),
        "fpmd_m": ("fpmd", "mvp", {"actor_lr_decay_updates": 100, "num_candidates": 4}),
        "fpmd_r": ("fpmd", "flow", {"actor_lr_decay_updates": 100, "train_flow_steps": 2, "num_candidates": 4}),
        "mfpo": ("mfpo", "mvp", {"proposal_samples": 4, "eval_candidates": 2})}


def config(name: str, out, online_steps: int) -> OnlineRunConfig:
    algo, head, agent = RUNS[name]
    return OnlineRunConfig(algo=algo, head=head, env="Hopper-v5", online_steps=online_steps, out=str(out), seed=3,
                           batch_size=16, learning_starts=20, eval_every=45, eval_episodes=1, threads=1,
                           agent={"hidden_dim": 32, "depth": 2, **agent})


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_resumed_run_ends_where_one_run_to_the_same_total_ends(name, tmp_path):
    run_online(config(name, tmp_path / "once", 90), progress=False)
    run_online(config(name, tmp_path / "twice", 45), progress=False)
    first_half = json.loads((tmp_path / "twice" / LOG_JSON).read_text())
    run_online(resume_config(tmp_path / "twice", 90), progress=False, resume=True)

    once, twice = (json.loads((tmp_path / run / LOG_JSON).read_text()) for run in ("once", "twice"))
    assert twice["resumed_at"] == [45] and twice["env_steps"] == 90 and twice["updates"] == once["updates"] == 70
    assert twice["episodes"][:len(first_half["episodes"])] == first_half["episodes"]  # the log continues
    assert twice["episodes"] == once["episodes"] and twice["last_metrics"] == once["last_metrics"]
    assert [e["returns"] for e in twice["evaluations"]] == [e["returns"] for e in once["evaluations"]]
    states = [load_file(str(tmp_path / run / STATE_WEIGHTS)) for run in ("once", "twice")]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        if key not in ("loop.act_seconds", "loop.act_cpu_seconds"):  # timings
            assert torch.equal(states[0][key], states[1][key]), key
    if name != "sac":  # SAC's tanh-Gaussian has its own load path (test_sac.py)
        policy = Policy.load(tmp_path / "twice")
        assert policy.info.training["env_steps"] == 90
        assert torch.isfinite(torch.as_tensor(policy.act({"observation": torch.zeros(11).numpy()}))).all()


def test_fpmd_resumed_to_a_larger_total_stretches_its_learning_rate_decay_without_a_jump(tmp_path):
    algo, head, _ = RUNS["fpmd_m"]
    base = OnlineRunConfig(algo=algo, head=head, env="Hopper-v5", online_steps=60, out=str(tmp_path), seed=0,
                           batch_size=16, learning_starts=20, threads=1, agent={"hidden_dim": 32, "depth": 2})
    run_online(base, progress=False)
    lr_at_60 = json.loads((tmp_path / "online_state.json").read_text())["optimizer_param_groups"]["actor"][0]["lr"]
    assert lr_at_60 == pytest.approx(3e-5)  # 40 updates planned, 20 policy steps: the end of the decay
    run_online(resume_config(tmp_path, 100), progress=False, resume=True)
    lr_at_100 = json.loads((tmp_path / "online_state.json").read_text())["optimizer_param_groups"]["actor"][0]["lr"]
    assert lr_at_100 == pytest.approx(3e-5)  # from 3e-5 at step 60 to 3e-5 at the new end: no jump back up


def test_mvp_train_resume_continues_and_refuses_what_it_cannot(tmp_path, capsys):
    out = str(tmp_path / "sac")
    common = ["train", "--algo", "sac", "--env", "Hopper-v5", "--out", out, "--no-progress", "--threads", "1"]
    assert main([*common, "--online-steps", "30", "--batch-size", "16"]) == 0
    assert main([*common, "--online-steps", "50", "--resume"]) == 0
    log = json.loads((tmp_path / "sac" / LOG_JSON).read_text())
    assert log["resumed_at"] == [30] and log["env_steps"] == 50
    assert log["settings"]["learning_starts"] == 3 and log["settings"]["batch_size"] == 16  # the saved run's
    for extra, message in ((["--online-steps", "50"], "already took 50 environment steps"),
                           (["--online-steps", "80", "--seed", "1"], "seed was 0"),
                           (["--online-steps", "80", "--batch-size", "32"], "batch_size was 16")):
        assert main([*common, *extra, "--resume"]) == 2
        assert message in capsys.readouterr().err
    assert main([*common[:6], str(tmp_path / "none"), "--online-steps", "10", "--resume"]) == 2
    assert "holds no online run to continue" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="env was 'Hopper-v5'"):
        resume_config(out, 80, env="HalfCheetah-v5")
