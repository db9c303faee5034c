"""Filter keys: `mvp train --filter-key/--valid-filter-key` (or `filter_key`/`valid_filter_key` in the
YAML config) pick the demos of a mask, such as Robomimic's multi-human `better`/`okay`/`worse` or
`20_percent`, and the checkpoint records them."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml

from mvp_ros.cli import main
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.policy.checkpoint import read_checkpoint_info

MASKS = {"better": [0, 1], "okay": [2, 3], "worse": [4, 5], "20_percent": [0, 3]}


@pytest.fixture
def multi_human_file(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [Episode(obs={"state": rng.normal(size=(6 + index, 3)).astype(np.float32)},
                        actions=rng.uniform(-1, 1, size=(6 + index, 2)).astype(np.float32)) for index in range(6)]
    path = write_robomimic(tmp_path / "mh.hdf5", episodes, valid_fraction=0.2)
    with h5py.File(path, "r+") as file:
        for key, demos in MASKS.items():
            file.create_dataset(f"mask/{key}", data=np.array([f"demo_{index}" for index in demos], dtype="S"))
    return path


def train(path, out, *flags):
    return main(["train", "--dataset", str(path), "--out", str(out), "--obs-keys", "state", "--steps", "2",
                 "--batch-size", "4", "--horizon", "2", "--device", "cpu", "--no-progress", *flags])


def test_filter_keys_choose_the_demos_and_the_checkpoint_records_them(multi_human_file, tmp_path):
    out = tmp_path / "better"
    assert train(multi_human_file, out, "--filter-key", "better", "--valid-filter-key", "okay") == 0
    training = read_checkpoint_info(out).training
    assert training["dataset_demos"] == len(MASKS["better"])
    assert (training["settings"]["filter_key"], training["settings"]["valid_filter_key"]) == ("better", "okay")


def test_filter_keys_from_the_yaml_config(multi_human_file, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"filter_key": "20_percent"}))
    out = tmp_path / "twenty"
    assert train(multi_human_file, out, "--config", str(config)) == 0
    training = read_checkpoint_info(out).training
    assert training["settings"]["filter_key"] == "20_percent" and training["dataset_demos"] == 2


def test_without_filter_keys_mask_train_and_mask_valid_are_used(multi_human_file, tmp_path):
    out = tmp_path / "default"
    assert train(multi_human_file, out) == 0
    with h5py.File(multi_human_file, "r") as file:
        assert read_checkpoint_info(out).training["dataset_demos"] == len(file["mask/train"])


@pytest.mark.parametrize("flag", ["--filter-key", "--valid-filter-key"])
def test_an_unknown_filter_key_names_the_file_and_the_masks_it_has(multi_human_file, tmp_path, capsys, flag):
    assert train(multi_human_file, tmp_path / "x", flag, "best") == 2
    error = capsys.readouterr().err
    available = "20_percent, better, okay, train, valid, worse"
    assert f"{multi_human_file}: filter key 'best' not in mask/ (available: {available})" in error
