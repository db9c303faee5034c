"""`mvp train --precision` (bf16 autocast, fp32 weights) and `--prefetch` (batches gathered by a
background thread: the same batches in the same order, `--resume` still exact), on small real HDF5
files with a camera."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml

from safetensors.torch import load_file

from mvp_ros.cli import main
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.policy import Policy
from mvp_ros.policy.config import ConfigError, PolicyConfig
from mvp_ros.policy.mvp import mean_flow_target
from mvp_ros.policy.networks import ChunkBackbone
from mvp_ros.training.workspace import load_train_config, resolve_precision

IMAGE_POLICY = {"hidden_dim": 64, "depth": 2, "image_feature_dim": 16, "image_encoder_widths": [8, 8, 8],
                "image_augmentation": "crop", "image_augmentation_pixels": 2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    episodes = [Episode(obs={"position": rng.uniform(-1, 1, (30, 3)).astype(np.float32),
                             "camera": rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)},
                        actions=rng.uniform(-1, 1, (30, 2))) for _ in range(6)]
    path = tmp_path_factory.mktemp("data") / "camera.hdf5"
    write_robomimic(path, episodes, env_args={"env_name": "Toy", "type": 1, "env_kwargs": {}})
    return path


def train(dataset, out, *extra, **settings):
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump({"policy": IMAGE_POLICY, "log_every": 5, "validate_every": 10, "threads": 1,
                                      **settings}))
    return main(["train", "--config", str(config), "--dataset", str(dataset), "--out", str(out), "--no-progress",
                 "--obs-keys", "position,camera", "--batch-size", "8", "--horizon", "2", "--seed", "4", *extra])


def losses(out, column="loss"):
    with (out / "train_log.csv").open() as stream:
        return [float(row[column]) for row in csv.DictReader(stream) if row[column]]


def same_weights(first, second) -> bool:
    first, second = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def training_record(out):
    return json.loads((out / "config.json").read_text())["training"]


def test_bf16_autocast_trains_on_the_cpu_and_its_checkpoint_loads(dataset, tmp_path):
    assert train(dataset, tmp_path / "fp32", "--steps", "20") == 0
    assert train(dataset, tmp_path / "bf16", "--steps", "20", "--precision", "bf16") == 0
    bf16, fp32 = losses(tmp_path / "bf16"), losses(tmp_path / "fp32")
    assert len(bf16) == 4 and all(math.isfinite(value) for value in bf16 + losses(tmp_path / "bf16", "valid_loss"))
    # the same batches and noise: close to the fp32 losses, but not equal, since the forward ran in bf16
    assert bf16 != fp32 and np.allclose(bf16, fp32, rtol=0.1)
    record = training_record(tmp_path / "bf16")
    assert (record["precision"], record["settings"]["precision"]) == ("bf16", "bf16")
    policy = Policy.load(tmp_path / "bf16", device="cpu")
    assert all(parameter.dtype == torch.float32 for parameter in policy.model.parameters())
    chunk = policy.act({"position": np.zeros(3, np.float32), "camera": np.zeros((16, 16, 3), np.uint8)})
    assert chunk.shape == (2, 2) and np.all(np.isfinite(chunk))


def test_fp32_is_the_default_on_the_cpu(dataset, tmp_path):
    assert train(dataset, tmp_path / "default", "--steps", "2") == 0
    record = training_record(tmp_path / "default")
    assert (record["precision"], record["settings"]["precision"]) == ("fp32", "auto")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (auto is bf16 only on CUDA)")
def test_auto_is_bf16_on_a_cuda_device_that_supports_it():
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == expected


def test_the_mvp_jvp_runs_under_bf16_autocast_and_its_target_stays_close_to_fp32():
    torch.manual_seed(0)
    config = PolicyConfig(head="mvp", action_dim=7, horizon=5, obs_shapes={"x": (10,)})
    net = ChunkBackbone(config.chunk_dim, 32, config)
    a_t, v, cond = torch.randn(64, 35), torch.randn(64, 35), torch.randn(64, 32)
    t = torch.rand(64) * 0.5
    r = t + 0.4

    def target(autocast: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return mean_flow_target(lambda a, tt, rr: net(a, cond, tt, rr), a_t, t, r, v)

    (u32, target32), (u16, target16) = target(False), target(True)
    assert u16.dtype == torch.bfloat16 and u32.dtype == torch.float32
    du_dt32, du_dt16 = (target32 - v) / 0.4, (target16.float() - v) / 0.4
    assert 0 < (du_dt16 - du_dt32).norm() / du_dt32.norm() < 0.05  # forward-mode tangents carried through the casts
    assert (target16.float() - target32).norm() < (u16.float() - u32).norm()  # below the prediction's own rounding


def test_prefetched_batches_train_exactly_as_batches_gathered_in_the_loop(dataset, tmp_path):
    assert train(dataset, tmp_path / "loop", "--steps", "30") == 0
    assert train(dataset, tmp_path / "ahead", "--steps", "30", "--prefetch", "3") == 0
    assert losses(tmp_path / "ahead") == losses(tmp_path / "loop")
    assert same_weights(tmp_path / "ahead", tmp_path / "loop")
    assert training_record(tmp_path / "ahead")["settings"]["prefetch"] == 3


def test_resume_with_prefetch_continues_as_one_uninterrupted_run(dataset, tmp_path):
    assert train(dataset, tmp_path / "whole", "--steps", "30", "--prefetch", "2") == 0
    assert train(dataset, tmp_path / "split", "--steps", "15", "--prefetch", "2") == 0
    # the thread had gathered batches past step 15 when the run stopped: the resumed run draws them again
    assert main(["train", "--out", str(tmp_path / "split"), "--resume", "--steps", "30", "--no-progress"]) == 0
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")
    assert same_weights(tmp_path / "split", tmp_path / "whole")


def test_bad_precision_and_prefetch_settings_are_named(dataset, tmp_path, capsys):
    base = {"dataset": "d.hdf5", "out": "o", "obs_keys": "x"}
    with pytest.raises(ConfigError, match="precision: unknown precision 'fp16'; choose one of auto, fp32, bf16"):
        load_train_config(None, {**base, "precision": "fp16"})
    with pytest.raises(ConfigError, match="prefetch: must be >= 0"):
        load_train_config(None, {**base, "prefetch": -1})
    with pytest.raises(ConfigError, match="algo mvp-rl trains in fp32"):
        load_train_config(None, {**base, "algo": "mvp-rl", "precision": "bf16"})
    with pytest.raises(SystemExit):
        main(["train", "--dataset", str(dataset), "--out", str(tmp_path / "o"), "--precision", "fp16"])
    assert "--precision: invalid choice: 'fp16'" in capsys.readouterr().err
