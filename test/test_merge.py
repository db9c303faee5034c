"""`mvp merge`: two real Robomimic-format files in, one out, every array and attr kept, masks made
anew or renumbered; inputs of different simulations or contracts refused with a clear error."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mvp_ros.data.merge import merge
from mvp_ros.data.robomimic import DatasetError, Episode, RobomimicDataset, read_file_attrs, write_robomimic

ENV_ARGS = {"env_name": "PickPlaceCan", "type": 1, "env_kwargs": {"control_freq": 20}}
CONTRACT = {"observations": {"robot0_eef_pos": {"topic": "eef"}}}


def episode(rng: np.random.Generator, length: int, seed: int) -> Episode:
    obs = {"robot0_eef_pos": rng.normal(size=(length, 3)),
           "agentview_image": rng.integers(0, 256, size=(length, 8, 8, 3), dtype=np.uint8)}
    return Episode(obs=obs, actions=rng.normal(size=(length, 7)), rewards=rng.normal(size=length),
                   dones=(np.arange(length) == length - 1).astype(np.int64), states=rng.normal(size=(length, 5)),
                   next_obs={key: value + 1 for key, value in obs.items()}, attrs={"seed": seed})


def write(path: Path, lengths: list[int], seed: int, *, env_args=ENV_ARGS, contract=CONTRACT, named_masks=None) -> Path:
    rng = np.random.default_rng(seed)
    episodes = [episode(rng, length, seed * 100 + index) for index, length in enumerate(lengths)]
    return write_robomimic(path, iter(episodes), env_args, seed=seed, percent_masks=(50,), named_masks=named_masks,
                           attrs={"task": "can", "seed": seed, "contract": contract})


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    return [write(tmp_path / "a.hdf5", [3, 5], 1, named_masks={"better": [1]}),
            write(tmp_path / "b.hdf5", [4, 2, 6], 2, named_masks={"better": [0, 2], "worse": [1]})]


def test_merged_file_holds_every_demo_of_every_input_in_order(tmp_path: Path, inputs: list[Path]):
    out = merge(inputs, tmp_path / "merged.hdf5", valid_fraction=0.2, seed=5)
    expected = []
    for path in inputs:
        with h5py.File(path) as file:
            expected += [(path.name, name) for name in sorted(file["data"])]
    with h5py.File(out) as merged:
        assert sorted(merged["data"], key=lambda name: int(name.split("_")[1])) == [f"demo_{i}" for i in range(5)]
        assert merged["data"].attrs["total"] == 3 + 5 + 4 + 2 + 6
        for index, (source, name) in enumerate(expected):
            demo = merged[f"data/demo_{index}"]
            assert (demo.attrs["source_file"], demo.attrs["source_demo"]) == (source, name)
            with h5py.File(tmp_path / source) as file:
                original = file[f"data/{name}"]
                assert demo.attrs["seed"] == original.attrs["seed"]
                assert demo.attrs["num_samples"] == original.attrs["num_samples"]
                for key in ("actions", "rewards", "dones", "states", "obs/robot0_eef_pos", "obs/agentview_image",
                            "next_obs/agentview_image"):
                    np.testing.assert_array_equal(demo[key][()], original[key][()])
        masks = {name: sorted(value.decode() for value in merged[f"mask/{name}"][()]) for name in merged["mask"]}
    assert set(masks) == {"train", "valid", "better", "worse"}
    assert masks["better"] == ["demo_1", "demo_2", "demo_4"]
    assert masks["worse"] == ["demo_3"]
    assert len(masks["valid"]) == 1 and sorted(masks["train"] + masks["valid"]) == [f"demo_{i}" for i in range(5)]
    attrs = read_file_attrs(out)
    assert attrs["task"] == "can" and attrs["contract"] == CONTRACT and attrs["source"] == "mvp merge"
    assert attrs["seed"] == 5 and attrs["inputs"] == [str(path) for path in inputs]
    train = RobomimicDataset(out, filter_key="train", obs_keys=["robot0_eef_pos", "agentview_image"])
    assert len(train) > 0


@pytest.mark.parametrize("change, message", [
    ({"env_args": {**ENV_ARGS, "env_name": "Lift"}}, "env_args differ"),
    ({"contract": {"observations": {}}}, "observation contract differs"),
])
def test_inputs_of_another_simulation_or_contract_are_refused(tmp_path: Path, inputs, change, message):
    other = write(tmp_path / "other.hdf5", [3], 3, **change)
    with pytest.raises(DatasetError, match=message):
        merge([inputs[0], other], tmp_path / "merged.hdf5")
    assert not (tmp_path / "merged.hdf5").exists()


def test_the_command_merges_and_reports_bad_input(tmp_path: Path, inputs: list[Path]):
    mvp = [sys.executable, "-m", "mvp_ros.cli", "merge"]
    done = subprocess.run([*mvp, *map(str, inputs), "--out", str(tmp_path / "m.hdf5")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "5 demos, 20 steps from 2 files" in done.stdout
    refused = subprocess.run([*mvp, str(inputs[0]), "--out", str(tmp_path / "one.hdf5")], capture_output=True, text=True)
    assert refused.returncode == 2 and "at least two input files" in refused.stderr
    same = subprocess.run([*mvp, *map(str, inputs), "--out", str(inputs[1])], capture_output=True, text=True)
    assert same.returncode == 2 and "is one of the inputs" in same.stderr
    missing = subprocess.run([*mvp, str(inputs[0]), str(tmp_path / "none.hdf5"), "--out", str(tmp_path / "x.hdf5")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no such dataset file" in missing.stderr
