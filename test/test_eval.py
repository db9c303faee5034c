"""`mvp eval` and the chunk executor, on real MuJoCo (robosuite Lift) and real checkpoints from `mvp train`."""
from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("MUJOCO_GL", "egl")  # before robosuite/mujoco are imported

import cv2  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from mvp_ros.cli import main  # noqa: E402
from mvp_ros.data.robomimic import Episode, read_env_args, read_initial_states, write_robomimic  # noqa: E402
from mvp_ros.policy import Policy  # noqa: E402
from mvp_ros.policy.checkpoint import read_checkpoint_info  # noqa: E402
from mvp_ros.policy.chunks import ChunkExecutor  # noqa: E402
from mvp_ros.policy.critic import ChunkCritic, CriticConfig, save_critic  # noqa: E402
from mvp_ros.sim.envs import build_env, env_args_for, make_env  # noqa: E402
from mvp_ros.sim.evaluate import summarize, torch_threads, write_video  # noqa: E402
from mvp_ros.sim.rollout import InitialState, run_episode  # noqa: E402
from mvp_ros.sim.success import wilson_interval  # noqa: E402

HORIZON = 4
OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
TIMING_KEYS = {"inference_ms_p50", "inference_ms_p99", "seconds_per_episode"}


def tiny_train(dataset, out, obs_keys, steps=30):
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump({"policy": {"hidden_dim": 64, "depth": 2}, "log_every": 10}))
    with torch_threads(1):  # tiny batches: threads only add contention on a busy machine
        assert main(["train", "--config", str(config), "--dataset", str(dataset), "--out", str(out),
                     "--obs-keys", ",".join(obs_keys), "--steps", str(steps), "--batch-size", "32",
                     "--horizon", str(HORIZON), "--device", "cpu", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    assert main(["demos", "--task", "lift", "--episodes", "2", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def checkpoint(demos, tmp_path_factory):
    return tiny_train(demos, tmp_path_factory.mktemp("ckpt") / "lift_tiny", OBS_KEYS)


@pytest.fixture(scope="module")
def env(demos):
    environment = make_env(read_env_args(demos), offscreen_render=True)  # renders only when asked
    yield environment
    environment.close()


def evaluate_cli(checkpoint, tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    status = main(["eval", "--checkpoint", str(checkpoint), "--json", str(out), "--device", "cpu",
                   "--no-progress", *extra])
    assert status == 0
    return json.loads(out.read_text())


# ---- chunk executor -------------------------------------------------------------------------


def numbered_chunk(planned_at: int, horizon: int) -> np.ndarray:
    """Action j of the chunk planned at step s is (100 s + j, -(100 s + j)): its origin is readable."""
    values = 100.0 * planned_at + np.arange(horizon)
    return np.stack([values, -values], axis=1)


def execute(executor: ChunkExecutor, steps: int) -> tuple[list[int], np.ndarray]:
    planned_at, actions = [], []
    for step in range(steps):
        if executor.needs_chunk:
            planned_at.append(step)
            executor.add_chunk(numbered_chunk(step, executor.horizon))
        actions.append(executor.next_action())
    return planned_at, np.array(actions)


@pytest.mark.parametrize("execute_k", [1, 2, 3, 4])
def test_executor_executes_k_actions_of_each_chunk_then_replans(execute_k):
    planned_at, actions = execute(ChunkExecutor(horizon=4, execute=execute_k), steps=10)
    assert planned_at == list(range(0, 10, execute_k))
    expected = [100 * (step - step % execute_k) + step % execute_k for step in range(10)]
    np.testing.assert_array_equal(actions[:, 0], expected)


def test_executor_defaults_and_reset():
    assert ChunkExecutor(horizon=5).execute == 5
    assert ChunkExecutor(horizon=5, temporal_ensemble=True).execute == 1
    executor = ChunkExecutor(horizon=3)
    execute(executor, steps=2)
    executor.reset()
    assert executor.needs_chunk
    planned_at, actions = execute(executor, steps=3)
    assert planned_at == [0] and actions[:, 0].tolist() == [0, 1, 2]


def test_temporal_ensemble_averages_overlapping_predictions_with_act_weights():
    decay = 0.5
    executor = ChunkExecutor(horizon=3, temporal_ensemble=True, ensemble_decay=decay)
    planned_at, actions = execute(executor, steps=5)
    assert planned_at == [0, 1, 2, 3, 4]
    # Step 0: only chunk 0 predicts it. Step 1: chunk 0 (oldest, weight 1) and chunk 1 (weight e^-0.5).
    assert actions[0, 0] == 0
    weights = np.exp(-decay * np.arange(2))
    assert actions[1, 0] == pytest.approx(weights @ [1, 100] / weights.sum())
    # Step 4: chunks 2, 3 and 4 still cover it, at offsets 2, 1 and 0.
    weights = np.exp(-decay * np.arange(3))
    assert actions[4, 0] == pytest.approx(weights @ [202, 301, 400] / weights.sum())
    np.testing.assert_allclose(actions[:, 1], -actions[:, 0])


def test_temporal_ensemble_with_replanning_every_k_steps():
    executor = ChunkExecutor(horizon=4, execute=2, temporal_ensemble=True, ensemble_decay=0.01)
    planned_at, actions = execute(executor, steps=6)
    assert planned_at == [0, 2, 4]
    weights = np.exp(-0.01 * np.arange(2))
    assert actions[1, 0] == 1  # chunk 2 does not exist yet
    assert actions[3, 0] == pytest.approx(weights @ [3, 201] / weights.sum())
    assert actions[5, 0] == pytest.approx(weights @ [203, 401] / weights.sum())


def test_executor_rejects_bad_settings_and_chunks():
    with pytest.raises(ValueError, match="execute must be between 1 and the chunk horizon 4"):
        ChunkExecutor(horizon=4, execute=5)
    executor = ChunkExecutor(horizon=4)
    with pytest.raises(RuntimeError, match="call add_chunk first"):
        executor.next_action()
    with pytest.raises(ValueError, match=r"shape \(horizon=4, action_dim\), got \(3, 7\)"):
        executor.add_chunk(np.zeros((3, 7)))


def test_wilson_interval():
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 2) == pytest.approx((0.0, z2 / (2 + z2)))  # closed form at 0 successes
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(1 - high) and low == pytest.approx(0.2366, abs=1e-4)


# ---- episodes in MuJoCo ---------------------------------------------------------------------


class DemoReplay:
    """A chunk "policy" that replays a recorded demonstration's actions, HORIZON at a time."""

    obs_keys: list[str] = []
    horizon = HORIZON

    def __init__(self, actions: np.ndarray):
        self.actions = actions
        self.calls = 0

    def reset(self, seed=None):
        self.calls = 0

    def act(self, obs):
        steps = np.minimum(np.arange(self.calls * HORIZON, (self.calls + 1) * HORIZON), len(self.actions) - 1)
        self.calls += 1
        return self.actions[steps]


@pytest.mark.slow
def test_replaying_expert_demos_through_run_episode_succeeds(demos, env):
    """Guards against an evaluation that cannot report success: the expert's actions, executed as
    chunks from the same seeded start, must succeed at the same step as in the recording."""
    results = []
    with h5py.File(demos) as file:
        for name in file["data"]:
            actions, seed = file[f"data/{name}/actions"][()], int(file[f"data/{name}"].attrs["seed"])
            results.append(run_episode(env, DemoReplay(actions), seed, env.horizon, ChunkExecutor(HORIZON)))
            # Within a step or two of the recording: a seeded reset is not bit-identical to the recorded start.
            assert results[-1].success and abs(results[-1].steps - len(actions)) <= 2
            assert len(results[-1].inference_ms) == -(-results[-1].steps // HORIZON)
    assert summarize(results, [0, 1])["success_rate"] == 1.0


@pytest.mark.slow
def test_episodes_from_a_datasets_initial_states_replay_its_demos_exactly(demos, env):
    """Robomimic-style evaluation: from each demo's states[0] and model_file, the demo's own actions
    succeed at exactly the step the recording did."""
    for name, state, model_xml in read_initial_states(demos):
        with h5py.File(demos) as file:
            actions = file[f"data/{name}/actions"][()]
        result = run_episode(env, DemoReplay(actions), 0, env.horizon, ChunkExecutor(HORIZON),
                             initial_state=InitialState(state, model_xml))
        assert result.success and result.steps == len(actions)


@pytest.mark.slow
def test_eval_from_init_states_records_the_demos_it_started_from(checkpoint, demos, tmp_path):
    summary = evaluate_cli(checkpoint, tmp_path, "init", "--episodes", "2", "--max-steps", "5", "--init-states",
                           str(demos))
    assert summary["init_state_demos"] == ["demo_0", "demo_1"] and summary["settings"]["init_states"] == str(demos)
    with h5py.File(demos) as file:
        valid = sorted(name.decode() for name in file["mask/valid"][()])
    summary = evaluate_cli(checkpoint, tmp_path, "valid", "--episodes", "1", "--max-steps", "5", "--init-states",
                           str(demos), "--init-states-filter-key", "valid")
    assert summary["init_state_demos"] == valid[:1]


class CountingPolicy:
    def __init__(self, policy: Policy):
        self.policy, self.obs_keys, self.horizon, self.calls = policy, policy.obs_keys, policy.horizon, 0

    def reset(self, seed=None):
        self.policy.reset(seed)

    def act(self, obs):
        self.calls += 1
        return self.policy.act(obs)


@pytest.mark.slow
@pytest.mark.parametrize("execute_k, temporal_ensemble, calls", [(4, False, 3), (3, False, 4), (1, False, 10),
                                                                (None, True, 10)])
def test_run_episode_asks_for_a_chunk_every_k_steps(checkpoint, env, execute_k, temporal_ensemble, calls):
    policy = CountingPolicy(Policy.load(checkpoint, device="cpu"))
    result = run_episode(env, policy, 0, 10, ChunkExecutor(HORIZON, execute_k, temporal_ensemble))
    assert result.steps == 10 and not result.success and not result.frames
    assert policy.calls == calls == len(result.inference_ms)


@pytest.mark.slow
def test_seeded_episodes_are_reproducible(checkpoint, env):
    policy = Policy.load(checkpoint, device="cpu")
    final_states = {}
    for run, seed in enumerate([3, 4, 3]):
        run_episode(env, policy, seed, 15, ChunkExecutor(HORIZON))
        final_states[run] = env.get_state()
    np.testing.assert_array_equal(final_states[0], final_states[2])
    assert not np.allclose(final_states[0], final_states[1])


@pytest.mark.slow
def test_environments_built_with_the_same_seed_are_identical(demos):
    """robosuite draws Lift's cube size when it builds the model; unseeded, it differs per process."""
    states = []
    for seed in (5, 5, 6):
        environment = build_env(read_env_args(demos), seed, offscreen_render=False)
        environment.reset(seed=0)
        states.append((environment.unwrapped.cube.size, environment.get_state()))
        environment.close()
    np.testing.assert_array_equal(states[0][0], states[1][0])
    np.testing.assert_array_equal(states[0][1], states[1][1])
    assert not np.array_equal(states[0][0], states[2][0])


# ---- the command ----------------------------------------------------------------------------


@pytest.mark.slow
def test_eval_json_fields_are_consistent_and_seeded_runs_repeat(checkpoint, tmp_path):
    first = evaluate_cli(checkpoint, tmp_path, "first", "--episodes", "2", "--seed", "7", "--max-steps", "30")
    assert first["episodes"] == 2 == len(first["episode_success"]) == len(first["episode_steps"])
    assert first["successes"] == sum(first["episode_success"])
    assert first["success_rate"] == first["successes"] / first["episodes"]
    low, high = first["success_rate_ci95"]
    assert 0 <= low <= first["success_rate"] <= high <= 1 and high - low > 0.5  # two episodes say little
    assert first["seeds"] == [7, 8]
    assert first["checkpoint"] == str(checkpoint.resolve()) and first["env_name"] == "Lift"
    assert first["settings"] == {"seed": 7, "max_steps": 30, "horizon": HORIZON, "execute": HORIZON,
                                 "temporal_ensemble": False, "ensemble_decay": 0.01, "best_of": 1,
                                 "device": "cpu", "torch_threads": 1, "workers": 1}
    assert first["inference_calls"] == sum(-(-steps // HORIZON) for steps in first["episode_steps"])
    assert 0 < first["inference_ms_p50"] <= first["inference_ms_p99"]

    second = evaluate_cli(checkpoint, tmp_path, "second", "--episodes", "2", "--seed", "7", "--max-steps", "30")
    assert {k: v for k, v in first.items() if k not in TIMING_KEYS} == \
        {k: v for k, v in second.items() if k not in TIMING_KEYS}


@pytest.mark.slow
def test_eval_workers_give_the_episodes_of_one_process(checkpoint, tmp_path):
    """Episodes spread over two spawned processes are those one process runs, in seed order, video included."""
    common = ("--episodes", "3", "--seed", "11", "--max-steps", "25", "--video-episodes", "1")
    alone = evaluate_cli(checkpoint, tmp_path, "alone", *common, "--video", str(tmp_path / "alone.gif"))
    shared = evaluate_cli(checkpoint, tmp_path, "shared", *common, "--workers", "2",
                          "--video", str(tmp_path / "shared.gif"))
    assert (alone["settings"].pop("workers"), shared["settings"].pop("workers")) == (1, 2)
    ignored = TIMING_KEYS | {"video"}
    assert {k: v for k, v in alone.items() if k not in ignored} == {k: v for k, v in shared.items() if k not in ignored}
    assert shared["seeds"] == [11, 12, 13] and shared["video_frames"] == alone["video_frames"] == alone["episode_steps"][0] + 1


@pytest.mark.slow
def test_eval_best_of_n_selects_with_the_critic_beside_the_checkpoint(checkpoint, tmp_path, capsys):
    assert "the checkpoint has no critic (was it trained with --algo mvp-rl?)" in eval_error(capsys, checkpoint,
                                                                                            "--best-of", "8")
    with_critic = tmp_path / "with_critic"
    shutil.copytree(checkpoint, with_critic)
    info = read_checkpoint_info(with_critic)
    save_critic(with_critic, ChunkCritic(info.config, info.normalization, CriticConfig(hidden_dim=32, depth=1)))
    selected = evaluate_cli(with_critic, tmp_path, "best_of", "--episodes", "1", "--seed", "7", "--max-steps", "10",
                            "--best-of", "8")
    plain = evaluate_cli(with_critic, tmp_path, "plain", "--episodes", "1", "--seed", "7", "--max-steps", "10")
    assert selected["settings"]["best_of"] == 8 and plain["settings"]["best_of"] == 1
    assert selected["inference_calls"] == plain["inference_calls"] == -(-10 // HORIZON)  # one call per chunk, N inside


def is_right_side_up(rgb: np.ndarray) -> bool:
    """In Lift's agentview the white table fills the bottom of the picture; the floor and the
    robot's base are at the top."""
    gray = rgb.mean(axis=2)
    quarter = len(gray) // 4
    return gray[-quarter:].mean() > gray[:quarter].mean() + 40


@pytest.mark.slow
def test_video_is_a_playable_mp4_right_side_up(checkpoint, env, tmp_path):
    video = tmp_path / "eval.mp4"
    summary = evaluate_cli(checkpoint, tmp_path, "video", "--episodes", "2", "--max-steps", "6",
                           "--video", str(video), "--video-episodes", "1", "--video-size", "128")
    assert summary["video_frames"] == 7  # the first episode only: after the reset and after each step

    capture = cv2.VideoCapture(str(video))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1][:, :, ::-1])  # BGR -> RGB
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(env.control_rate_hz)
    assert len(frames) == 7 and frames[0].shape == (128, 128, 3)
    assert all(is_right_side_up(frame) for frame in frames)
    # The first frame is the environment's own (right side up) picture of the episode's start.
    env.reset(seed=0)
    reference = env.render("agentview", 128, 128).astype(float)
    below_caption = slice(32, None)
    error = np.abs(frames[0][below_caption] - reference[below_caption]).mean()
    flipped_error = np.abs(frames[0][below_caption] - reference[::-1][below_caption]).mean()
    assert error < 6 and flipped_error > 5 * error


@pytest.mark.slow
def test_video_as_gif(checkpoint, env, tmp_path):
    result = run_episode(env, Policy.load(checkpoint, device="cpu"), 0, 2, ChunkExecutor(HORIZON),
                         record_frames=True, frame_size=64)
    assert write_video(tmp_path / "eval.gif", [result], fps=20) == 3
    with Image.open(tmp_path / "eval.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (64, 64)
        assert is_right_side_up(np.asarray(gif.convert("RGB")))


# ---- bad input ------------------------------------------------------------------------------


def synthetic_checkpoint(tmp_path, name, obs_shapes, action_dim, env_args):
    """A real (tiny) checkpoint trained on random data with the given keys, action size and env_args."""
    rng = np.random.default_rng(0)
    episodes = [Episode(obs={key: rng.normal(size=(20, *shape)) for key, shape in obs_shapes.items()},
                        actions=rng.uniform(-1, 1, size=(20, action_dim))) for _ in range(3)]
    dataset = write_robomimic(tmp_path / f"{name}.hdf5", episodes, env_args=env_args)
    return tiny_train(dataset, tmp_path / name, list(obs_shapes), steps=5)


def eval_error(capsys, checkpoint, *extra) -> str:
    assert main(["eval", "--checkpoint", str(checkpoint), "--episodes", "1", "--device", "cpu",
                 "--no-progress", *extra]) == 2
    return capsys.readouterr().err


@pytest.mark.slow
def test_checkpoints_for_another_task_are_refused(tmp_path, capsys):
    lift = env_args_for("lift", images=False)
    unknown_key = synthetic_checkpoint(tmp_path, "key", {"robot0_eef_pos": (3,), "cube_pose": (7,)}, 7, lift)
    assert "needs observation 'cube_pose', which the Lift environment does not provide" in eval_error(capsys, unknown_key)

    wrong_shape = synthetic_checkpoint(tmp_path, "shape", {"object": (14,)}, 7, lift)
    message = eval_error(capsys, wrong_shape)
    assert "expects observation 'object' of shape (14,), the Lift environment gives (10,)" in message
    assert "another task" in message

    six_dof = synthetic_checkpoint(tmp_path, "actions", {"robot0_eef_pos": (3,)}, 6, lift)
    assert "predicts 6-d actions, the Lift environment takes 7-d actions" in eval_error(capsys, six_dof)


def test_checkpoints_without_a_simulator_are_refused(tmp_path, capsys):
    no_env_args = synthetic_checkpoint(tmp_path, "real_robot", {"position": (3,)}, 2, None)
    message = eval_error(capsys, no_env_args)
    assert f"checkpoint {no_env_args} has no env_args: it was trained on data without a simulator" in message

    toy = synthetic_checkpoint(tmp_path, "toy", {"position": (3,)}, 2, {"env_name": "Toy", "type": 1, "env_kwargs": {}})
    assert "'Toy' is not a robosuite environment" in eval_error(capsys, toy)


def test_bad_arguments_are_refused(tmp_path, capsys):
    checkpoint = synthetic_checkpoint(tmp_path, "lift_like", {"robot0_eef_pos": (3,)}, 7, env_args_for("lift", images=False))
    missing = tmp_path / "no_such_checkpoint"
    assert f"checkpoint directory {missing} does not exist" in eval_error(capsys, missing)
    assert "--episodes must be at least 1, got 0" in eval_error(capsys, checkpoint, "--episodes", "0")
    assert "--workers must be at least 1, got 0" in eval_error(capsys, checkpoint, "--workers", "0")
    assert "must end in .mp4 or .gif" in eval_error(capsys, checkpoint, "--video", str(tmp_path / "eval.avi"))
    assert f"directory {tmp_path / 'nowhere'} does not exist" in eval_error(
        capsys, checkpoint, "--json", str(tmp_path / "nowhere" / "eval.json"))
    assert "execute must be between 1 and the chunk horizon 4, got 9" in eval_error(capsys, checkpoint, "--execute", "9")
    assert "--init-states-filter-key needs --init-states FILE" in eval_error(capsys, checkpoint, "--init-states-filter-key",
                                                                             "valid")
    one_demo = [Episode(obs={"x": np.zeros((2, 1))}, actions=np.zeros((2, 7)), states=np.zeros((2, 3)))]
    can = write_robomimic(tmp_path / "can.hdf5", one_demo, env_args_for("can", images=False))
    assert f"--init-states {can} holds PickPlaceCan episodes, the checkpoint is for Lift" in eval_error(
        capsys, checkpoint, "--init-states", str(can))
    lift = write_robomimic(tmp_path / "lift.hdf5", one_demo, env_args_for("lift", images=False))
    assert f"--init-states {lift} has 1 demos, fewer than --episodes 3" in eval_error(
        capsys, checkpoint, "--episodes", "3", "--init-states", str(lift))
