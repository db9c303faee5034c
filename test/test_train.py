"""`mvp train` end to end on small real HDF5 files: config merging, loss going down, checkpoint use."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from mvp_ros.cli import main
from mvp_ros.data.contract import Contract, load_contract
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.policy import Policy
from mvp_ros.policy.config import ConfigError
from mvp_ros.resources import package_file
from mvp_ros.training.workspace import load_train_config

SMALL_NET = {"hidden_dim": 64, "depth": 2}
TOY_CONTRACT = {  # what `mvp bag2hdf5` stores as the file attr `contract` of the files it writes
    "contract_version": 1, "robot": "toy", "control_rate_hz": 10,
    "observations": {"position": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/position", "size": 3}},
    "action": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/command", "names": ["a", "b"],
               "limits": {"lower": [0, 0], "upper": [20, 20]}},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Actions are a smooth function of the same step's observation, so every head can fit horizon 1."""
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(8):
        steps = 40
        position = rng.uniform(-1, 1, size=(steps, 3)).astype(np.float32)
        image = rng.integers(0, 256, size=(steps, 12, 12, 3), dtype=np.uint8)
        actions = np.stack([np.sin(2 * position[:, 0]), position[:, 1] * position[:, 2]], axis=-1) * 3 + 10
        episodes.append(Episode(obs={"position": position, "camera": image}, actions=actions))
    path = tmp_path_factory.mktemp("data") / "toy.hdf5"
    write_robomimic(path, episodes, env_args={"env_name": "Toy", "type": 1, "env_kwargs": {}})
    return path


def train_cli(dataset, out, *extra, config=None):
    config_path = out.parent / f"{out.name}.yaml"
    config_path.write_text(yaml.safe_dump({"policy": SMALL_NET, "log_every": 10, "threads": 1, **(config or {})}))
    return main(["train", "--config", str(config_path), "--dataset", str(dataset), "--out", str(out),
                 "--no-progress", *extra])


def read_log(out):
    with (out / "train_log.csv").open() as stream:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(stream)]


@pytest.mark.parametrize("head", ["mvp", "flow", "diffusion", "mlp"])
def test_training_lowers_the_loss_and_the_checkpoint_acts(dataset, tmp_path, head):
    out = tmp_path / head
    status = train_cli(dataset, out, "--head", head, "--obs-keys", "position", "--steps", "300",
                       "--batch-size", "64", "--horizon", "1", "--lr", "1e-3", "--seed", "1",
                       config={"log_every": 50})
    assert status == 0
    rows = read_log(out)
    assert [row["step"] for row in rows] == [50, 100, 150, 200, 250, 300]
    first, last = rows[0]["loss"], np.mean([row["loss"] for row in rows[-2:]])
    assert last < 0.8 * first, f"{head}: loss {first:.4f} -> {last:.4f}"

    document = json.loads((out / "config.json").read_text())
    assert document["policy"]["head"] == head and document["policy"]["hidden_dim"] == 64
    assert document["env_args"]["env_name"] == "Toy"
    assert document["training"]["settings"]["steps"] == 300
    assert rows[-1]["valid_loss"] > 0 and (out / "loss.png").stat().st_size > 1000

    policy = Policy.load(out, device="cpu")
    chunk = policy.act({"position": np.array([0.2, -0.3, 0.5], dtype=np.float32)})
    assert chunk.shape == (1, 2)
    assert np.all(chunk >= np.array(document["normalization"]["action_min"]) - 1e-5)
    assert np.all(chunk <= np.array(document["normalization"]["action_max"]) + 1e-5)


def test_image_observations_and_frame_stack_train(dataset, tmp_path):
    out = tmp_path / "images"
    assert train_cli(dataset, out, "--obs-keys", "position,camera", "--steps", "20", "--batch-size", "8",
                     "--frame-stack", "2", "--horizon", "2") == 0
    policy = Policy.load(out, device="cpu")
    assert policy.config.obs_shapes == {"position": (3,), "camera": (12, 12, 3)}
    chunk = policy.act({"position": np.zeros(3, np.float32), "camera": np.zeros((12, 12, 3), np.uint8)})
    assert chunk.shape == (2, 2) and np.all(np.isfinite(chunk))


def test_no_progress_silences_every_bar_including_the_datasets_loading(dataset, tmp_path, capsys):
    assert train_cli(dataset, tmp_path / "quiet", "--obs-keys", "position", "--steps", "5", "--batch-size", "8") == 0
    assert "loading toy.hdf5" not in capsys.readouterr().err
    config_path = tmp_path / "loud.yaml"
    config_path.write_text(yaml.safe_dump({"policy": SMALL_NET, "threads": 1}))
    assert main(["train", "--config", str(config_path), "--dataset", str(dataset), "--out", str(tmp_path / "loud"),
                 "--obs-keys", "position", "--steps", "5", "--batch-size", "8"]) == 0
    assert "loading toy.hdf5" in capsys.readouterr().err


def test_flags_override_the_yaml_config(tmp_path):
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump({"dataset": "a.hdf5", "out": "ckpt", "obs_keys": ["x", "y"],
                                           "steps": 7, "head": "flow", "policy": {"ivc_weight": 0.5}}))
    config = load_train_config(config_path, {"steps": 11, "head": None, "obs_keys": "z"})
    assert (config.steps, config.head, config.obs_keys, config.policy) == (11, "flow", ["z"], {"ivc_weight": 0.5})


def test_bad_settings_name_what_is_wrong(tmp_path, dataset, capsys):
    config_path = tmp_path / "typo.yaml"
    config_path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_train_config(config_path, {"dataset": "d", "out": "o", "obs_keys": "x"})
    with pytest.raises(ConfigError, match="obs_keys"):
        load_train_config(None, {"dataset": "d", "out": "o"})

    assert main(["train", "--dataset", str(dataset), "--out", str(tmp_path / "o"), "--obs-keys", "gripper",
                 "--steps", "1", "--no-progress"]) == 2
    assert "'gripper' not in" in capsys.readouterr().err
    assert main(["train", "--dataset", str(tmp_path / "missing.hdf5"), "--out", str(tmp_path / "o"),
                 "--obs-keys", "position", "--no-progress"]) == 2
    assert "missing.hdf5" in capsys.readouterr().err
    assert not (tmp_path / "o" / "config.json").exists()


def test_resume_continues_from_the_saved_step(dataset, tmp_path):
    out = tmp_path / "run"
    common = ["--obs-keys", "position", "--batch-size", "16", "--horizon", "2", "--seed", "3"]
    assert train_cli(dataset, out, *common, "--steps", "30", config={"checkpoint_every": 20}) == 0
    state = json.loads((out / "training_state.json").read_text())
    assert state["step"] == 30
    first_weights = (out / "model.safetensors").read_bytes()

    # A run stopped after step 30's checkpoint had logged step 40: that row goes, as step 40 runs again.
    with (out / "train_log.csv").open("a") as stream:
        stream.write("40,999.0,1.0,1.0,1.0,,,\n")
    config_file = tmp_path / "run_settings.yaml"
    config_file.write_text(yaml.safe_dump({"out": str(out), "steps": 40}))
    assert main(["train", "--config", str(config_file), "--resume", "--no-progress"]) == 0  # `out:` from the file
    assert json.loads((out / "training_state.json").read_text())["step"] == 40
    rows = read_log(out)
    assert [row["step"] for row in rows] == [10, 20, 30, 40]
    assert rows[2]["seconds"] <= rows[3]["seconds"] < 999  # the seconds of training so far, continued
    assert main(["train", "--out", str(out), "--resume", "--steps", "50", "--no-progress"]) == 0
    rows = read_log(out)
    assert [row["step"] for row in rows] == [10, 20, 30, 40, 50]
    assert json.loads((out / "training_state.json").read_text())["step"] == 50
    assert json.loads((out / "config.json").read_text())["training"]["step"] == 50
    assert (out / "model.safetensors").read_bytes() != first_weights


def test_resume_refuses_what_would_lose_work(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(dataset, out, "--obs-keys", "position", "--steps", "5", "--batch-size", "8") == 0
    assert train_cli(dataset, out, "--obs-keys", "position", "--steps", "5", "--batch-size", "8") == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--steps", "5", "--no-progress"]) == 2
    assert "already trained to step 5" in capsys.readouterr().err
    assert main(["train", "--resume", "--steps", "9", "--no-progress"]) == 2
    assert "--resume needs the directory of the run to continue" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--steps", "9", "--head", "flow", "--no-progress"]) == 2
    assert "head was 'mvp'" in capsys.readouterr().err
    (out / "training_state.safetensors").unlink()
    assert main(["train", "--out", str(out), "--resume", "--steps", "9", "--no-progress"]) == 2
    assert "training_state.safetensors is missing" in capsys.readouterr().err


def test_a_dataset_without_validation_demos_trains_without_validation(tmp_path):
    episode = Episode(obs={"position": np.zeros((6, 3), np.float32)}, actions=np.ones((6, 2)))
    path = write_robomimic(tmp_path / "one.hdf5", [episode], valid_fraction=0.0)
    out = tmp_path / "run"
    assert train_cli(path, out, "--obs-keys", "position", "--steps", "3", "--batch-size", "4") == 0
    assert "valid_loss" not in read_log(out)[-1]


def stored_contract(out):
    return json.loads((out / "config.json").read_text())["contract"]


def test_the_checkpoint_carries_the_contract_its_dataset_was_made_with(tmp_path, capsys):
    episode = Episode(obs={"position": np.zeros((6, 3), np.float32)}, actions=np.ones((6, 2)))
    path = write_robomimic(tmp_path / "converted.hdf5", [episode], valid_fraction=0.0, attrs={"contract": TOY_CONTRACT})
    assert train_cli(path, tmp_path / "run", "--obs-keys", "position", "--steps", "2", "--batch-size", "4") == 0
    assert stored_contract(tmp_path / "run") == Contract.from_dict(TOY_CONTRACT).to_dict()
    assert "records no contract" not in capsys.readouterr().err


def test_a_dataset_without_a_contract_gives_a_checkpoint_without_one(dataset, tmp_path, capsys):
    assert train_cli(dataset, tmp_path / "run", "--obs-keys", "position", "--steps", "2", "--batch-size", "4") == 0
    assert stored_contract(tmp_path / "run") is None
    assert (f"mvp train: warning: {dataset} records no contract (file attr 'contract'), so the checkpoint carries none:"
            " the policy node runs it only with the parameter allow_checkpoint_without_contract:=true"
            in capsys.readouterr().err)


def test_a_malformed_contract_in_the_dataset_is_named(tmp_path, capsys):
    episode = Episode(obs={"position": np.zeros((6, 3), np.float32)}, actions=np.ones((6, 2)))
    broken = TOY_CONTRACT | {"control_rate_hz": -10}
    path = write_robomimic(tmp_path / "broken.hdf5", [episode], valid_fraction=0.0, attrs={"contract": broken})
    assert train_cli(path, tmp_path / "run", "--obs-keys", "position", "--steps", "2", "--batch-size", "4") == 2
    error = capsys.readouterr().err
    assert f"{path} file attr 'contract': control_rate_hz: must be a positive number, got -10" in error


@pytest.mark.slow
def test_a_checkpoint_trained_on_mvp_demos_carries_the_simulated_pandas_contract(tmp_path):
    demos = tmp_path / "lift.hdf5"
    assert main(["demos", "--task", "lift", "--episodes", "1", "--out", str(demos)]) == 0
    assert train_cli(demos, tmp_path / "run", "--obs-keys", "robot0_eef_pos,object", "--steps", "2",
                     "--batch-size", "4") == 0
    panda = load_contract(package_file("config", "panda_sim_contract.yaml"))
    assert stored_contract(tmp_path / "run") == panda.to_dict()


def test_training_takes_a_thread_per_core_unless_told_and_gives_the_callers_count_back(dataset, tmp_path, monkeypatch):
    import os

    import torch

    def trained_threads(name, *extra):
        out = tmp_path / name
        main(["train", "--dataset", str(dataset), "--out", str(out), "--obs-keys", "position", "--steps", "2",
              "--batch-size", "4", "--no-progress", *extra])
        return json.loads((out / "config.json").read_text())["training"]["threads"]

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert trained_threads("cores") == os.cpu_count()
    assert trained_threads("flag", "--threads", "3") == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert trained_threads("environment") == 1
    assert torch.get_num_threads() == 1  # the suite's one thread, restored after every run
