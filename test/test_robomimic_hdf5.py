"""Robomimic-format HDF5: writer layout and validation, reader windows, and reader errors."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mvp_ros.data.robomimic import (
    DatasetError,
    Episode,
    RobomimicDataset,
    read_env_args,
    read_file_attrs,
    write_robomimic,
)

LENGTHS = (1, 4, 7, 12)
ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20, "robots": ["Panda"]}}


def make_episode(rng: np.random.Generator, length: int, *, with_extras: bool = True) -> Episode:
    obs = {
        "eef_pos": rng.normal(size=(length, 3)),
        "gripper": rng.normal(size=(length, 2)).astype(np.float32),
        "camera_image": rng.integers(0, 256, size=(length, 6, 5, 3), dtype=np.uint8),
    }
    extras = {}
    if with_extras:
        extras = dict(
            rewards=rng.normal(size=length),
            dones=(np.arange(length) == length - 1).astype(np.int64),
            states=rng.normal(size=(length, 9)),
            next_obs={key: value + 1 for key, value in obs.items()},
            attrs={"model_file": "<mujoco/>", "seed": int(length), "gains": [1.5, 2.0]},
        )
    return Episode(obs=obs, actions=rng.normal(size=(length, 7)), **extras)


@pytest.fixture
def episodes() -> list[Episode]:
    rng = np.random.default_rng(7)
    return [make_episode(rng, length) for length in LENGTHS]


@pytest.fixture
def dataset_path(tmp_path: Path, episodes: list[Episode]) -> Path:
    return write_robomimic(
        tmp_path / "demos.hdf5", iter(episodes), ENV_ARGS, valid_fraction=0.25, seed=3,
        attrs={"source_bags": ["a.mcap", "b.mcap"], "tool": "mvp_ros test", "rate_hz": 20.0},
    )


# --- writer ---------------------------------------------------------------------------------


def test_written_layout_round_trips_through_h5py(dataset_path: Path, episodes: list[Episode]):
    with h5py.File(dataset_path, "r") as file:
        data = file["data"]
        assert sorted(data.keys()) == [f"demo_{i}" for i in range(len(LENGTHS))]
        assert data.attrs["total"] == sum(LENGTHS)
        assert json.loads(data.attrs["env_args"]) == ENV_ARGS
        for index, episode in enumerate(episodes):
            demo = data[f"demo_{index}"]
            assert demo.attrs["num_samples"] == LENGTHS[index]
            assert demo.attrs["model_file"] == "<mujoco/>"
            assert json.loads(demo.attrs["gains"]) == [1.5, 2.0]
            for key, value in episode.obs.items():
                assert demo[f"obs/{key}"].dtype == value.dtype
                np.testing.assert_array_equal(demo[f"obs/{key}"][()], value)
                np.testing.assert_array_equal(demo[f"next_obs/{key}"][()], episode.next_obs[key])
            for name in ("actions", "rewards", "dones", "states"):
                np.testing.assert_array_equal(demo[name][()], getattr(episode, name))
            assert demo["obs/camera_image"].compression == "gzip"
            assert demo["obs/camera_image"].chunks == (1, 6, 5, 3)
            assert demo["obs/eef_pos"].compression is None
            assert demo["actions"].compression is None
        train = [name.decode() for name in file["mask/train"][()]]
        valid = [name.decode() for name in file["mask/valid"][()]]
        assert file["mask/train"].dtype.kind == "S"
        assert len(valid) == 1 and sorted(train + valid) == sorted(data.keys())
        assert json.loads(file.attrs["source_bags"]) == ["a.mcap", "b.mcap"]
        assert file.attrs["tool"] == "mvp_ros test"
    assert read_env_args(dataset_path) == ENV_ARGS
    assert read_file_attrs(dataset_path) == {
        "source_bags": ["a.mcap", "b.mcap"], "tool": "mvp_ros test", "rate_hz": 20.0,
    }


def test_defaults_and_split_determinism(tmp_path: Path):
    rng = np.random.default_rng(0)
    minimal = [make_episode(rng, length, with_extras=False) for length in (3, 5, 2, 4, 6, 3, 2, 5, 4, 3)]
    first = write_robomimic(tmp_path / "a.hdf5", minimal, compression=None, seed=11)
    second = write_robomimic(tmp_path / "b.hdf5", minimal, compression=None, seed=11)
    other_seed = write_robomimic(tmp_path / "c.hdf5", minimal, compression=None, seed=12, valid_fraction=0.3)
    with h5py.File(first, "r") as a, h5py.File(second, "r") as b, h5py.File(other_seed, "r") as c:
        demo = a["data/demo_0"]
        np.testing.assert_array_equal(demo["rewards"][()], np.zeros(3))
        np.testing.assert_array_equal(demo["dones"][()], [0, 0, 1])
        assert "states" not in demo and "next_obs" not in demo and "env_args" not in a["data"].attrs
        assert demo["obs/camera_image"].compression is None
        np.testing.assert_array_equal(a["mask/valid"][()], b["mask/valid"][()])
        assert len(a["mask/valid"]) == 1 and len(c["mask/valid"]) == 3
    assert read_env_args(first) is None


def test_writer_consumes_a_generator_and_replaces_atomically(tmp_path: Path):
    rng = np.random.default_rng(1)
    path = tmp_path / "out.hdf5"
    write_robomimic(path, (make_episode(rng, n) for n in (2, 3)))
    before = path.read_bytes()

    def interrupted():
        yield make_episode(rng, 4)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_robomimic(path, interrupted())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.hdf5"]
    with pytest.raises(DatasetError, match="no episodes"):
        write_robomimic(tmp_path / "empty.hdf5", iter([]))
    assert not (tmp_path / "empty.hdf5").exists()


def _broken(change) -> list[Episode]:
    rng = np.random.default_rng(2)
    good, bad = make_episode(rng, 5), make_episode(rng, 6)
    change(bad)
    return [good, bad]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e.obs.pop("gripper"), r"episode 1: obs keys .* differ"),
        (lambda e: e.obs.update(eef_pos=np.zeros((6, 4))), r"episode 1: obs/eef_pos is float64\[4\]"),
        (lambda e: e.obs.update(gripper=np.zeros((6, 2))), r"episode 1: obs/gripper is float64\[2\] .* float32"),
        (lambda e: e.obs.update(eef_pos=np.zeros((5, 3))), r"episode 1: obs/eef_pos has 5 steps but actions have 6"),
        (lambda e: setattr(e, "actions", np.zeros((6, 6))), r"episode 1: actions have shape \(6, 6\), expected \(T, 7\)"),
        (lambda e: e.actions.__setitem__((3, 2), np.nan), r"episode 1: actions contains NaN or inf \(first at step 3\)"),
        (lambda e: e.obs["eef_pos"].__setitem__((4, 0), np.inf), r"episode 1: obs/eef_pos contains NaN or inf"),
        (lambda e: e.next_obs["gripper"].__setitem__((0, 0), np.nan), r"episode 1: next_obs/gripper contains NaN"),
        (lambda e: setattr(e, "rewards", np.zeros(5)), r"episode 1: rewards has shape \(5,\), expected \(6,\)"),
        (lambda e: setattr(e, "states", None), r"episode 1: has no states, unlike the first episode"),
        (lambda e: setattr(e, "states", np.zeros((6, 8))), r"episode 1: states have 8 dims"),
        (lambda e: setattr(e, "next_obs", None), r"episode 1: has no next_obs"),
        (lambda e: setattr(e, "actions", e.actions.astype(np.int64)), r"episode 1: actions must be float"),
    ],
)
def test_writer_rejects_bad_episodes_naming_index_and_key(tmp_path: Path, change, message):
    with pytest.raises(DatasetError, match=message):
        write_robomimic(tmp_path / "bad.hdf5", _broken(change))
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_empty_episode(tmp_path: Path):
    empty = Episode(obs={"x": np.zeros((0, 2))}, actions=np.zeros((0, 3)))
    with pytest.raises(DatasetError, match="episode 0: has 0 steps"):
        write_robomimic(tmp_path / "bad.hdf5", [empty])


# --- reader -----------------------------------------------------------------------------------


def reference_window(episodes: list[Episode], demo: int, step: int, frames: int, horizon: int) -> dict:
    """The window spelled out step by step: clamp every index into the episode."""
    episode = episodes[demo]
    last = len(episode.actions) - 1
    obs_rows = [min(max(step - frames + 1 + j, 0), last) for j in range(frames)]
    action_rows = [min(step + j, last) for j in range(horizon)]
    return {
        "obs": {key: value[obs_rows] for key, value in episode.obs.items()},
        "actions": episode.actions[action_rows],
    }


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("frames, horizon", [(1, 1), (2, 5), (3, 4)])
def test_windows_match_reference(dataset_path, episodes, cache, frames, horizon):
    keys = ["eef_pos", "gripper", "camera_image"]
    dataset = RobomimicDataset(dataset_path, keys, action_horizon=horizon, frame_stack=frames, cache=cache)
    assert len(dataset) == sum(LENGTHS)
    assert dataset.demo_names == [f"demo_{i}" for i in range(len(LENGTHS))]
    assert dataset.action_dim == 7 and dataset.env_args == ENV_ARGS
    assert dataset.obs_shapes == {"eef_pos": (3,), "gripper": (2,), "camera_image": (6, 5, 3)}
    assert dataset.obs_dtypes == {"eef_pos": np.float64, "gripper": np.float32, "camera_image": np.uint8}
    index = 0
    for demo, length in enumerate(LENGTHS):
        for step in range(length):
            expected = reference_window(episodes, demo, step, frames, horizon)
            item = dataset[index]
            np.testing.assert_array_equal(item["actions"], expected["actions"])
            for key in keys:
                assert item["obs"][key].dtype == episodes[0].obs[key].dtype
                np.testing.assert_array_equal(item["obs"][key], expected["obs"][key])
            index += 1


def test_padding_at_both_episode_ends(dataset_path, episodes):
    dataset = RobomimicDataset(dataset_path, ["eef_pos"], action_horizon=5, frame_stack=3)
    start_of_demo_2 = LENGTHS[0] + LENGTHS[1]
    first = dataset[start_of_demo_2]["obs"]["eef_pos"]
    assert (first == episodes[2].obs["eef_pos"][0]).all()
    last_window = dataset[start_of_demo_2 + LENGTHS[2] - 1]
    assert (last_window["actions"] == episodes[2].actions[-1]).all()
    single_step_demo = dataset[0]
    assert (single_step_demo["actions"] == episodes[0].actions[0]).all()
    assert (single_step_demo["obs"]["eef_pos"] == episodes[0].obs["eef_pos"][0]).all()


@pytest.mark.parametrize("cache", [True, False])
def test_get_batch_equals_stacked_items(dataset_path, cache):
    dataset = RobomimicDataset(dataset_path, ["gripper", "camera_image"], action_horizon=5, frame_stack=2, cache=cache)
    indices = np.random.default_rng(0).integers(0, len(dataset), size=33)
    indices[:2] = [-1, 0]
    batch = dataset.get_batch(indices)
    items = [dataset[int(i)] for i in indices]
    np.testing.assert_array_equal(batch["actions"], np.stack([item["actions"] for item in items]))
    for key in ("gripper", "camera_image"):
        assert batch["obs"][key].shape == (33, 2, *dataset.obs_shapes[key])
        np.testing.assert_array_equal(batch["obs"][key], np.stack([item["obs"][key] for item in items]))
    np.testing.assert_array_equal(dataset[-1]["actions"], dataset[len(dataset) - 1]["actions"])
    with pytest.raises(IndexError):
        dataset.get_batch(np.array([len(dataset)]))
    assert len(list(iter(dataset))) == len(dataset)  # iteration stops at IndexError


def test_cached_and_lazy_agree_and_filter_keys(dataset_path, episodes):
    with h5py.File(dataset_path, "r") as file:
        valid = [name.decode() for name in file["mask/valid"][()]]
    for filter_key in (None, "train", "valid"):
        cached = RobomimicDataset(dataset_path, ["eef_pos", "camera_image"], action_horizon=3, filter_key=filter_key)
        lazy = RobomimicDataset(dataset_path, ["eef_pos", "camera_image"], action_horizon=3,
                                filter_key=filter_key, cache=False)
        assert cached.demo_names == lazy.demo_names
        assert (cached.demo_names == valid) == (filter_key == "valid")
        chosen = [episodes[int(name.split("_")[1])] for name in cached.demo_names]
        np.testing.assert_array_equal(cached.all_actions(), np.concatenate([e.actions for e in chosen]))
        np.testing.assert_array_equal(lazy.all_actions(), cached.all_actions())
        np.testing.assert_array_equal(lazy.all_obs("camera_image"), cached.all_obs("camera_image"))
        everything = np.arange(len(cached))
        a, b = cached.get_batch(everything), lazy.get_batch(everything)
        np.testing.assert_array_equal(a["actions"], b["actions"])
        np.testing.assert_array_equal(a["obs"]["camera_image"], b["obs"]["camera_image"])
        lazy.close()
    assert not cached.all_actions().flags.writeable
    with pytest.raises(DatasetError, match="'gripper' was not loaded"):
        cached.all_obs("gripper")


def test_lazy_dataset_in_dataloader_workers(dataset_path):
    dataset = RobomimicDataset(dataset_path, ["eef_pos"], action_horizon=2, cache=False)
    dataset[0]  # opens the file in this process; the worker must open its own
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=1)
    actions = torch.cat([batch["actions"] for batch in loader]).numpy()
    np.testing.assert_array_equal(actions, dataset.get_batch(np.arange(len(dataset)))["actions"])


# --- reader errors ----------------------------------------------------------------------------


def _write_raw(path: Path, build) -> Path:
    with h5py.File(path, "w") as file:
        build(file)
    return path


def _demo(file: h5py.File, name: str, length: int, obs_length: int | None = None) -> h5py.Group:
    demo = file.create_group(f"data/{name}")
    demo.attrs["num_samples"] = length
    demo["actions"] = np.zeros((length, 2))
    demo["obs/x"] = np.zeros((length if obs_length is None else obs_length, 3))
    return demo


def test_reader_errors_name_the_problem(tmp_path: Path, dataset_path: Path):
    with pytest.raises(DatasetError, match="no such dataset file"):
        RobomimicDataset(tmp_path / "missing.hdf5", ["x"])
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(DatasetError, match="notes.hdf5: not a readable HDF5 file"):
        RobomimicDataset(text, ["x"])
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(dataset_path.read_bytes()[: dataset_path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated.hdf5"):
        RobomimicDataset(truncated, ["eef_pos", "camera_image"])
    no_data = _write_raw(tmp_path / "no_data.hdf5", lambda f: f.create_group("other"))
    with pytest.raises(DatasetError, match="no 'data' group"):
        RobomimicDataset(no_data, ["x"])
    with pytest.raises(DatasetError, match="no 'data' group"):
        read_env_args(no_data)
    with pytest.raises(DatasetError,
                       match=r"obs key 'wrist' not in data/demo_0/obs \(available: camera_image, eef_pos, gripper\)"):
        RobomimicDataset(dataset_path, ["eef_pos", "wrist"])
    with pytest.raises(DatasetError, match=r"filter key 'test' not in mask/ \(available: train, valid\)"):
        RobomimicDataset(dataset_path, ["eef_pos"], filter_key="test")
    with pytest.raises(ValueError, match="frame_stack and action_horizon must be >= 1"):
        RobomimicDataset(dataset_path, ["eef_pos"], frame_stack=0)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda f: f.create_group("data"), r"no demos in data/"),
        (lambda f: (_demo(f, "demo_0", 3), f.create_dataset("mask/valid", data=np.array([], dtype="S8"))),
         r"no demos in mask/valid"),
        (lambda f: (_demo(f, "demo_0", 3), f.create_dataset("mask/valid", data=np.array([b"demo_9"]))),
         r"mask/valid lists demos not in data/: demo_9"),
        (lambda f: _demo(f, "demo_0", 0), r"data/demo_0 has 0 steps"),
        (lambda f: (_demo(f, "demo_0", 3), _demo(f, "demo_1", 4, obs_length=3)),
         r"data/demo_1/obs/x has 3 steps but num_samples is 4"),
        (lambda f: _demo(f, "demo_0", 3).attrs.__delitem__("num_samples"), r"data/demo_0 has no num_samples"),
        (lambda f: (_demo(f, "demo_0", 3), _demo(f, "demo_1", 2).__delitem__("actions")),
         r"data/demo_1/actions is missing"),
        (lambda f: (_demo(f, "demo_0", 3), f.create_dataset("data/demo_1/actions", data=np.zeros((2, 5))),
                    f["data/demo_1"].attrs.__setitem__("num_samples", 2)),
         r"data/demo_1/actions has shape \(2, 5\), expected \(2, 2\)"),
    ],
)
def test_reader_rejects_malformed_layouts(tmp_path: Path, build, message):
    path = _write_raw(tmp_path / "bad.hdf5", build)
    filter_key = "valid" if "mask/valid" in message or "lists demos" in message else None
    with pytest.raises(DatasetError, match=message):
        RobomimicDataset(path, ["x"], filter_key=filter_key)
