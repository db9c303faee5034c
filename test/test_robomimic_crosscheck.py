"""Independent check: robomimic 0.3.0's own SequenceDataset reads our files and yields our windows.

robomimic's window for step k with frame_stack F and seq_length H covers steps k-F+1..k+H-1 for
both observations and actions (padded at both ends by repetition). Ours takes observation frames
k-F+1..k and actions k..k+H-1, so ours equals robomimic's obs[:F] and actions[F-1:].
robomimic.utils.dataset imports here without stand-ins (torch is present; torchvision is not
needed by the dataset utilities).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mvp_ros.data.robomimic import Episode, RobomimicDataset, write_robomimic

ObsUtils = pytest.importorskip("robomimic.utils.obs_utils", reason="robomimic 0.3.0 not installed")
from robomimic.utils.dataset import SequenceDataset  # noqa: E402

LOW_DIM_KEYS = ["robot0_eef_pos", "object"]
IMAGE_KEYS = ["agentview_image", "robot0_eye_in_hand_image"]
LENGTHS = (1, 3, 6, 9, 13, 4)
HORIZON = 5


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> Path:
    rng = np.random.default_rng(42)

    def episodes():
        for length in LENGTHS:
            yield Episode(
                obs={
                    "robot0_eef_pos": rng.normal(size=(length, 3)),
                    "object": rng.normal(size=(length, 10)).astype(np.float32),
                    "agentview_image": rng.integers(0, 256, (length, 12, 10, 3), dtype=np.uint8),
                    "robot0_eye_in_hand_image": rng.integers(0, 256, (length, 12, 10, 3), dtype=np.uint8),
                },
                actions=rng.uniform(-1, 1, size=(length, 7)),
            )

    path = tmp_path_factory.mktemp("crosscheck") / "mixed.hdf5"
    return write_robomimic(path, episodes(), {"env_name": "Lift", "type": 1, "env_kwargs": {}}, valid_fraction=0.34)


@pytest.fixture(scope="module", autouse=True)
def robomimic_obs_specs():
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": LOW_DIM_KEYS, "rgb": IMAGE_KEYS}})


@pytest.mark.parametrize("filter_key", [None, "train", "valid"])
@pytest.mark.parametrize("frame_stack", [2, 3])
@pytest.mark.parametrize("robomimic_cache, our_cache", [("all", True), (None, False)])
def test_sequence_dataset_yields_our_windows(dataset_path, filter_key, frame_stack, robomimic_cache, our_cache):
    keys = LOW_DIM_KEYS + IMAGE_KEYS
    theirs = SequenceDataset(
        str(dataset_path), obs_keys=keys, dataset_keys=["actions"], frame_stack=frame_stack,
        seq_length=HORIZON, pad_frame_stack=True, pad_seq_length=True, goal_mode=None,
        hdf5_cache_mode=robomimic_cache, hdf5_use_swmr=True, filter_by_attribute=filter_key, load_next_obs=False,
    )
    references = [theirs[index] for index in range(len(theirs))]
    # HDF5 refuses a second open of the file in one process with a different SWMR flag.
    theirs.close_and_delete_hdf5_handle()
    ours = RobomimicDataset(dataset_path, keys, action_horizon=HORIZON, frame_stack=frame_stack,
                            filter_key=filter_key, cache=our_cache)
    assert ours.demo_names == theirs.demos
    assert len(ours) == len(theirs) > 0
    batch = ours.get_batch(np.arange(len(ours)))
    for index, reference in enumerate(references):
        # robomimic casts actions to float32 when caching; compare in its dtype, bit for bit.
        expected_actions = reference["actions"][frame_stack - 1:]
        np.testing.assert_array_equal(batch["actions"][index].astype(expected_actions.dtype), expected_actions)
        for key in keys:
            expected = reference["obs"][key][:frame_stack]
            assert batch["obs"][key][index].dtype == expected.dtype
            np.testing.assert_array_equal(batch["obs"][key][index], expected)
    if filter_key is None:
        assert sorted(theirs.demos) == sorted(f"demo_{i}" for i in range(len(LENGTHS)))
