"""`mvp train` on several processes: real torch.distributed (gloo) between 2 CPU processes, and
torchrun starting `mvp train` with its rendezvous flags on a tiny real HDF5 file."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing
from safetensors.torch import load_file, save_file

from mvp_ros.cli import main
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.policy import Policy
from mvp_ros.policy.config import ConfigError, PolicyConfig
from mvp_ros.policy.model import ChunkPolicyModel
from mvp_ros.policy.normalizer import Normalization
from mvp_ros.training import distributed
from mvp_ros.training.distributed import Ranks, ranks_from_environment

SHARD = 6  # samples per rank
OBS_SHAPES = {"position": (3,), "camera": (20, 20, 3)}
# head -> policy settings; mlp is deterministic, so its rank-averaged gradient is the gradient of the
# union batch itself; mvp draws noise and time pairs (and here random crops) per rank
HEADS = {"mlp": {}, "mvp": {"image_augmentation": "crop", "image_augmentation_pixels": 2}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def union_batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    rng = np.random.default_rng(7)
    obs = {"position": torch.from_numpy(rng.normal(size=(2 * SHARD, 1, 3)).astype(np.float32)),
           "camera": torch.from_numpy(rng.integers(0, 256, size=(2 * SHARD, 1, 20, 20, 3), dtype=np.uint8))}
    actions = torch.from_numpy(rng.uniform(-1, 1, size=(2 * SHARD, 2, 2)).astype(np.float32))
    return obs, actions


def shard(obs: dict[str, torch.Tensor], actions: torch.Tensor, rank: int) -> tuple[dict, torch.Tensor]:
    part = slice(rank * SHARD, (rank + 1) * SHARD)
    return {key: value[part] for key, value in obs.items()}, actions[part]


def build_model(head: str) -> ChunkPolicyModel:
    torch.manual_seed(0)
    config = PolicyConfig(head=head, action_dim=2, horizon=2, obs_shapes=OBS_SHAPES, hidden_dim=32, depth=2,
                          **HEADS[head])
    normalization = Normalization.from_data(np.array([[-1.0, -1.0], [1.0, 1.0]]), {"position": np.zeros((4, 3))})
    return ChunkPolicyModel(config, normalization)


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.grad.detach().clone() for name, parameter in model.named_parameters()}


def ddp_worker(rank: int, port: int, out: str) -> None:
    """One rank of 2: joins the gloo group as `mvp train` does and takes one DDP backward step per head."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ranks, device = distributed.join("cpu")
    try:
        assert ranks == Ranks(rank, 2, rank) and device.type == "cpu"
        obs, actions = shard(*union_batch(), rank)
        for head in HEADS:
            model = build_model(head)
            loss_function = distributed.loss_function(model, ranks, device)  # DDP reduces while it is alive
            loss, _ = loss_function(obs, actions, torch.Generator().manual_seed(rank))
            loss.backward()
            save_file(gradients(model), str(Path(out) / f"{head}_rank{rank}.safetensors"))
    finally:
        distributed.leave()


@pytest.mark.slow
def test_the_averaged_gradient_of_two_ddp_processes_is_the_single_process_gradient(tmp_path):
    torch.multiprocessing.spawn(ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    obs, actions = union_batch()
    for head in HEADS:
        model = build_model(head)
        if head == "mlp":
            loss, _ = model.loss(obs, actions)
        else:  # the same samples with the noise each rank drew: the mean of the two ranks' losses
            loss = sum(model.loss(*shard(obs, actions, rank), torch.Generator().manual_seed(rank))[0]
                       for rank in range(2)) / 2
        loss.backward()
        expected = gradients(model)
        for rank in range(2):
            averaged = load_file(str(tmp_path / f"{head}_rank{rank}.safetensors"))
            assert averaged.keys() == expected.keys()
            for name, gradient in expected.items():
                assert gradient.abs().sum() > 0, f"{head}: {name} has no gradient"
                torch.testing.assert_close(averaged[name], gradient, rtol=1e-4, atol=1e-6, msg=f"{head} {name}")


def test_torchrun_variables_are_read_and_bad_ones_named():
    assert ranks_from_environment({}) == Ranks(0, 1, 0)
    assert ranks_from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)
    with pytest.raises(ConfigError, match="RANK='x'"):
        ranks_from_environment({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="LOCAL_RANK=None"):
        ranks_from_environment({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(ConfigError, match="RANK=2, LOCAL_RANK=0 do not fit WORLD_SIZE=2"):
        ranks_from_environment({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(6):
        position = rng.uniform(-1, 1, size=(30, 3)).astype(np.float32)
        actions = np.stack([np.sin(2 * position[:, 0]), position[:, 1] * position[:, 2]], axis=-1)
        episodes.append(Episode(obs={"position": position}, actions=actions))
    return write_robomimic(tmp_path_factory.mktemp("data") / "toy.hdf5", episodes)


def test_mvp_rl_is_refused_under_torchrun(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--dataset", str(dataset), "--out", str(tmp_path / "rl"), "--obs-keys", "position",
                 "--algo", "mvp-rl", "--steps", "2", "--no-progress"]) == 2
    assert "algo mvp-rl trains in one process, but torchrun started 2 (WORLD_SIZE=2)" in capsys.readouterr().err
    assert not (tmp_path / "rl").exists()


def torchrun_train(*arguments: str) -> None:
    """`torchrun --nproc_per_node=2 --no-python mvp train ...` with the rendezvous flags of a multi-node run."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0", "--nproc_per_node=2",
               "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--no-python",
               str(Path(sys.executable).parent / "mvp"), "train", *arguments, "--no-progress"]
    # Its own process group, so that a run past the limit is stopped with its workers, which would
    # otherwise outlive the launcher and hold both cores for the tests after it.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.count("saved checkpoint to") == 1  # rank 0 alone reports (and writes)


def log_steps(out: Path) -> list[int]:
    with (out / "train_log.csv").open() as stream:
        return [int(row["step"]) for row in csv.DictReader(stream)]


@pytest.mark.slow
def test_torchrun_trains_on_two_processes_into_one_checkpoint_and_resumes(dataset, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text("policy: {hidden_dim: 32, depth: 2}\nlog_every: 5\ncheckpoint_every: 5\n")
    torchrun_train("--config", str(config), "--dataset", str(dataset), "--out", str(out), "--obs-keys", "position",
                   "--steps", "10", "--batch-size", "8", "--horizon", "2", "--seed", "4")
    assert log_steps(out) == [5, 10]
    state = json.loads((out / "training_state.json").read_text())
    assert (state["step"], state["world_size"]) == (10, 2)
    # each rank drew its own batches and noise (seeded with seed + rank), saved for --resume
    assert state["numpy_rng"] != state["numpy_rng.rank1"]
    random_states = load_file(str(out / "training_state.safetensors"))
    assert not torch.equal(random_states["generator_state"], random_states["generator_state.rank1"])
    document = json.loads((out / "config.json").read_text())
    assert document["training"]["world_size"] == 2 and document["training"]["step"] == 10
    first_weights = (out / "model.safetensors").read_bytes()
    chunk = Policy.load(out, device="cpu").act({"position": np.zeros(3, np.float32)})
    assert chunk.shape == (2, 2) and np.all(np.isfinite(chunk))

    torchrun_train("--out", str(out), "--resume", "--steps", "15")
    assert log_steps(out) == [5, 10, 15]
    assert json.loads((out / "training_state.json").read_text())["step"] == 15
    assert json.loads((out / "config.json").read_text())["training"]["step"] == 15
    assert (out / "model.safetensors").read_bytes() != first_weights
    Policy.load(out, device="cpu")
