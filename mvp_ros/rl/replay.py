"""Chunk transitions for the critic and the policy: a replay buffer filled from a Robomimic HDF5
file (offline) and transition by transition in simulation (online).

Steps of all episodes are stored back to back, as in the dataset reader. The window of step k,
in an episode whose steps run to `last`, holds (h = action horizon, F = frame stack):

    obs        frames k-F+1..k (the first frame repeated at the episode start)
    actions    a_k..a_{k+h-1} (the last action repeated past the episode end), the policy's target
    rewards    r_k..r_{k+h-1}, with step_mask 1 for steps <= last and 0 after
    next_obs   frames ending at k+h, the state the target critic bootstraps from

An episode ends at its first terminal step (dropping any later steps): success in the sparse
reward mode, a stored `done` in the dataset mode. Which windows train the critic:
  - k + h <= last: the whole chunk happened and s_{k+h} is stored: bootstrap from it.
  - k + h > last in an episode that terminated: the reward sum stops at `last`, no bootstrap.
  - k + h > last in an episode that did not terminate (time limit, or a run cut short): left out.
    Its reward sum is incomplete and the state after `last` is not stored, so neither a full sum
    nor a correct bootstrap exists. These are the last h windows of such an episode. The episode
    running online is such an episode until it ends, its `last` the newest step stored.
The policy trains on the same windows, so both losses see one batch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ..data.robomimic import DatasetError, RobomimicDataset, open_hdf5
from ..policy.checkpoint import CheckpointError

REPLAY_FORMAT = "mvp_ros.replay"
REPLAY_FORMAT_VERSION = 1
REPLAY_ARRAYS = "replay.safetensors"
REPLAY_JSON = "replay.json"


@dataclass
class ChunkBatch:
    """Arrays of a batch of windows (numpy from `sample`, tensors after `to`); B rows each."""

    obs: dict  # key -> (B, F, *shape)
    actions: np.ndarray | torch.Tensor  # (B, h, A) data units
    rewards: np.ndarray | torch.Tensor  # (B, h), 0 where step_mask is 0
    step_mask: np.ndarray | torch.Tensor  # (B, h), 1 for steps that happened
    bootstrap: np.ndarray | torch.Tensor  # (B,), 1 where s_{k+h} exists, 0 where the episode terminated in the chunk
    next_obs: dict  # key -> (B, F, *shape), frames ending at step k+h

    def to(self, device: torch.device) -> "ChunkBatch":
        """Tensors on `device`: images stay uint8, everything else float32."""
        def tensor(array: np.ndarray) -> torch.Tensor:
            values = torch.from_numpy(np.ascontiguousarray(array))
            return (values if values.dtype == torch.uint8 else values.float()).to(device, non_blocking=True)

        return ChunkBatch(obs={key: tensor(value) for key, value in self.obs.items()},
                          actions=tensor(self.actions), rewards=tensor(self.rewards),
                          step_mask=tensor(self.step_mask), bootstrap=tensor(self.bootstrap),
                          next_obs={key: tensor(value) for key, value in self.next_obs.items()})


def episode_rewards(rewards: np.ndarray, ends: np.ndarray, reward_mode: str) -> tuple[np.ndarray, bool]:
    """Cut an episode at its first end step and give it the rewards of `reward_mode`.

    ends: per step, true where the episode terminates (success, or a stored done).
    sparse: -1 per step and 0 at the end step; dataset: the given rewards unchanged.
    Returns (rewards of the kept steps, whether the episode terminated).
    """
    ends = np.asarray(ends, dtype=bool)
    terminated = bool(ends.any())
    length = int(np.argmax(ends)) + 1 if terminated else len(ends)
    if reward_mode == "sparse":
        kept = np.full(length, -1.0)
        if terminated:
            kept[-1] = 0.0
        return kept, terminated
    return np.asarray(rewards, dtype=np.float64)[:length], terminated


def step_reward(reward: float, success: bool, reward_mode: str) -> float:
    """One online step's reward in `reward_mode`, as `episode_rewards` gives it (success is the end step)."""
    if reward_mode == "sparse":
        return 0.0 if success else -1.0
    return float(reward)


class ChunkReplay:
    """Episodes stored back to back in arrays sized for `capacity` steps; samples windows (see module doc).

    Whole episodes enter with `add_episode` (the offline data); online, each transition enters with
    `add_step` as it happens, into the running episode, which `end_episode` (or a terminal step)
    closes. The running episode's windows are sampled as those of an episode that did not
    terminate: only those whose chunk and s_{k+h} are already stored, so a window is the same
    whenever it is drawn.
    """

    def __init__(self, obs_shapes: dict[str, tuple[int, ...]], obs_dtypes: dict[str, np.dtype], action_dim: int,
                 horizon: int, frame_stack: int, capacity: int):
        self.horizon = horizon
        self.frame_stack = frame_stack
        self.capacity = capacity
        self.obs = {key: np.zeros((capacity, *shape), obs_dtypes[key]) for key, shape in obs_shapes.items()}
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.size = 0
        self.episode_lengths: list[int] = []  # the closed episodes
        self.episode_terminated: list[bool] = []
        self.running_steps = 0  # steps of the running episode, stored after the closed ones
        self._closed_windows = np.zeros(0, np.int64)  # the closed episodes' usable windows
        # Each stored step's episode bounds, kept as steps arrive, so that sampling after every online
        # step costs the batch alone, not a rebuild over the whole buffer.
        self._step_first = np.zeros(capacity, np.int64)
        self._step_last = np.zeros(capacity, np.int64)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def usable_windows(self) -> np.ndarray:
        """The windows that train the critic and the policy (module doc)."""
        start = self.size - self.running_steps
        running = np.arange(start, start + self._running_usable)
        return np.concatenate([self._closed_windows, running]) if len(running) else self._closed_windows

    @property
    def _running_usable(self) -> int:
        return max(self.running_steps - self.horizon, 0)

    def add_episode(self, obs: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray,
                    terminated: bool) -> None:
        """One episode's T steps: obs {key: (T, *shape)}, actions (T, A), rewards (T,) already in the reward mode."""
        if self.running_steps:
            raise ValueError("an episode is running in the replay buffer: end it before adding a whole one")
        if len(actions) == 0:
            raise ValueError("cannot add an episode with 0 steps to the replay buffer")
        self._append(obs, actions, rewards)
        self.end_episode(terminated)

    def add_step(self, obs: dict[str, np.ndarray], action: np.ndarray, reward: float, terminal: bool) -> None:
        """One transition of the running episode: the observation {key: shape} the action was taken in
        (keys the buffer does not store are left out), the action and its reward in the reward mode; a
        terminal step closes the episode as terminated."""
        self._append({key: np.asarray(obs[key])[None] for key in self.obs}, np.asarray(action)[None],
                     np.array([reward]))
        if terminal:
            self.end_episode(terminated=True)

    def end_episode(self, terminated: bool = False) -> None:
        """Closes the running episode (`terminated`: at a terminal step; False: a time limit or a cut-short run)."""
        length = self.running_steps
        if length == 0:
            raise ValueError("no running episode in the replay buffer to end")
        start = self.size - length
        self.episode_lengths.append(length)
        self.episode_terminated.append(bool(terminated))
        # Windows whose chunk runs past a non-terminal end are left out (module doc).
        usable = length if terminated else max(length - self.horizon, 0)
        self._closed_windows = np.concatenate([self._closed_windows, np.arange(start, start + usable)])
        self.running_steps = 0

    def _append(self, obs: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray) -> None:
        length = len(actions)
        if self.size + length > self.capacity:
            raise ValueError(f"replay buffer full: {self.size} + {length} steps exceed its capacity {self.capacity}")
        if set(obs) != set(self.obs):
            raise ValueError(f"episode observation keys {sorted(obs)} differ from the buffer's {sorted(self.obs)}")
        for name, array in (*((f"obs[{key!r}]", value) for key, value in obs.items()),
                            ("actions", actions), ("rewards", rewards)):
            if len(array) != length:
                raise ValueError(f"episode {name} has {len(array)} steps, its actions have {length}")
        steps = slice(self.size, self.size + length)
        for key, values in obs.items():
            self.obs[key][steps] = values
        self.actions[steps] = actions
        self.rewards[steps] = rewards
        episode_start = self.size - self.running_steps
        self.size += length
        self.running_steps += length
        self._step_first[steps] = episode_start
        self._step_last[episode_start:self.size] = self.size - 1

    def save_steps_from(self, directory: str | Path, start: int) -> None:
        """The steps from `start` on (the online ones: `start` is where the offline data ends) with their
        episodes, the running one included, to replay.safetensors + replay.json in `directory`."""
        boundaries = np.cumsum([0, *self.episode_lengths])
        if start not in boundaries:
            raise ValueError(f"step {start} is not the start of an episode in the replay buffer")
        first = int(np.searchsorted(boundaries, start))
        arrays = {f"obs.{key}": values[start:self.size] for key, values in self.obs.items()}
        arrays |= {"actions": self.actions[start:self.size], "rewards": self.rewards[start:self.size]}
        directory = Path(directory)
        save_file({name: np.ascontiguousarray(values) for name, values in arrays.items()}, str(directory / REPLAY_ARRAYS))
        document = {"format": REPLAY_FORMAT, "format_version": REPLAY_FORMAT_VERSION, "start": start,
                    "steps": self.size - start, "episode_lengths": self.episode_lengths[first:],
                    "episode_terminated": self.episode_terminated[first:], "running_steps": self.running_steps}
        (directory / REPLAY_JSON).write_text(json.dumps(document, indent=2))

    def load_steps(self, directory: str | Path) -> None:
        """Appends what `save_steps_from` saved in `directory`; the buffer must hold exactly the steps before them."""
        directory = Path(directory)
        arrays_path, json_path = directory / REPLAY_ARRAYS, directory / REPLAY_JSON
        for path in (arrays_path, json_path):
            if not path.is_file():
                raise CheckpointError(f"cannot resume the online phase: {path} is missing")
        try:
            document = json.loads(json_path.read_text())
            arrays = load_file(str(arrays_path))
            start, lengths, running = int(document["start"]), list(document["episode_lengths"]), int(document["running_steps"])
            terminated = list(document["episode_terminated"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, SafetensorError) as error:
            raise CheckpointError(f"cannot resume the online phase: {json_path} or {arrays_path} is unreadable "
                                  f"({error!r})") from None
        if document.get("format") != REPLAY_FORMAT or document.get("format_version") != REPLAY_FORMAT_VERSION:
            raise CheckpointError(f"{json_path} is not a version-{REPLAY_FORMAT_VERSION} {REPLAY_FORMAT} file")
        if start != self.size:
            raise CheckpointError(f"{json_path} continues a replay buffer of {start} steps, but the dataset gives "
                                  f"{self.size}: was the dataset changed?")
        expected = {f"obs.{key}" for key in self.obs} | {"actions", "rewards"}
        if set(arrays) != expected or any(len(values) != sum(lengths) + running for values in arrays.values()):
            raise CheckpointError(f"{arrays_path} does not hold the arrays {sorted(expected)} of "
                                  f"{sum(lengths) + running} steps that {json_path} describes")
        offset = 0
        for length, ended in [*zip(lengths, terminated), (running, None)]:
            steps = slice(offset, offset + length)
            if length:
                self._append({key: arrays[f"obs.{key}"][steps] for key in self.obs}, arrays["actions"][steps],
                             arrays["rewards"][steps])
            if ended is not None:
                self.end_episode(ended)
            offset += length

    def sample(self, batch_size: int, rng: np.random.Generator) -> ChunkBatch:
        closed, running = len(self._closed_windows), self._running_usable
        if closed + running == 0:
            raise ValueError(f"no usable chunk windows in the replay buffer ({self.num_episodes} episodes, "
                             f"{self.size} steps): every episode is shorter than the horizon {self.horizon} "
                             "and none terminated")
        # The usable windows are the closed ones, then the running episode's from its start on.
        drawn = rng.integers(closed + running, size=batch_size)
        windows = self.size - self.running_steps + drawn - closed
        from_closed = drawn < closed
        windows[from_closed] = self._closed_windows[drawn[from_closed]]
        return self.batch(windows)

    def batch(self, windows: np.ndarray) -> ChunkBatch:
        """The chunk windows starting at the given stored steps (each within its episode's bounds)."""
        windows = np.asarray(windows, dtype=np.int64)
        if windows.size == 0:
            raise IndexError("empty batch: no window indices given")
        if windows.min() < 0 or windows.max() >= self.size:
            raise IndexError(f"window index out of range for {self.size} stored steps")
        first, last = self._step_first[windows][:, None], self._step_last[windows][:, None]
        reward_steps = windows[:, None] + np.arange(self.horizon)[None, :]
        step_mask = reward_steps <= last
        next_step = windows + self.horizon
        bootstrap = next_step <= last[:, 0]
        next_windows = np.minimum(next_step, last[:, 0])  # stays in the episode; unused where bootstrap is 0
        frames = np.arange(1 - self.frame_stack, 1)[None, :]
        obs_steps = np.clip(windows[:, None] + frames, first, last)
        next_obs_steps = np.clip(next_windows[:, None] + frames, first, last)
        return ChunkBatch(
            obs={key: values[obs_steps] for key, values in self.obs.items()},
            actions=self.actions[np.minimum(reward_steps, last)],
            rewards=np.where(step_mask, self.rewards[np.minimum(reward_steps, last)], 0.0).astype(np.float32),
            step_mask=step_mask.astype(np.float32),
            bootstrap=bootstrap.astype(np.float32),
            next_obs={key: values[next_obs_steps] for key, values in self.obs.items()},
        )


def replay_from_dataset(dataset: RobomimicDataset, horizon: int, frame_stack: int, reward_mode: str,
                        success_reward: float, extra_capacity: int = 0) -> ChunkReplay:
    """The dataset's demos (its observations and actions, plus rewards and dones read from the file),
    with room for `extra_capacity` more steps collected online."""
    actions = dataset.all_actions()
    replay = ChunkReplay(dataset.obs_shapes, dataset.obs_dtypes, dataset.action_dim, horizon, frame_stack,
                         capacity=len(actions) + extra_capacity)
    starts, lengths = dataset.windows.episode_starts, dataset.windows.episode_lengths
    with open_hdf5(dataset.path) as file:
        for name, start, length in zip(dataset.demo_names, starts, lengths):
            demo = file[f"data/{name}"]
            for field in ("rewards", "dones"):
                if field not in demo or demo[field].shape != (length,):
                    raise DatasetError(f"{dataset.path}: data/{name}/{field} is missing or not ({length},): "
                                       "--algo mvp-rl needs per-step rewards and dones")
            stored_rewards = demo["rewards"][()]
            ends = stored_rewards >= success_reward if reward_mode == "sparse" else demo["dones"][()] > 0
            rewards, terminated = episode_rewards(stored_rewards, ends, reward_mode)
            kept = slice(start, start + len(rewards))
            replay.add_episode({key: dataset.all_obs(key)[kept] for key in dataset.obs_keys}, actions[kept],
                               rewards, terminated)
    return replay
