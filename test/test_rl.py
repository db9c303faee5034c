"""Offline RL with best-of-N (mvp_ros.rl): TD targets by hand, best-of-N selection, gradient
isolation of the policy, target networks, learning to prefer the better mode, `mvp train --algo
mvp-rl` end to end, and online fine-tuning in robosuite Lift."""
from __future__ import annotations

import copy
import csv
import json
import os

import h5py
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mvp_ros.cli import main
from mvp_ros.data.robomimic import Episode, RobomimicDataset, read_file_attrs, write_robomimic
from mvp_ros.data.windows import WindowIndex
from mvp_ros.policy import CheckpointError, Policy, PolicyConfig, load_checkpoint
from mvp_ros.policy.model import ChunkPolicyModel
from mvp_ros.policy.normalizer import Normalization
from mvp_ros.rl import RLConfig, best_of_n, chunk_td_target, load_critic
from mvp_ros.rl.learner import MvpRlLearner
from mvp_ros.rl.online import OnlineState
from mvp_ros.rl.replay import ChunkReplay, episode_rewards, replay_from_dataset
from mvp_ros.training.rl import fine_tune_online
from mvp_ros.training.workspace import TrainConfig

SMALL_POLICY = {"hidden_dim": 64, "depth": 2}
SMALL_RL = {"critic_hidden_dim": 64, "critic_depth": 2, "num_candidates": 8, "compile": False}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks on a shared 2-core machine: a second intra-op thread only adds contention
    (measured here under load: a 256x70 @ 70x64 linear took 20 ms with 2 threads, 0.13 ms with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_dataset(path, episodes, env_args=None):
    return write_robomimic(path, episodes, env_args=env_args or {"env_name": "Toy", "type": 1, "env_kwargs": {}})


def small_learner(dataset, horizon, rl=None, **train_settings):
    config = TrainConfig(dataset=str(dataset.path), out="unused", obs_keys=dataset.obs_keys, horizon=horizon,
                         policy=SMALL_POLICY, **train_settings)
    rl_config = RLConfig.from_dict({**SMALL_RL, **(rl or {})})
    policy_config = PolicyConfig(head="mvp", action_dim=dataset.action_dim, horizon=horizon,
                                 obs_shapes=dataset.obs_shapes, **SMALL_POLICY)
    normalization = Normalization.from_data(dataset.all_actions(), {key: dataset.all_obs(key) for key in dataset.obs_keys})
    torch.manual_seed(0)
    return MvpRlLearner(ChunkPolicyModel(policy_config, normalization), normalization, config, rl_config,
                        torch.device("cpu")), rl_config


class ObservationValueCritic:
    """A fixed toy critic: Q(s, A) = 10 * s_x for every chunk A, so its best-of-N value is known."""

    def value(self, obs, chunks):
        return 10.0 * obs["x"][:, -1, 0:1].expand(-1, chunks.shape[1])


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Episode 0 succeeds (stored reward 1) at step 3 of 6; episode 1 runs out of time without success."""
    x0 = np.array([[0.0], [0.1], [0.2], [0.3], [0.4], [0.5]], np.float32)
    x1 = np.array([[1.0], [1.1], [1.2], [1.3], [1.4]], np.float32)
    episodes = [
        Episode(obs={"x": x0}, actions=np.linspace(-1, 1, 12).reshape(6, 2), rewards=np.array([0, 0, 0, 1, 0, 0.0])),
        Episode(obs={"x": x1}, actions=np.linspace(1, -1, 10).reshape(5, 2), rewards=np.zeros(5),
                dones=np.zeros(5)),
    ]
    path = write_dataset(tmp_path_factory.mktemp("tiny") / "tiny.hdf5", episodes)
    return RobomimicDataset(path, ["x"], action_horizon=3)


def test_td_target_equation_by_hand():
    rewards = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 0.0, 0.0]])
    step_mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    target = chunk_td_target(rewards, step_mask, torch.tensor([1.0, 0.0]), torch.tensor([-5.0, 100.0]), 0.9)
    # Row 0: -1 - 0.9 - 0.81 + 0.9^3 * (-5); row 1 terminates at its second step: -1 + 0.9 * 0, no bootstrap.
    assert torch.allclose(target, torch.tensor([-1 - 0.9 - 0.81 + 0.729 * -5.0, -1.0]))


def test_sparse_rewards_cut_the_episode_at_success():
    rewards, terminated = episode_rewards(np.array([0, 0.3, 1.0, 1.0]), np.array([0, 0.3, 1, 1]) >= 1.0, "sparse")
    assert rewards.tolist() == [-1, -1, 0] and terminated
    rewards, terminated = episode_rewards(np.array([0.5, 0.2]), np.array([False, False]), "sparse")
    assert rewards.tolist() == [-1, -1] and not terminated
    rewards, terminated = episode_rewards(np.array([0.5, 0.2, 7.0]), np.array([False, True, False]), "dataset")
    assert rewards.tolist() == [0.5, 0.2] and terminated


def test_td_targets_of_replay_windows_match_hand_computation(tiny_dataset):
    replay = replay_from_dataset(tiny_dataset, horizon=3, frame_stack=1, reward_mode="sparse", success_reward=1.0)
    # Episode 0 ends at its success (step 3 of 6): 4 steps kept, all 4 windows train the critic.
    # Episode 1 (global steps 4..8) hit the time limit: windows 4, 5 bootstrap; 6, 7, 8 run past its end.
    assert replay.episode_lengths == [4, 5] and replay.episode_terminated == [True, False]
    assert replay.usable_windows.tolist() == [0, 1, 2, 3, 4, 5]
    sampled = replay.sample(500, np.random.default_rng(0))
    assert sampled.step_mask[sampled.bootstrap == 0].sum(axis=1).min() >= 1

    learner, _ = small_learner(tiny_dataset, horizon=3, rl={"gamma": 0.9})
    learner.target_critic = ObservationValueCritic()
    batch = replay.batch(np.array([0, 1, 2, 3, 4, 5])).to(torch.device("cpu"))
    expected = [
        -1 - 0.9 - 0.81 + 0.729 * 10 * 0.3,  # steps 0-2, bootstrap from s_3 (x = 0.3)
        -1 - 0.9 + 0.81 * 0,  # steps 1-3, success at step 3 ends the sum, no bootstrap
        -1 + 0.9 * 0,  # steps 2-3 then nothing
        0.0,  # the success step alone
        -1 - 0.9 - 0.81 + 0.729 * 10 * 1.3,  # time-limited episode: steps 4-6, bootstrap from x = 1.3
        -1 - 0.9 - 0.81 + 0.729 * 10 * 1.4,
    ]
    assert torch.allclose(learner.td_target(batch), torch.tensor(expected), atol=1e-5)
    # The chunk padded past the success repeats the last action, as the policy's windows do.
    assert np.allclose(replay.batch(np.array([2])).actions[0], tiny_dataset.all_actions()[[2, 3, 3]])


def test_a_running_episode_is_sampled_once_its_chunk_and_next_state_exist(tmp_path):
    """Transitions added one by one: the window of step k is drawn once steps k..k+h exist, and is
    then what it will be after the episode ends; saved and loaded, the buffer is the same."""
    replay = ChunkReplay({"x": (1,)}, {"x": np.dtype(np.float32)}, 2, horizon=3, frame_stack=1, capacity=20)
    replay.add_episode({"x": np.zeros((4, 1), np.float32)}, np.zeros((4, 2)), np.array([-1, -1, -1, 0.0]), True)
    usable = []
    for step in range(6):
        replay.add_step({"x": np.array([step], np.float32)}, np.full(2, step / 10), -1.0, terminal=False)
        usable.append(replay.usable_windows.tolist())
    assert replay.size == 10 and replay.running_steps == 6 and replay.num_episodes == 1
    assert usable == [[0, 1, 2, 3]] * 3 + [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]]
    running_batch = replay.batch(np.array([4, 6]))
    assert running_batch.bootstrap.tolist() == [1, 1] and running_batch.step_mask.min() == 1
    assert running_batch.next_obs["x"][:, 0, 0].tolist() == [3, 5]
    saved = tmp_path / "run"
    saved.mkdir()
    replay.save_steps_from(saved, 4)
    loaded = ChunkReplay({"x": (1,)}, {"x": np.dtype(np.float32)}, 2, horizon=3, frame_stack=1, capacity=20)
    loaded.add_episode({"x": np.zeros((4, 1), np.float32)}, np.zeros((4, 2)), np.array([-1, -1, -1, 0.0]), True)
    loaded.load_steps(saved)
    assert (loaded.size, loaded.running_steps, loaded.usable_windows.tolist()) == (10, 6, usable[-1])

    replay.add_step({"x": np.array([6], np.float32)}, np.zeros(2), 0.0, terminal=True)  # success ends it
    assert replay.running_steps == 0 and replay.episode_lengths == [4, 7] and replay.episode_terminated == [True, True]
    ended_batch = replay.batch(np.array([4, 6]))
    for name in ("actions", "rewards", "step_mask", "bootstrap"):
        np.testing.assert_array_equal(getattr(ended_batch, name), getattr(running_batch, name))
    assert replay.usable_windows.tolist() == list(range(11))  # a terminated episode: every window
    with pytest.raises(ValueError, match="no running episode in the replay buffer to end"):
        replay.end_episode()
    with pytest.raises(CheckpointError, match="continues a replay buffer of 4 steps, but the dataset gives 0"):
        ChunkReplay({"x": (1,)}, {"x": np.dtype(np.float32)}, 2, 3, 1, 20).load_steps(saved)


def test_replay_batches_equal_the_window_index_of_its_episodes_as_steps_arrive():
    """Kept step by step, the buffer's windows are those WindowIndex makes of its episodes (the running
    one included) with frame stacking; a draw of usable windows is the same as indexing them."""
    rng = np.random.default_rng(4)
    replay = ChunkReplay({"x": (2,)}, {"x": np.dtype(np.float32)}, 3, horizon=4, frame_stack=2, capacity=200)
    replay.add_episode({"x": rng.normal(size=(7, 2)).astype(np.float32)}, rng.normal(size=(7, 3)),
                       rng.normal(size=7), terminated=False)
    for length, terminal in ((9, True), (12, False), (8, None)):
        for step in range(length):
            ends = step == length - 1 and terminal is not None
            replay.add_step({"x": rng.normal(size=2).astype(np.float32)}, rng.normal(size=3), float(rng.normal()),
                            terminal=ends and terminal)
            lengths = replay.episode_lengths + ([replay.running_steps] if replay.running_steps else [])
            index = WindowIndex(lengths, frame_stack=2, action_horizon=4)
            windows = np.arange(replay.size)
            batch = replay.batch(windows)
            np.testing.assert_array_equal(batch.obs["x"], replay.obs["x"][index.obs_steps(windows)])
            np.testing.assert_array_equal(batch.actions, replay.actions[index.action_steps(windows)])
            last = index.step_last[windows]
            np.testing.assert_array_equal(batch.bootstrap, (windows + 4 <= last).astype(np.float32))
            if len(replay.usable_windows):
                drawn = replay.sample(64, np.random.default_rng(step))
                expected = replay.batch(replay.usable_windows[np.random.default_rng(step).integers(
                    len(replay.usable_windows), size=64)])
                np.testing.assert_array_equal(drawn.obs["x"], expected.obs["x"])
                np.testing.assert_array_equal(drawn.rewards, expected.rewards)
            if ends and not terminal:
                replay.end_episode(terminated=False)
    with pytest.raises(IndexError, match="out of range for 36 stored steps"):
        replay.batch(np.array([36]))


def test_best_of_n_takes_the_argmax_of_one_batched_sampler_call(tiny_dataset):
    learner, _ = small_learner(tiny_dataset, horizon=3)
    model = learner.model
    calls = []
    original_sample = model.sample

    def recording_sample(obs, num_candidates=1, generator=None):
        candidates = original_sample(obs, num_candidates, generator)
        calls.append((num_candidates, candidates))
        return candidates

    model.sample = recording_sample
    obs = {"x": torch.tensor([[[0.1]], [[0.7]], [[1.2]]])}
    chunks, values = best_of_n(model, learner.critic, obs, 16, torch.Generator().manual_seed(3))
    assert len(calls) == 1 and calls[0][0] == 16
    candidates = calls[0][1]
    assert candidates.shape == (3, 16, 3, 2) and chunks.shape == (3, 3, 2)
    all_values = learner.critic.value(obs, candidates)
    best = all_values.argmax(dim=1)
    assert torch.equal(chunks, candidates[torch.arange(3), best])
    assert torch.allclose(values, all_values.max(dim=1).values)
    assert len(set(best.tolist())) > 1 or all_values.std() > 0  # a real choice among distinct candidates


def test_the_batched_critic_is_each_member_as_its_own_mlp(tiny_dataset):
    """One batched module computes, member by member, Linear([obs, chunk]) -> (LayerNorm -> GELU ->
    Linear)... -> 1 with the observation part of the first layer computed once per state."""
    learner, _ = small_learner(tiny_dataset, horizon=3, rl={"num_critics": 3, "critic_depth": 3})
    critic = learner.critic
    with torch.no_grad():
        for parameter in (critic.norm_weight, critic.norm_bias):  # not the initial ones and zeros
            parameter.normal_()
    obs = {"x": torch.tensor([[[0.1]], [[0.7]], [[1.2]]])}
    chunks = torch.rand(3, 5, 3, 2) * 2 - 1
    q_values = critic(obs, chunks)
    features = critic.obs_encoder(obs).repeat_interleave(5, dim=0)
    inputs = torch.cat([features, critic.action_scaler.normalize(chunks).reshape(15, -1)], dim=-1)
    for member in range(3):
        x = inputs @ torch.cat([critic.first_obs_weight[member], critic.first_chunk_weight[member]]) + critic.first_bias[member]
        for layer in range(3):
            if layer:
                x = x @ critic.hidden_weight[layer - 1, member] + critic.hidden_bias[layer - 1, member]
            x = torch.nn.functional.layer_norm(x, (64,), critic.norm_weight[layer, member], critic.norm_bias[layer, member])
            x = torch.nn.functional.gelu(x)
        expected = (x @ critic.output_weight[member] + critic.output_bias[member]).view(3, 5)
        torch.testing.assert_close(q_values[member], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # torch.compile of two functions, one with its backward
def test_the_compiled_bootstrap_and_critic_loss_equal_the_eager_ones(tiny_dataset):
    replay = replay_from_dataset(tiny_dataset, horizon=3, frame_stack=1, reward_mode="sparse", success_reward=1.0)
    batch = replay.sample(16, np.random.default_rng(0)).to(torch.device("cpu"))
    eager, _ = small_learner(tiny_dataset, horizon=3)
    compiled, _ = small_learner(tiny_dataset, horizon=3, rl={"compile": True})
    for name in ("model", "ema", "critic", "target_critic"):
        getattr(compiled, name).load_state_dict(getattr(eager, name).state_dict())
    for seed in (0, 1):  # the second call reuses the compiled code
        expected = eager.td_target(batch, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(compiled.td_target(batch, torch.Generator().manual_seed(seed)), expected,
                                   rtol=1e-5, atol=1e-5)
    for _ in range(2):  # the critic's update: compiled forward and backward, then the same optimizer step
        expected = eager.update_critic(batch, torch.Generator().manual_seed(2))
        got = compiled.update_critic(batch, torch.Generator().manual_seed(2))
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    for (name, eager_parameter), compiled_parameter in zip(eager.critic.named_parameters(), compiled.critic.parameters()):
        torch.testing.assert_close(compiled_parameter, eager_parameter, rtol=1e-4, atol=1e-5, msg=name)


def test_critic_update_sends_no_gradient_into_the_policy(tiny_dataset):
    replay = replay_from_dataset(tiny_dataset, horizon=3, frame_stack=1, reward_mode="sparse", success_reward=1.0)
    learner, _ = small_learner(tiny_dataset, horizon=3, lr=1e-3)
    bc_model = copy.deepcopy(learner.model)
    bc_optimizer = torch.optim.AdamW(bc_model.parameters(), lr=1e-3, weight_decay=0.0)
    batch = replay.sample(32, np.random.default_rng(1)).to(torch.device("cpu"))

    before = copy.deepcopy(learner.model.state_dict())
    learner.update_critic(batch, torch.Generator().manual_seed(0))
    assert all(parameter.grad is None for parameter in learner.model.parameters())
    assert all(torch.equal(before[name], tensor) for name, tensor in learner.model.state_dict().items())

    # A full RL update moves the policy exactly as a behaviour-cloning step on the same batch and noise.
    for _ in range(3):
        learner.update(batch, torch.Generator().manual_seed(5))
        loss, _ = bc_model.loss(batch.obs, batch.actions, torch.Generator().manual_seed(5))
        bc_optimizer.zero_grad()
        loss.backward()
        bc_optimizer.step()
    for (name, rl_parameter), bc_parameter in zip(learner.model.named_parameters(), bc_model.parameters()):
        assert torch.equal(rl_parameter, bc_parameter), name


def test_target_critic_moves_by_tau(tiny_dataset):
    replay = replay_from_dataset(tiny_dataset, horizon=3, frame_stack=1, reward_mode="sparse", success_reward=1.0)
    learner, rl = small_learner(tiny_dataset, horizon=3, rl={"tau": 0.1})
    assert all(torch.equal(a, b) for a, b in zip(learner.critic.parameters(), learner.target_critic.parameters()))
    old_target = [parameter.clone() for parameter in learner.target_critic.parameters()]
    learner.update_critic(replay.sample(32, np.random.default_rng(2)).to(torch.device("cpu")))
    moved = 0
    for old, critic_parameter, target_parameter in zip(old_target, learner.critic.parameters(),
                                                       learner.target_critic.parameters()):
        assert torch.allclose(target_parameter, 0.9 * old + 0.1 * critic_parameter, atol=1e-7)
        moved += int(not torch.equal(old, target_parameter))
    assert moved > 0
    assert not any(parameter.requires_grad for parameter in learner.target_critic.parameters())


def two_mode_episodes(rng, count=16, steps=20):
    """Uninformative observations; half the episodes act near +0.6 (reward 1 per step), half near -0.6 (0)."""
    episodes = []
    for index in range(count):
        sign = 1.0 if index % 2 == 0 else -1.0
        actions = np.stack([sign * 0.6 + 0.05 * rng.standard_normal(steps), 0.05 * rng.standard_normal(steps)], -1)
        episodes.append(Episode(obs={"x": rng.standard_normal((steps, 2)).astype(np.float32)}, actions=actions,
                                rewards=np.full(steps, 1.0 if sign > 0 else 0.0)))
    return episodes


@pytest.mark.slow
def test_offline_rl_prefers_the_mode_with_higher_return(tmp_path):
    rng = np.random.default_rng(0)
    path = write_dataset(tmp_path / "modes.hdf5", two_mode_episodes(rng))
    dataset = RobomimicDataset(path, ["x"], action_horizon=2)
    replay = replay_from_dataset(dataset, horizon=2, frame_stack=1, reward_mode="dataset", success_reward=1.0)
    learner, _ = small_learner(dataset, horizon=2, rl={"gamma": 0.9, "tau": 0.05}, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        learner.update(replay.sample(128, rng).to(torch.device("cpu")), generator)

    with torch.no_grad():
        probe = replay.sample(512, np.random.default_rng(1)).to(torch.device("cpu"))
        good = probe.actions[:, :, 0].mean(dim=1) > 0
        q_values = learner.critic.value(probe.obs, probe.actions[:, None])[:, 0]
        gap = q_values[good].mean() - q_values[~good].mean()
        plain = learner.ema.sample(probe.obs, 1, generator)[:, 0]
        chosen = learner.act(probe.obs, generator)
    plain_good, chosen_good = [(chunks[:, :, 0].mean(dim=1) > 0).float().mean().item() for chunks in (plain, chosen)]
    assert gap > 0.5, f"Q(good) - Q(bad) = {gap:.3f}"
    assert 0.15 < plain_good < 0.85, f"plain sampling lost a mode: {plain_good:.2f} good"
    assert chosen_good > 0.9 and chosen_good > plain_good + 0.2, f"best-of-N {chosen_good:.2f}, plain {plain_good:.2f}"


def train_rl_cli(dataset, out, *extra, rl=None, **settings):
    config_path = out.parent / f"{out.name}.yaml"
    config_path.write_text(yaml.safe_dump({"policy": SMALL_POLICY, "rl": {**SMALL_RL, **(rl or {})}, "log_every": 5,
                                           **settings}))
    return main(["train", "--algo", "mvp-rl", "--config", str(config_path), "--dataset", str(dataset),
                 "--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def success_dataset(tmp_path_factory):
    """Sparse robosuite-style rewards: 1 at the final (success) step of every episode."""
    rng = np.random.default_rng(4)
    episodes = []
    for _ in range(6):
        steps = int(rng.integers(8, 15))
        rewards = np.zeros(steps)
        rewards[-1] = 1.0
        obs = {"x": rng.standard_normal((steps, 3)).astype(np.float32),
               "camera": rng.integers(0, 256, (steps, 12, 12, 3), dtype=np.uint8)}
        episodes.append(Episode(obs=obs, actions=rng.uniform(-1, 1, (steps, 2)), rewards=rewards))
    return write_dataset(tmp_path_factory.mktemp("rl") / "success.hdf5", episodes)


def test_mvp_train_algo_mvp_rl_writes_policy_and_critic(success_dataset, tmp_path):
    out = tmp_path / "run"
    assert train_rl_cli(success_dataset, out, "--obs-keys", "x", "--steps", "20", "--batch-size", "16",
                        "--horizon", "3") == 0
    document = json.loads((out / "config.json").read_text())
    assert document["training"]["algo"] == "mvp-rl" and document["training"]["rl"]["num_candidates"] == 8
    assert document["training"]["replay_episodes"] == 5  # the demos of mask/train
    with (out / "train_log.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["step"]) for row in rows] == [5, 10, 15, 20]
    assert all(float(row["loss_critic"]) > 0 and float(row["loss"]) > 0 for row in rows)

    policy = Policy.load(out, device="cpu")
    assert policy.act({"x": np.zeros(3, np.float32)}).shape == (3, 2)
    model, _ = load_checkpoint(out)
    critic = load_critic(out)
    assert critic.config.num_critics == 2 and critic.config.hidden_dim == 64
    chunks, values = best_of_n(model, critic, {"x": torch.zeros(4, 1, 3)}, 8)
    assert chunks.shape == (4, 3, 2) and torch.isfinite(values).all()


def test_q_chunking_is_the_same_loop_with_the_flow_head(success_dataset, tmp_path):
    """QC's best-of-N: `--algo mvp-rl --head flow`, the bootstrap's candidates from 10 Euler steps."""
    out = tmp_path / "qc"
    assert train_rl_cli(success_dataset, out, "--obs-keys", "x", "--steps", "4", "--batch-size", "8",
                        "--horizon", "3", "--head", "flow") == 0
    model, _ = load_checkpoint(out)
    assert model.config.head == "flow" and model.config.flow_steps == 10
    chosen = Policy.load(out, device="cpu", seed=2, best_of=8).act({"x": np.zeros(3, np.float32)})
    assert chosen.shape == (3, 2) and load_critic(out).config.num_critics == 2


def test_a_policy_loaded_with_best_of_n_executes_the_critics_choice(success_dataset, tmp_path):
    out = tmp_path / "run"
    assert train_rl_cli(success_dataset, out, "--obs-keys", "x", "--steps", "10", "--batch-size", "16",
                        "--horizon", "3") == 0
    obs = {"x": np.array([0.2, -0.4, 0.9], np.float32)}
    candidates = Policy.load(out, device="cpu", seed=5).sample(obs, 8)  # the same noise as below
    chosen = Policy.load(out, device="cpu", seed=5, best_of=8).act(obs)
    values = load_critic(out).value({"x": torch.from_numpy(obs["x"]).view(1, 1, 3)},
                                    torch.from_numpy(candidates).unsqueeze(0))[0]
    assert len({tuple(chunk.ravel()) for chunk in candidates}) == 8
    np.testing.assert_allclose(chosen, candidates[int(values.argmax())], rtol=1e-6)
    # Ahead of time, the whole select step is the one compiled call, and it chooses alike.
    compiled = Policy.load(out, device="cpu", seed=5, best_of=8, execution="aot").act(obs)
    np.testing.assert_allclose(compiled, chosen, rtol=1e-5, atol=1e-6)


def test_best_of_n_needs_the_critic(success_dataset, tmp_path):
    out = tmp_path / "bc"
    assert main(["train", "--dataset", str(success_dataset), "--out", str(out), "--obs-keys", "x", "--steps", "2",
                 "--batch-size", "4", "--horizon", "2", "--no-progress"]) == 0
    with pytest.raises(CheckpointError, match="has no critic .was it trained with --algo mvp-rl"):
        Policy.load(out, device="cpu", best_of=4)
    with pytest.raises(ValueError, match="best_of: the number of candidates must be at least 1, got 0"):
        Policy.load(out, device="cpu", best_of=0)


def test_images_and_frame_stack_give_the_critic_its_own_encoder(success_dataset, tmp_path):
    out = tmp_path / "images"
    assert train_rl_cli(success_dataset, out, "--obs-keys", "x,camera", "--steps", "3", "--batch-size", "4",
                        "--horizon", "2", "--frame-stack", "2") == 0
    model, _ = load_checkpoint(out)
    critic = load_critic(out)
    critic_camera = dict(critic.obs_encoder.image_encoders["camera"].named_parameters())
    policy_camera = dict(model.obs_encoder.image_encoders["camera"].named_parameters())
    assert critic_camera.keys() == policy_camera.keys()
    assert not any(torch.equal(critic_camera[name], policy_camera[name]) for name in critic_camera)
    obs = {"x": torch.zeros(2, 2, 3), "camera": torch.zeros(2, 2, 12, 12, 3, dtype=torch.uint8)}
    chunks, values = best_of_n(model, critic, obs, 4)
    assert chunks.shape == (2, 2, 2) and torch.isfinite(values).all()


def test_rl_settings_and_files_give_clear_errors(success_dataset, tmp_path, capsys):
    common = ["--obs-keys", "x", "--steps", "2", "--batch-size", "4", "--horizon", "2"]
    assert train_rl_cli(success_dataset, tmp_path / "a", *common, rl={"reward_mode": "dense"}) == 2
    assert "rl.reward_mode: 'dense'" in capsys.readouterr().err
    assert train_rl_cli(success_dataset, tmp_path / "b", *common, rl={"num_critic": 3}) == 2
    assert "unknown rl setting(s) num_critic" in capsys.readouterr().err
    assert train_rl_cli(success_dataset, tmp_path / "c", *common, "--head", "diffusion") == 2
    assert "algo mvp-rl trains the MVP head, or the flow head as Q-chunking's best-of-N, not 'diffusion'" in \
        capsys.readouterr().err
    assert main(["train", "--dataset", str(success_dataset), "--out", str(tmp_path / "d"), *common,
                 "--online-steps", "5", "--no-progress"]) == 2
    assert "online_steps: 5 needs algo mvp-rl" in capsys.readouterr().err

    no_env_args = tmp_path / "no_env_args.hdf5"
    write_robomimic(no_env_args, [Episode(obs={"x": np.zeros((4, 3), np.float32)}, actions=np.zeros((4, 2)))] * 2)
    assert train_rl_cli(no_env_args, tmp_path / "e", *common, "--online-steps", "5") == 2
    assert "has no env_args" in capsys.readouterr().err

    no_rewards = tmp_path / "no_rewards.hdf5"
    no_rewards.write_bytes(success_dataset.read_bytes())
    with h5py.File(no_rewards, "a") as file:
        del file["data/demo_2/rewards"]
    assert train_rl_cli(no_rewards, tmp_path / "f", *common) == 2
    assert "data/demo_2/rewards is missing" in capsys.readouterr().err

    bc = tmp_path / "bc"
    assert main(["train", "--dataset", str(success_dataset), "--out", str(bc), *common, "--no-progress"]) == 0
    with pytest.raises(CheckpointError, match="critic.json is missing"):
        load_critic(bc)
    rl_run = tmp_path / "rl"
    assert train_rl_cli(success_dataset, rl_run, *common) == 0
    weights = rl_run / "critic.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="critic.safetensors does not match the SHA-256"):
        load_critic(rl_run)
    description = rl_run / "critic.json"
    description.write_text(json.dumps({**json.loads(description.read_text()), "format_version": 1}))
    with pytest.raises(CheckpointError, match="holds a version-1 critic; this version of mvp_ros reads version 2"):
        load_critic(rl_run)
    assert main(["train", "--out", str(bc), "--resume", "--algo", "mvp-rl", "--steps", "4", "--no-progress"]) == 2
    assert "algo was 'bc', now 'mvp-rl'" in capsys.readouterr().err


def test_resumed_mvp_rl_run_equals_an_uninterrupted_one(success_dataset, tmp_path, capsys):
    """Policy, both critics, both optimizers, the EMA and every random state come back from the saved state."""
    common = ["--obs-keys", "x", "--batch-size", "8", "--horizon", "2", "--seed", "5"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_rl_cli(success_dataset, straight, *common, "--steps", "10") == 0
    assert train_rl_cli(success_dataset, resumed, *common, "--steps", "6") == 0
    assert main(["train", "--out", str(resumed), "--resume", "--steps", "10", "--no-progress"]) == 0
    for name in ("model.safetensors", "critic.safetensors", "training_state.safetensors"):
        expected, got = load_file(str(straight / name)), load_file(str(resumed / name))
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=f"{name}: {key}")
    with (resumed / "train_log.csv").open() as stream:
        assert [int(row["step"]) for row in csv.DictReader(stream)] == [5, 6, 10]

    assert main(["train", "--out", str(resumed), "--resume", "--steps", "10", "--no-progress"]) == 2
    assert "already trained to step 10" in capsys.readouterr().err
    online = tmp_path / "online"
    assert train_rl_cli(success_dataset, online, *common, "--steps", "2") == 0
    state = json.loads((online / "training_state.json").read_text())
    (online / "training_state.json").write_text(json.dumps({**state, "step": 4}))  # as if saved online
    assert main(["train", "--out", str(online), "--resume", "--steps", "2", "--online-steps", "5", "--no-progress"]) == 2
    assert "inside its online phase (offline steps: 2), by a version of mvp_ros that did not save the online" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_online_fine_tuning_in_robosuite_lift(tmp_path):
    os.environ.setdefault("MUJOCO_GL", "egl")
    demos = tmp_path / "lift.hdf5"
    assert main(["demos", "--task", "lift", "--episodes", "2", "--out", str(demos)]) == 0
    out = tmp_path / "lift_rl"
    assert train_rl_cli(demos, out, "--obs-keys", "robot0_eef_pos,robot0_gripper_qpos,object", "--steps", "10",
                        "--batch-size", "16", "--horizon", "5", "--online-steps", "50", rl={"num_candidates": 4}) == 0
    training = json.loads((out / "config.json").read_text())["training"]
    with h5py.File(demos) as file:
        offline_steps = sum(int(file[f"data/{name.decode()}"].attrs["num_samples"]) for name in file["mask/train"])
    assert training["online"]["env_steps"] == 50
    assert training["replay_steps"] == offline_steps + 50 and training["replay_episodes"] >= 2
    assert training["step"] == 60
    with (out / "train_log.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    online_rows = [row for row in rows if row["env_steps"]]
    assert [int(row["step"]) for row in online_rows] == list(range(15, 61, 5))
    assert [int(row["env_steps"]) for row in online_rows] == list(range(5, 51, 5))
    assert Policy.load(out, device="cpu").act({"robot0_eef_pos": np.zeros(3), "robot0_gripper_qpos": np.zeros(2),
                                               "object": np.zeros(10)}).shape == (5, 7)
    assert load_critic(out).policy_config.horizon == 5
    assert json.loads((out / "config.json").read_text())["contract"] == read_file_attrs(demos)["contract"]


LIFT_KEYS = "robot0_eef_pos,robot0_gripper_qpos,object"


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    os.environ.setdefault("MUJOCO_GL", "egl")
    path = tmp_path_factory.mktemp("lift") / "lift.hdf5"
    assert main(["demos", "--task", "lift", "--episodes", "2", "--out", str(path)]) == 0
    return path


@pytest.mark.slow
def test_online_transitions_enter_the_replay_buffer_as_they_happen(lift_demos):
    dataset = RobomimicDataset(lift_demos, LIFT_KEYS.split(","), action_horizon=5)
    replay = replay_from_dataset(dataset, horizon=5, frame_stack=1, reward_mode="sparse", success_reward=1.0,
                                 extra_capacity=12)
    learner, _ = small_learner(dataset, horizon=5, rl={"num_candidates": 4})
    offline_steps, offline_windows = replay.size, len(replay.usable_windows)
    seen = []

    def after_env_step(state: OnlineState) -> None:
        seen.append((state.env_steps, replay.size - offline_steps, replay.running_steps, state.episodes,
                     len(replay.usable_windows) - offline_windows))

    state = fine_tune_online(learner, replay, dataset.env_args, 12, np.random.default_rng(0),
                             torch.Generator().manual_seed(0), torch.device("cpu"), "sparse", after_env_step,
                             progress=False)
    # Every step is in the buffer when the update after it runs, in the episode still running (the
    # untrained policy does not lift the cube in 12 steps); its windows count once h steps follow them.
    assert seen == [(step, step, step, 0, max(step - 5, 0)) for step in range(1, 13)]
    assert state.episodes == 0 and replay.running_steps == 0 and replay.episode_terminated[-1] is False


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_online_phase_resumes_as_if_never_stopped(lift_demos, tmp_path, monkeypatch):
    """Stopped in the middle of an episode (the process fails at its 23rd update), resumed from the
    checkpoint of step 21, the run ends with the weights, optimizer moments, random states and
    replay buffer of a run never stopped: the new environment is stepped through the episode again."""
    common = ["--obs-keys", LIFT_KEYS, "--steps", "3", "--batch-size", "8", "--horizon", "5", "--online-steps", "27"]
    settings = {"rl": {"num_candidates": 4}, "checkpoint_every": 7}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_rl_cli(lift_demos, straight, *common, **settings) == 0

    update = MvpRlLearner.update

    def failing_update(self, batch, generator=None):
        if self.updates == 22:
            raise Interrupted
        return update(self, batch, generator)

    monkeypatch.setattr(MvpRlLearner, "update", failing_update)
    with pytest.raises(Interrupted):
        train_rl_cli(lift_demos, resumed, *common, **settings)
    monkeypatch.setattr(MvpRlLearner, "update", update)
    state = json.loads((resumed / "training_state.json").read_text())
    assert state["step"] == 21 and state["online"]["env_steps"] == 18 and state["online"]["episodes"] == 0
    assert json.loads((resumed / "replay.json").read_text())["running_steps"] == 18
    assert main(["train", "--out", str(resumed), "--resume", "--no-progress"]) == 0

    for name in ("model.safetensors", "critic.safetensors", "training_state.safetensors", "replay.safetensors"):
        expected, got = load_file(str(straight / name)), load_file(str(resumed / name))
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=f"{name}: {key}")
    for name in ("training_state.json", "replay.json"):
        assert json.loads((resumed / name).read_text()) == json.loads((straight / name).read_text()), name
