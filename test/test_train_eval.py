"""`mvp train --eval-every N --eval-episodes K`: the EMA policy's success rate in the dataset's
robosuite task (real MuJoCo, `mvp eval` in a separate process), logged, plotted and kept as `best/`."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from mvp_ros.cli import main
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.policy import Policy

OBS_KEYS = "robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object"


def eval_rows(out):
    with (out / "train_log.csv").open() as stream:
        return [(int(row["step"]), int(row["eval_step"]), float(row["eval_success_rate"]))
                for row in csv.DictReader(stream) if row["eval_step"]]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    assert main(["demos", "--task", "lift", "--episodes", "1", "--out", str(path)]) == 0
    return path


@pytest.mark.slow
def test_eval_every_logs_success_keeps_the_best_checkpoint_and_resumes(demos, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"policy": {"hidden_dim": 32, "depth": 2}, "log_every": 5, "threads": 1,
                                      "eval_episodes": 2, "eval_max_steps": 8}))
    train = ["train", "--config", str(config), "--dataset", str(demos), "--out", str(out), "--obs-keys", OBS_KEYS,
             "--steps", "20", "--batch-size", "16", "--horizon", "4", "--device", "cpu", "--no-progress"]
    assert main([*train, "--eval-every", "10"]) == 0

    rows = eval_rows(out)
    assert sorted(evaluated for _, evaluated, _ in rows) == [10, 20]
    assert all(logged >= evaluated and 0.0 <= success <= 1.0 for logged, evaluated, success in rows)
    settings = json.loads((out / "config.json").read_text())["training"]["settings"]
    assert (settings["eval_every"], settings["eval_episodes"], settings["eval_max_steps"]) == (10, 2, 8)
    results = {step: json.loads((out / "eval" / f"step_{step:08d}.json").read_text()) for step in (10, 20)}
    assert [result["seeds"] for result in results.values()] == [[100000, 100001]] * 2  # the same episodes each time
    assert [result["settings"]["max_steps"] for result in results.values()] == [8, 8]
    assert not [path for path in (out / "eval").iterdir() if path.is_dir()]  # snapshots removed once evaluated

    best = json.loads((out / "best" / "config.json").read_text())["training"]
    top = max(success for _, _, success in rows)
    assert best["eval"]["success_rate"] == top
    assert best["step"] == best["eval"]["step"] == max(step for _, step, success in rows if success == top)
    assert best["eval"]["seeds"] == [100000, 100001]
    policy = Policy.load(out / "best", device="cpu")
    assert policy.act({key: np.zeros(policy.config.obs_shapes[key], np.float32) for key in policy.obs_keys}).shape == (4, 7)
    Policy.load(out, device="cpu")
    assert (out / "loss.png").stat().st_size > 1000

    assert main(["train", "--out", str(out), "--resume", "--steps", "30", "--eval-every", "10", "--no-progress"]) == 0
    assert sorted(evaluated for _, evaluated, _ in eval_rows(out)) == [10, 20, 30]
    best_after = json.loads((out / "best" / "config.json").read_text())["training"]
    success_30 = json.loads((out / "eval" / "step_00000030.json").read_text())["success_rate"]
    assert best_after["eval"]["step"] == (30 if success_30 >= top else best["step"])


@pytest.mark.slow
def test_mvp_rl_evaluates_its_policy_while_training(demos, tmp_path):
    out = tmp_path / "rl"
    assert main(["train", "--dataset", str(demos), "--out", str(out), "--obs-keys", OBS_KEYS, "--algo", "mvp-rl",
                 "--steps", "4", "--batch-size", "8", "--horizon", "4", "--threads", "1", "--device", "cpu",
                 "--eval-every", "2", "--eval-episodes", "1", "--eval-max-steps", "4", "--no-progress"]) == 0
    assert sorted(evaluated for _, evaluated, _ in eval_rows(out)) == [2, 4]
    best = json.loads((out / "best" / "config.json").read_text())["training"]
    assert best["algo"] == "mvp-rl" and best["eval"]["step"] in (2, 4) and best["eval"]["episodes"] == 1
    Policy.load(out / "best", device="cpu")


@pytest.fixture(scope="module")
def dataset_without_env(tmp_path_factory):
    episode = Episode(obs={"position": np.zeros((8, 3), np.float32)}, actions=np.ones((8, 2)))
    return write_robomimic(tmp_path_factory.mktemp("data") / "robot.hdf5", [episode], valid_fraction=0.0)


@pytest.mark.parametrize("flags, message", [
    (["--eval-every", "5"], "has no env_args (data.attrs['env_args']), so there is no simulated task to evaluate in"),
    (["--eval-every", "-1"], "eval_every: must be >= 0, got -1"),
    (["--eval-every", "5", "--eval-episodes", "0"], "eval_episodes: must be >= 1, got 0"),
    (["--eval-every", "5", "--eval-max-steps", "-3"], "eval_max_steps: must be >= 0, got -3"),
])
def test_bad_evaluation_settings_are_named(dataset_without_env, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset_without_env), "--out", str(out), "--obs-keys", "position",
                 "--steps", "2", "--batch-size", "4", "--no-progress", *flags]) == 2
    error = capsys.readouterr().err
    assert message in error
    if "env_args" in message:
        assert str(dataset_without_env) in error
    assert not (out / "config.json").exists()


def test_resuming_a_log_without_the_evaluation_columns_gives_it_them(dataset_without_env, tmp_path):
    out = tmp_path / "run"
    common = ["--obs-keys", "position", "--batch-size", "4", "--no-progress"]
    assert main(["train", "--dataset", str(dataset_without_env), "--out", str(out), "--steps", "2", *common]) == 0
    log = out / "train_log.csv"
    with log.open() as stream:
        rows = list(csv.DictReader(stream))
    with log.open("w", newline="") as stream:  # the log as runs wrote it before the evaluation columns
        writer = csv.DictWriter(stream, fieldnames=["step", "seconds", "loss", "loss_mf", "loss_ivc", "valid_loss"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", *common]) == 0
    with log.open() as stream:
        reader = csv.DictReader(stream)
        resumed = list(reader)
    assert reader.fieldnames[-2:] == ["eval_step", "eval_success_rate"]
    assert [row["step"] for row in resumed] == ["2", "3"] and resumed[0]["loss"] == rows[0]["loss"]
    assert all(None not in row for row in resumed)  # no row longer than the header
