"""`mvp demos` and the scripted experts, on real robosuite/MuJoCo and real HDF5 files."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re

os.environ.setdefault("MUJOCO_GL", "egl")  # before robosuite/mujoco are imported

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from robosuite.utils.camera_utils import get_camera_transform_matrix, project_points_from_world_to_camera  # noqa: E402

from mvp_ros.cli import main  # noqa: E402
from mvp_ros.data.contract import Contract, load_contract  # noqa: E402
from mvp_ros.data.robomimic import Episode, read_env_args, read_file_attrs, write_robomimic  # noqa: E402
from mvp_ros.resources import package_file  # noqa: E402
from mvp_ros.sim.envs import env_args_for, make_env  # noqa: E402
from mvp_ros.sim.experts import PLANNERS, DemoError, DemoStats, episode_seed, run_expert, successful_demos  # noqa: E402
from mvp_ros.sim.write_demos import IMAGE_KEYS, LOW_DIM_KEYS, demos_contract  # noqa: E402

LOW_DIM_SHAPES = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "robot0_joint_pos": 7}


def run_demos(*arguments: str) -> str:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["demos", *arguments]) == 0
    return stdout.getvalue()


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    summary = run_demos("--task", "lift", "--episodes", "5", "--out", str(path), "--seed", "3")
    return path, summary


def demos_of(file: h5py.File) -> list[h5py.Group]:
    return [file["data"][f"demo_{index}"] for index in range(len(file["data"]))]


def test_lift_file_layout(lift_demos):
    path, summary = lift_demos
    assert re.search(r"lift: (\d+) attempts, 5 successes, success rate [01]\.\d{3}, [\d.]+ s per demonstration", summary)
    with h5py.File(path, "r") as file:
        demos = demos_of(file)
        assert len(demos) == 5
        assert file["data"].attrs["total"] == sum(demo.attrs["num_samples"] for demo in demos)
        assert json.loads(file["data"].attrs["env_args"]) == json.loads(json.dumps(env_args_for("lift", images=False)))
        assert file.attrs["task"] == "lift" and file.attrs["seed"] == 3
        masks = sorted(name.decode() for key in ("train", "valid") for name in file["mask"][key][:])
        assert masks == sorted(f"demo_{index}" for index in range(5))
        for demo in demos:
            steps = demo.attrs["num_samples"]
            assert set(demo["obs"]) == set(LOW_DIM_KEYS)
            for key, size in LOW_DIM_SHAPES.items():
                assert demo["obs"][key].shape == (steps, size), key
            assert demo["obs"]["object"].shape == (steps, 10)
            assert demo["actions"].shape == (steps, 7) and np.abs(demo["actions"][:]).max() <= 1.0
            assert demo["states"].shape == (steps, 32)
            assert demo.attrs["model_file"].startswith("<mujoco") and demo.attrs["strategy"] in ("top", "side")


def test_the_file_carries_the_simulated_pandas_contract(lift_demos):
    contract = read_file_attrs(lift_demos[0])["contract"]
    assert contract == load_contract(package_file("config", "panda_sim_contract.yaml")).to_dict()


def test_the_contract_fits_the_tasks_object_and_the_cameras_written():
    steps = 2
    episode = Episode(obs={"object": np.zeros((steps, 14)), "agentview_image": np.zeros((steps, 64, 48, 3), np.uint8)},
                      actions=np.zeros((steps, 7)))
    contract = Contract.from_dict(demos_contract(episode))
    assert contract.observations["object"].shape == (14,)  # PickPlaceCan's object-state
    camera = contract.observations["agentview_image"]
    assert (camera.topic, camera.msgtype, camera.shape, camera.encoding) == (
        "/agentview/image_raw", "sensor_msgs/msg/Image", (64, 48, 3), "rgb8")
    assert "robot0_eye_in_hand_image" not in contract.observations


def test_every_demo_ends_at_its_first_success(lift_demos):
    with h5py.File(lift_demos[0], "r") as file:
        for demo in demos_of(file):
            rewards, dones = demo["rewards"][:], demo["dones"][:]
            assert rewards[-1] == 1.0 and dones[-1] == 1.0
            assert not rewards[:-1].any() and not dones[:-1].any()
            # Lift succeeds when the cube is 4 cm above the table top (z = 0.8); the last stored
            # observation is the one before the successful step.
            assert demo["obs"]["object"][-1, 2] > 0.83


@pytest.mark.slow
def test_stored_actions_replay_the_stored_episode_exactly(lift_demos):
    """Robomimic's validity check: from states[0] (and the demo's model_file), the stored actions
    reproduce the stored states and observations, and the episode succeeds at its last step."""
    path = lift_demos[0]
    env = make_env(read_env_args(path))
    try:
        with h5py.File(path, "r") as file:
            for demo in demos_of(file):
                states, actions = demo["states"][:], demo["actions"][:]
                obs = env.reset_to(states[0], demo.attrs["model_file"])
                for step, action in enumerate(actions):
                    np.testing.assert_array_equal(env.get_state(), states[step])
                    for key in LOW_DIM_KEYS:
                        np.testing.assert_array_equal(obs[key], demo["obs"][key][step], err_msg=key)
                    obs, reward, done, info = env.step(action)
                    assert done == (step == len(actions) - 1) and reward == demo["rewards"][step]
                assert info["success"] and env.is_success()
    finally:
        env.close()


@pytest.mark.parametrize("task, strategies", [("lift", {"top", "side"}), ("can", {"high", "low"}),
                                              ("square", {"high", "low"})])
def test_both_strategies_are_chosen(task, strategies):
    env = make_env(env_args_for(task, images=False))
    try:
        obs = env.reset(seed=0)
        chosen = [PLANNERS[task](env, obs, np.random.default_rng(seed))[0] for seed in range(60)]
    finally:
        env.close()
    assert set(chosen) == strategies
    assert all(15 <= chosen.count(strategy) <= 45 for strategy in strategies)


def horizontal_offset_when_reaching_grasp_height(episode) -> float:
    """How far (horizontally) the hand is from the cube when it first comes within 2 cm of the cube's height."""
    hand, cube = episode.obs["robot0_eef_pos"], episode.obs["object"][:, :3]
    step = int(np.argmax(hand[:, 2] < cube[:, 2] + 0.02))
    return float(np.linalg.norm(hand[step, :2] - cube[step, :2]))


def test_lift_strategies_approach_differently():
    """`top` comes down onto the cube; `side` comes down beside it and slides in. Both succeed."""
    env = make_env(env_args_for("lift", images=False))
    offsets: dict[str, float] = {}
    try:
        for attempt in range(20):
            result = run_expert(env, "lift", episode_seed(0, attempt), LOW_DIM_KEYS)
            if result.strategy not in offsets:
                assert result.success
                offsets[result.strategy] = horizontal_offset_when_reaching_grasp_height(result.episode)
            if len(offsets) == 2:
                break
    finally:
        env.close()
    assert offsets["top"] < 0.015 and offsets["side"] > 0.04


@pytest.mark.slow
def test_can_expert_places_the_can_in_its_bin():
    env = make_env(env_args_for("can", images=False))
    try:
        results = [run_expert(env, "can", episode_seed(1, attempt), LOW_DIM_KEYS) for attempt in range(2)]
        robosuite_env = env.unwrapped
        can = robosuite_env.sim.data.body_xpos[robosuite_env.obj_body_id["Can"]]
        target = robosuite_env.target_bin_placements[robosuite_env.object_id]
    finally:
        env.close()
    assert all(result.success for result in results)
    assert all(result.episode.dones[-1] == 1.0 and result.episode.rewards[-1] == 1.0 for result in results)
    assert results[-1].episode.obs["object"].shape[1] == 14
    # The last episode's can lies in the target quarter of the second bin.
    assert np.all(np.abs(can[:2] - target[:2]) < robosuite_env.bin_size[:2] / 4)


@pytest.mark.slow
def test_square_expert_puts_the_nut_around_the_square_peg_by_either_strategy():
    env = make_env(env_args_for("square", images=False))
    try:
        robosuite_env = env.unwrapped
        peg = robosuite_env.sim.data.body_xpos[robosuite_env.peg1_body_id].copy()
        strategies = set()
        for attempt in range(4):
            result = run_expert(env, "square", episode_seed(2, attempt), LOW_DIM_KEYS)
            assert result.success, f"attempt {attempt} ({result.strategy})"
            assert result.episode.dones[-1] == 1 and result.episode.rewards[-1] == 1.0
            nut = robosuite_env.sim.data.body_xpos[robosuite_env.obj_body_id["SquareNut"]]
            # Around the peg, below its top: threaded on it, not resting on it.
            assert np.all(np.abs(nut[:2] - peg[:2]) < 0.02) and nut[2] < peg[2] + 0.05
            strategies.add(result.strategy)
    finally:
        env.close()
    assert strategies == {"high", "low"}


def red_pixels(image: np.ndarray) -> np.ndarray:
    red, green, blue = (image[..., channel].astype(int) for channel in range(3))
    return (red > 60) & (red > 1.8 * green) & (red > 1.8 * blue)


@pytest.mark.slow
def test_image_demos_are_84x84_uint8_and_right_side_up(tmp_path):
    path = tmp_path / "lift_images.hdf5"
    run_demos("--task", "lift", "--episodes", "1", "--out", str(path), "--images")
    contract = Contract.from_dict(read_file_attrs(path)["contract"])
    # The simulated Panda's contract publishes some of the low-dim keys stored, and both cameras.
    assert set(IMAGE_KEYS) < set(contract.observations) < set(LOW_DIM_KEYS + IMAGE_KEYS)
    assert all(contract.observations[key].shape == (84, 84, 3) for key in IMAGE_KEYS)
    env = make_env(read_env_args(path))
    try:
        with h5py.File(path, "r") as file:
            for demo in demos_of(file):
                steps = demo.attrs["num_samples"]
                assert set(demo["obs"]) == set(LOW_DIM_KEYS + IMAGE_KEYS)
                for key in IMAGE_KEYS:
                    assert demo["obs"][key].shape == (steps, 84, 84, 3) and demo["obs"][key].dtype == np.uint8
                first = demo["obs"]["agentview_image"][0]
                # The red cube is where the camera model puts the stored cube position (row 0 = top).
                rows, columns = np.nonzero(red_pixels(first))
                world_to_pixels = get_camera_transform_matrix(env.unwrapped.sim, "agentview", 84, 84)
                expected = project_points_from_world_to_camera(demo["obs"]["object"][0, :3], world_to_pixels, 84, 84)
                assert abs(rows.mean() - expected[0]) < 3 and abs(columns.mean() - expected[1]) < 3
                # The stored pictures are the environment's own, re-rendered from the stored state.
                obs = env.reset_to(demo["states"][0], demo.attrs["model_file"])
                for key in IMAGE_KEYS:
                    np.testing.assert_array_equal(obs[key], demo["obs"][key][0], err_msg=key)
    finally:
        env.close()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--episodes", "0"], "--episodes must be at least 1, got 0"),
        (["--episodes", "3", "--max-attempts", "2"], r"--max-attempts \(2\) is less than --episodes \(3\)"),
        (["--episodes", "1", "--image-size", "0"], "--image-size must be positive, got 0"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, arguments, message):
    with pytest.raises(SystemExit, match=message):
        main(["demos", "--task", "lift", "--out", str(tmp_path / "x.hdf5"), *arguments])
    assert not list(tmp_path.iterdir())


def test_missing_output_directory_and_unknown_task_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit, match="output directory .*missing does not exist"):
        main(["demos", "--task", "lift", "--episodes", "1", "--out", str(tmp_path / "missing" / "x.hdf5")])
    with pytest.raises(SystemExit):
        main(["demos", "--task", "stack", "--episodes", "1", "--out", str(tmp_path / "x.hdf5")])
    assert "invalid choice: 'stack'" in capsys.readouterr().err


def test_running_out_of_attempts_writes_nothing(tmp_path):
    env = make_env(env_args_for("lift", images=False, horizon=3))  # too short for any success
    stats = DemoStats()
    path = tmp_path / "none.hdf5"
    try:
        with pytest.raises(DemoError, match="only 0 of 2 lift demonstrations succeeded in 3 attempts"):
            write_robomimic(path, successful_demos(env, "lift", 2, 0, 3, LOW_DIM_KEYS, stats), env.env_args)
    finally:
        env.close()
    assert stats.attempts == 3 and stats.successes == 0
    assert not list(tmp_path.iterdir())


def test_the_default_quality_writes_no_operators(lift_demos):
    """Proficient demonstrations only, as before `--quality mixed` existed."""
    assert "quality" not in read_file_attrs(lift_demos[0])
    with h5py.File(lift_demos[0], "r") as file:
        assert set(file["mask"]) == {"train", "valid", "20_percent", "20_percent_train", "20_percent_valid",
                                     "50_percent", "50_percent_train", "50_percent_valid"}
        assert not any("operator" in demo.attrs for demo in demos_of(file))
