"""mvp_ros.sim.envs on real robosuite/MuJoCo: env_args, seeded resets, exact replay, images."""
from __future__ import annotations

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before robosuite/mujoco are imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from robosuite.utils.camera_utils import get_camera_transform_matrix, project_points_from_world_to_camera  # noqa: E402

from mvp_ros.sim.envs import EnvArgsError, env_args_for, make_env, with_cameras_of  # noqa: E402

ACTIONS = np.array([[0.4, -0.3, -0.5, 0.0, 0.0, 0.2, -1.0]] * 10 + [[0.0, 0.5, 0.3, 0.1, 0.0, 0.0, 1.0]] * 10)


@pytest.fixture(scope="module")
def lift():
    env = make_env(env_args_for("lift", images=False))
    yield env
    env.close()


@pytest.fixture(scope="module")
def lift_images():
    env = make_env(env_args_for("lift", images=True))
    yield env
    env.close()


def rollout(env, seed, actions=ACTIONS):
    env.reset(seed=seed)
    states = [env.get_state()]
    for action in actions:
        env.step(action)
        states.append(env.get_state())
    return np.stack(states)


@pytest.mark.parametrize("images", [False, True])
def test_env_args_follow_robomimic_and_survive_json(images):
    env_args = env_args_for("lift", images=images)
    assert env_args["env_name"] == "Lift" and env_args["type"] == 1
    kwargs = env_args["env_kwargs"]
    assert kwargs["robots"] == ["Panda"] and kwargs["control_freq"] == 20
    assert kwargs["controller_configs"]["body_parts"]["right"]["type"] == "OSC_POSE"
    assert kwargs["reward_shaping"] is False and kwargs["has_renderer"] is False
    assert kwargs["use_camera_obs"] is images and kwargs["has_offscreen_renderer"] is images
    assert kwargs["camera_names"] == (["agentview", "robot0_eye_in_hand"] if images else [])
    assert json.loads(json.dumps(env_args)) == env_args
    assert env_args_for("can", images=False)["env_name"] == "PickPlaceCan"


def test_env_properties_and_observations(lift):
    assert lift.action_dim == 7 and lift.control_rate_hz == 20.0 and lift.horizon == 200
    obs = lift.reset(seed=0)
    assert set(lift.observation_keys) == set(obs)
    for key, size in {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2,
                      "robot0_joint_pos": 7, "object": 10}.items():
        assert obs[key].shape == (size,), key
    # Lift's `object` starts with the cube position, which sits on the table (top at z = 0.8).
    assert 0.8 < obs["object"][2] < 0.86
    assert lift.get_state().shape == (32,)


def test_seeded_resets_are_reproducible(lift):
    first, again, other = rollout(lift, 3), rollout(lift, 3), rollout(lift, 4)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first[0] - other[0]).max() > 1e-3  # another seed places the cube elsewhere


def test_reset_to_replays_exactly_in_a_new_environment(lift):
    recorded = rollout(lift, 5)
    model_file = lift.model_xml()
    replay_env = make_env({**lift.env_args, "env_kwargs": {**lift.env_args["env_kwargs"], "seed": 11}})
    # (another construction seed draws another cube size: the model_file puts the recorded one back)
    try:
        replay_env.reset_to(recorded[0], model_file)
        replayed = [replay_env.get_state()]
        for action in ACTIONS:
            replay_env.step(action)
            replayed.append(replay_env.get_state())
    finally:
        replay_env.close()
    np.testing.assert_array_equal(np.stack(replayed), recorded)


def test_reset_to_a_mid_episode_state_restores_it(lift):
    lift.reset(seed=6)
    for action in ACTIONS[:7]:
        lift.step(action)
    state = lift.get_state()
    lift.reset(seed=7)
    restored = lift.reset_to(state)
    np.testing.assert_array_equal(lift.get_state(), state)
    np.testing.assert_array_equal(restored["robot0_joint_pos"], state[1:8])  # state: time, qpos, qvel
    cube = lift.unwrapped.sim.model.get_joint_qpos_addr("cube_joint0")[0] + 1
    np.testing.assert_allclose(restored["object"][:3], state[cube:cube + 3], atol=1e-12)


def test_done_at_horizon_and_reward_is_sparse():
    env = make_env(env_args_for("lift", images=False, horizon=3))
    try:
        env.reset(seed=0)
        outcomes = [env.step(np.zeros(7))[1:] for _ in range(3)]
    finally:
        env.close()
    assert [done for _, done, _ in outcomes] == [False, False, True]
    assert all(reward == 0.0 and info["success"] is False for reward, _, info in outcomes)


def test_bad_actions_and_states_are_refused(lift):
    lift.reset(seed=0)
    with pytest.raises(ValueError, match=r"action has shape \(6,\), expected \(7,\)"):
        lift.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN or inf"):
        lift.step(np.array([0, 0, np.nan, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"state has shape \(5,\), but Lift states have shape \(32,\)"):
        lift.reset_to(np.zeros(5))


def test_unknown_task():
    with pytest.raises(EnvArgsError, match="unknown task 'stack'; known tasks: can, lift, square"):
        env_args_for("stack", images=False)


def _without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


LIFT = env_args_for("lift", images=False)


@pytest.mark.parametrize(
    "env_args, message",
    [
        ("{not json", "env_args is not valid JSON"),
        ([1, 2], "env_args must be a dict, got list"),
        (_without(LIFT, "env_name"), "env_args has no 'env_name' field"),
        ({**LIFT, "env_name": "Lfit"}, r"env_args\['env_name'\] = 'Lfit' is not a robosuite environment"),
        ({**LIFT, "type": 2}, r"env_args\['type'\] = 2: only robosuite environments"),
        ({**LIFT, "env_kwargs": []}, r"env_args\['env_kwargs'\] must be a dict, got list"),
        ({**LIFT, "env_kwargs": {**LIFT["env_kwargs"], "camra_names": []}}, r"does not take: \['camra_names'\]"),
        ({**LIFT, "env_kwargs": _without(LIFT["env_kwargs"], "robots")}, "has no 'robots' field"),
        ({**LIFT, "env_kwargs": {**LIFT["env_kwargs"], "control_freq": 0}}, r"\['control_freq'\] must be a positive"),
        ({**LIFT, "env_kwargs": {**LIFT["env_kwargs"], "horizon": "long"}}, r"\['horizon'\] must be a positive"),
        ({**LIFT, "env_kwargs": {**LIFT["env_kwargs"], "use_camera_obs": True}}, "'camera_names' is empty"),
    ],
)
def test_malformed_env_args_name_the_field(env_args, message):
    with pytest.raises(EnvArgsError, match=message):
        make_env(env_args)


def test_env_args_as_stored_json_text_build_the_env(lift):
    env = make_env(json.dumps(lift.env_args))
    try:
        assert env.unwrapped.__class__.__name__ == "Lift" and env.observation_keys == lift.observation_keys
    finally:
        env.close()


def red_pixels(image):
    red, green, blue = (image[..., channel].astype(int) for channel in range(3))
    return (red > 60) & (red > 1.8 * green) & (red > 1.8 * blue)


def test_images_are_right_side_up(lift_images):
    """The red cube shows where the camera model projects it (row 0 at the top), and a raised
    cube shows higher up in the picture."""
    env = lift_images
    env.reset(seed=0)
    cube = env.unwrapped.sim.model.get_joint_qpos_addr("cube_joint0")[0] + 1  # +1: time leads the state
    world_to_pixels = get_camera_transform_matrix(env.unwrapped.sim, "agentview", 84, 84)
    rows = []
    for height in (0.83, 1.05):
        state = env.get_state()
        state[cube:cube + 3] = [0.1, 0.15, height]
        image = env.reset_to(state)["agentview_image"]
        assert image.shape == (84, 84, 3) and image.dtype == np.uint8
        row, column = np.nonzero(red_pixels(image))
        projected = project_points_from_world_to_camera(np.array([0.1, 0.15, height]), world_to_pixels, 84, 84)
        assert abs(row.mean() - projected[0]) < 3 and abs(column.mean() - projected[1]) < 3
        rows.append(row.mean())
    assert rows[1] < rows[0] - 15


def test_images_are_robosuite_renders_flipped_once(lift_images):
    obs = lift_images.reset(seed=1)
    for camera in ("agentview", "robot0_eye_in_hand"):
        raw = lift_images.unwrapped.sim.render(camera_name=camera, height=84, width=84)
        np.testing.assert_array_equal(obs[f"{camera}_image"], raw[::-1])
    np.testing.assert_array_equal(lift_images.render("agentview", 84, 84), obs["agentview_image"])


def test_a_step_observes_cameras_and_joints_at_the_state_it_ends_in(lift_images):
    """As a robot's cameras and joint states are of one instant, and as Robomimic computes a file's
    observations from its states: a step's observation is the one recomputed at the state it leaves."""
    lift_images.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        stepped, *_ = lift_images.step(rng.uniform(-1, 1, lift_images.action_dim))
        recomputed = lift_images.reset_to(lift_images.get_state())
        for key in ("agentview_image", "robot0_eye_in_hand_image", "robot0_eef_pos", "robot0_joint_pos", "object"):
            np.testing.assert_allclose(stepped[key], recomputed[key], atol=1e-9, err_msg=key)


def test_a_step_rewards_the_state_it_ends_in():
    """As its observations: with a dense reward, which changes every step, a step's reward is the one
    computed again at the state it leaves (robosuite's own saw the positions before the last
    integration, so a sparse reward could miss the step that succeeds)."""
    args = env_args_for("lift", images=False)
    env = make_env({**args, "env_kwargs": {**args["env_kwargs"], "reward_shaping": True}})
    try:
        env.reset(seed=3)
        for action in ACTIONS[:6]:
            _, reward, _, _ = env.step(action)
            env.reset_to(env.get_state())
            assert reward == pytest.approx(env.unwrapped.reward(action), abs=1e-12)
            assert reward > 0.0
    finally:
        env.close()


@pytest.mark.slow
def test_each_environment_renders_in_its_own_context(lift_images):
    before = lift_images.reset(seed=2)["agentview_image"]
    other = make_env(env_args_for("can", images=True))  # its OpenGL context becomes current
    try:
        other.reset(seed=0)
        after = lift_images.reset(seed=2)["agentview_image"]
    finally:
        other.close()
    np.testing.assert_array_equal(after, before)


@pytest.mark.slow
def test_render_needs_an_offscreen_renderer(lift):
    with pytest.raises(RuntimeError, match="offscreen_render=True"):
        lift.render("agentview", 64, 64)
    env = make_env(lift.env_args, offscreen_render=True)
    try:
        env.reset(seed=0)
        image = env.render("agentview", 48, 64)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and "agentview_image" not in env.observation_keys
    finally:
        env.close()


def test_an_environment_renders_only_the_cameras_its_policy_reads():
    env_args = env_args_for("lift", images=True)
    lowdim_keys = ["robot0_eef_pos", "object"]
    assert with_cameras_of(env_args, [*lowdim_keys, "agentview_image", "robot0_eye_in_hand_image"]) is env_args
    both_cameras = make_env(env_args)  # a fresh one: other tests move the module's environments' cameras
    one_camera = make_env(with_cameras_of(env_args, [*lowdim_keys, "agentview_image"]))
    lowdim = make_env(with_cameras_of(env_args, lowdim_keys))
    try:
        reference = both_cameras.reset(seed=3)
        for env, images in ((one_camera, ["agentview_image"]), (lowdim, [])):
            obs = env.reset(seed=3)
            assert sorted(key for key in obs if key.endswith("_image")) == images
            for key in (*lowdim_keys, *images):
                np.testing.assert_array_equal(obs[key], reference[key])
        assert lowdim.unwrapped.sim._render_context_offscreen is None
    finally:
        both_cameras.close()
        one_camera.close()
        lowdim.close()
