"""`mvp demos --quality mixed`: Robomimic-style mixed-quality data from operators of three skill
levels, on real robosuite/MuJoCo, real HDF5 files and a real `mvp train` run."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before robosuite/mujoco are imported

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from mvp_ros.cli import main  # noqa: E402
from mvp_ros.data.robomimic import Episode, RobomimicDataset, read_file_attrs, write_robomimic  # noqa: E402
from mvp_ros.policy.checkpoint import read_checkpoint_info  # noqa: E402
from mvp_ros.sim.envs import env_args_for, make_env  # noqa: E402
from mvp_ros.sim.experts import OPERATORS, assign_operators, episode_seed, run_expert  # noqa: E402
from mvp_ros.sim.write_demos import LOW_DIM_KEYS  # noqa: E402
from test_demos import demos_of, run_demos  # noqa: E402

EPISODES = 6
SEED = 0  # attempt 1 of seed 0 is by the worse operator and runs out of time (200 steps) without lifting the cube


@pytest.fixture(scope="module")
def mixed_lift(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed") / "lift_mixed.hdf5"
    summary = run_demos("--task", "lift", "--episodes", str(EPISODES), "--out", str(path), "--seed", str(SEED),
                        "--quality", "mixed")
    return path, summary


def mask(file: h5py.File, name: str) -> set[str]:
    return {demo.decode() for demo in file["mask"][name][:]}


def test_operators_are_assigned_from_the_seed_in_equal_numbers():
    assert assign_operators(9, 5) == assign_operators(9, 5)
    assert assign_operators(30, 5) != assign_operators(30, 6)
    for episodes in (7, 30):
        counts = [assign_operators(episodes, 5).count(level) for level in OPERATORS]
        assert max(counts) - min(counts) <= 1 and sum(counts) == episodes


@pytest.mark.slow
def test_a_mixed_file_holds_every_episode_with_a_mask_per_operator(mixed_lift):
    path, summary = mixed_lift
    assert f"lift: {EPISODES} attempts," in summary and "s per episode" in summary
    assert read_file_attrs(path)["quality"] == "mixed"
    with h5py.File(path, "r") as file:
        demos = demos_of(file)
        assert len(demos) == EPISODES
        by_level = {level: mask(file, level) for level in OPERATORS}
        assert set().union(*by_level.values()) == {f"demo_{index}" for index in range(EPISODES)}
        assert all(len(names) == EPISODES // 3 for names in by_level.values())
        for level, names in by_level.items():
            assert all(file["data"][name].attrs["operator"] == level for name in names)
        assert mask(file, "train") | mask(file, "valid") == set().union(*by_level.values())
        assert {"20_percent", "50_percent"} <= set(file["mask"])


@pytest.mark.slow
def test_failed_episodes_are_kept_with_sparse_rewards(mixed_lift):
    with h5py.File(mixed_lift[0], "r") as file:
        demos = demos_of(file)
        failed = [demo for demo in demos if not demo["rewards"][:].any()]
        succeeded = [demo for demo in demos if demo["rewards"][:].any()]
        assert failed and succeeded
        for demo in failed:  # ran to the horizon, reward 0 throughout, done only at the end
            assert demo.attrs["num_samples"] == 200 and demo.attrs["operator"] != "better"
            assert demo["dones"][-1] == 1 and not demo["dones"][:-1].any()
        for demo in succeeded:
            rewards = demo["rewards"][:]
            assert rewards[-1] == 1.0 and not rewards[:-1].any()


@pytest.mark.slow
def test_the_worse_operator_takes_longer_or_fails_where_the_better_one_succeeds():
    """Same seeds, so the same cube and the same plan: only the operator differs."""
    env = make_env(env_args_for("lift", images=False))
    try:
        pairs = [[run_expert(env, "lift", episode_seed(SEED, attempt), LOW_DIM_KEYS, level)
                  for level in ("better", "worse")] for attempt in range(3)]
    finally:
        env.close()
    for better, worse in pairs:
        assert better.success and better.strategy == worse.strategy
        assert len(worse.episode.actions) > 1.5 * len(better.episode.actions)


@pytest.mark.slow
def test_mvp_train_reads_one_operators_episodes(mixed_lift, tmp_path):
    path = mixed_lift[0]
    better = RobomimicDataset(path, filter_key="better", obs_keys=("robot0_eef_pos", "object"), action_horizon=2)
    with h5py.File(path, "r") as file:
        assert set(better.demo_names) == mask(file, "better")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"policy": {"hidden_dim": 32, "depth": 2}, "log_every": 5, "threads": 1}))
    out = tmp_path / "better"
    assert main(["train", "--config", str(config), "--dataset", str(path), "--out", str(out), "--no-progress",
                 "--obs-keys", "robot0_eef_pos,object", "--steps", "5", "--batch-size", "8", "--horizon", "2",
                 "--filter-key", "better"]) == 0
    training = read_checkpoint_info(out).training
    assert training["settings"]["filter_key"] == "better" and training["dataset_demos"] == EPISODES // 3


def test_operator_masks_must_name_written_episodes(tmp_path):
    episodes = [Episode(obs={"position": np.zeros((3, 2))}, actions=np.zeros((3, 1))) for _ in range(2)]
    with pytest.raises(ValueError, match="mask 'worse' names episodes outside 0..1"):
        write_robomimic(tmp_path / "x.hdf5", episodes, named_masks={"worse": [2]})
    with pytest.raises(ValueError, match="mask 'train' is already written"):
        write_robomimic(tmp_path / "x.hdf5", episodes, named_masks={"train": [0]})
    assert not list(tmp_path.iterdir())


def test_max_attempts_is_refused_with_mixed_quality(tmp_path):
    with pytest.raises(SystemExit, match="--max-attempts does not apply to --quality mixed"):
        main(["demos", "--task", "lift", "--episodes", "3", "--out", str(tmp_path / "x.hdf5"), "--quality", "mixed",
              "--max-attempts", "5"])


@pytest.mark.slow
def test_can_mixed_file_has_one_episode_per_operator(tmp_path):
    path = tmp_path / "can_mixed.hdf5"
    run_demos("--task", "can", "--episodes", "3", "--out", str(path), "--quality", "mixed")
    with h5py.File(path, "r") as file:
        assert sorted(file["data"][name].attrs["operator"] for level in OPERATORS for name in mask(file, level)) == \
            sorted(OPERATORS)
        assert all(demo["obs"]["object"].shape[1] == 14 for demo in demos_of(file))
        lengths = {demo.attrs["operator"]: demo.attrs["num_samples"] for demo in demos_of(file)}
    assert lengths["worse"] > lengths["better"]
