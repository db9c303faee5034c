"""Files Robomimic's algorithms read: what `mvp demos` writes loads in robomimic 0.3.0's own
SequenceDataset with next observations (as BCQ, CQL, IQL and TD3-BC load it), with Robomimic's
low-dim key set, integer dones and its masks."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before robosuite/mujoco are imported

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mvp_ros.cli import main  # noqa: E402
from mvp_ros.sim.write_demos import LOW_DIM_KEYS  # noqa: E402

ObsUtils = pytest.importorskip("robomimic.utils.obs_utils", reason="robomimic 0.3.0 not installed")
from robomimic.utils.dataset import SequenceDataset  # noqa: E402

# The low-dim keys of Robomimic's v1.4.1 datasets (e.g. lift/ph/low_dim_v141.hdf5).
ROBOMIMIC_LOW_DIM_KEYS = {"object", "robot0_eef_pos", "robot0_eef_quat", "robot0_eef_vel_ang", "robot0_eef_vel_lin",
                          "robot0_gripper_qpos", "robot0_gripper_qvel", "robot0_joint_pos", "robot0_joint_pos_cos",
                          "robot0_joint_pos_sin", "robot0_joint_vel"}


@pytest.fixture(scope="module")
def lift_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    assert main(["demos", "--task", "lift", "--episodes", "5", "--out", str(path), "--seed", "2"]) == 0
    return path


@pytest.mark.slow
def test_mvp_demos_files_hold_robomimics_keys_next_obs_dones_and_masks(lift_file):
    assert set(LOW_DIM_KEYS) == ROBOMIMIC_LOW_DIM_KEYS
    with h5py.File(lift_file, "r") as file:
        assert {"train", "valid", "20_percent", "20_percent_train", "20_percent_valid", "50_percent"} <= set(file["mask"])
        assert len(file["mask/20_percent"]) == 1 and len(file["mask/50_percent"]) == 2  # round(0.2 * 5), round(0.5 * 5)
        for demo in file["data"].values():
            assert set(demo["obs"]) == set(demo["next_obs"]) == ROBOMIMIC_LOW_DIM_KEYS
            for key in ROBOMIMIC_LOW_DIM_KEYS:
                np.testing.assert_array_equal(demo["next_obs"][key][:-1], demo["obs"][key][1:], err_msg=key)
            dones = demo["dones"][()]
            assert dones.dtype == np.int64 and dones[-1] == 1 and not dones[:-1].any()


@pytest.mark.slow
@pytest.mark.parametrize("filter_key", ["train", "20_percent"])
def test_robomimics_sequence_dataset_loads_them_with_next_obs(lift_file, filter_key):
    keys = sorted(ROBOMIMIC_LOW_DIM_KEYS)
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": keys, "rgb": []}})
    dataset = SequenceDataset(
        str(lift_file), obs_keys=keys, dataset_keys=("actions", "rewards", "dones"), load_next_obs=True,
        frame_stack=1, seq_length=1, pad_frame_stack=True, pad_seq_length=True, goal_mode=None,
        hdf5_cache_mode="all", hdf5_use_swmr=True, filter_by_attribute=filter_key,
    )
    with h5py.File(lift_file, "r") as file:
        demos = sorted(name.decode() for name in file["mask"][filter_key][()])
        assert sorted(dataset.demos) == demos
        last = dataset[len(dataset) - 1]
        demo = file["data"][dataset.demos[-1]]
        assert last["dones"][0] == 1
        for key in keys:
            np.testing.assert_allclose(last["next_obs"][key][0], demo["next_obs"][key][-1], rtol=1e-6, err_msg=key)
    dataset.close_and_delete_hdf5_handle()
