"""Robomimic-format HDF5: writing episodes, reading metadata, and the training dataset.

Layout (the one robomimic 0.3.0 reads):

    data/                  attrs: total (sum of num_samples), env_args (JSON string, optional)
    data/demo_<i>/         attrs: num_samples, plus per-episode attrs (e.g. model_file)
        obs/<key>          (T, *shape)   low-dim float, images uint8 (T, H, W, C)
        next_obs/<key>     (T, *shape)   optional
        actions            (T, A)
        rewards, dones     (T,)
        states             (T, S)        optional simulator states
    mask/<filter key>      demo names as fixed-length bytes: train, valid, optionally <p>_percent(_train/_valid)
                           and named subsets (e.g. better/okay/worse)
    file attrs             provenance; non-scalar values JSON-encoded
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from mvp_ros.data.windows import WindowIndex


class DatasetError(ValueError):
    """A dataset file or an episode is malformed; the message names the file, demo and key."""


@dataclass
class Episode:
    """One demonstration, every array with T rows (one per control step)."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray | None = None
    dones: np.ndarray | None = None
    states: np.ndarray | None = None
    next_obs: dict[str, np.ndarray] | None = None
    attrs: dict | None = None


class BlockArray:
    """Steps kept elsewhere (camera frames on disk), read a block at a time: `write_robomimic` writes
    them block by block, so a long episode's images are never all in memory. Subclasses set `shape`
    and `dtype` and read the steps of a slice."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, steps: slice) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[0 : len(self)], dtype=dtype)


_BLOCK_BYTES = 4 * 2**20  # a BlockArray is written this much at a time


def _as_array(value: Any) -> np.ndarray | BlockArray:
    return value if isinstance(value, BlockArray) else np.asarray(value)


@dataclass(frozen=True)
class _Schema:
    """What the first episode fixes for all later ones."""

    obs: dict[str, tuple[tuple[int, ...], np.dtype]]  # key -> (per-step shape, dtype)
    action_dim: int
    state_dim: int | None
    has_next_obs: bool


def is_image(array: np.ndarray) -> bool:
    """Images are uint8 arrays of shape (T, H, W, C)."""
    return array.dtype == np.uint8 and array.ndim == 4


def encode_attr(value: Any) -> Any:
    """Scalars and strings stay as HDF5 attrs; anything else is stored as a JSON string."""
    if isinstance(value, (str, bytes, bool, int, float, np.generic)):
        return value
    return json.dumps(value, default=_json_default)


def decode_attr(value: Any) -> Any:
    """Inverse of `encode_attr` for values written by it (JSON objects and lists come back decoded)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot JSON-encode attribute value of type {type(value).__name__}")


def _check_steps(index: int, name: str, array: np.ndarray, length: int) -> None:
    if array.shape[0] != length:
        raise DatasetError(
            f"episode {index}: {name} has {array.shape[0]} steps but actions have {length}"
        )


def _check_finite(index: int, name: str, array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        step = int(np.argwhere(~np.isfinite(array))[0][0])
        raise DatasetError(f"episode {index}: {name} contains NaN or inf (first at step {step})")


def _check_obs(index: int, prefix: str, obs: dict[str, np.ndarray], schema: _Schema, length: int) -> None:
    if set(obs) != set(schema.obs):
        raise DatasetError(
            f"episode {index}: {prefix} keys {sorted(obs)} differ from the first episode's {sorted(schema.obs)}"
        )
    for key, array in obs.items():
        name = f"{prefix}/{key}"
        shape, dtype = schema.obs[key]
        if array.shape[1:] != shape or array.dtype != dtype:
            raise DatasetError(
                f"episode {index}: {name} is {array.dtype}{list(array.shape[1:])} per step, "
                f"the first episode's is {dtype}{list(shape)}"
            )
        _check_steps(index, name, array, length)
        if not is_image(array):
            _check_finite(index, name, array)


def _schema_of(index: int, episode: Episode) -> _Schema:
    if not episode.obs:
        raise DatasetError(f"episode {index}: has no observation keys")
    actions = np.asarray(episode.actions)
    if actions.ndim != 2:
        raise DatasetError(f"episode {index}: actions must be (T, A), got shape {actions.shape}")
    states = None if episode.states is None else np.asarray(episode.states)
    return _Schema(
        obs={key: (_as_array(a).shape[1:], _as_array(a).dtype) for key, a in episode.obs.items()},
        action_dim=actions.shape[1],
        state_dim=None if states is None else states.reshape(len(states), -1).shape[1],
        has_next_obs=episode.next_obs is not None,
    )


def _validated_arrays(index: int, episode: Episode, schema: _Schema) -> dict[str, np.ndarray]:
    """Check one episode against the schema; return its datasets by path inside the demo group."""
    actions = np.asarray(episode.actions)
    length = actions.shape[0] if actions.ndim >= 1 else 0
    if length == 0:
        raise DatasetError(f"episode {index}: has 0 steps")
    if actions.ndim != 2 or actions.shape[1] != schema.action_dim:
        raise DatasetError(
            f"episode {index}: actions have shape {actions.shape}, expected (T, {schema.action_dim})"
        )
    if not np.issubdtype(actions.dtype, np.floating):
        raise DatasetError(f"episode {index}: actions must be float, got {actions.dtype}")
    _check_finite(index, "actions", actions)
    obs = {key: _as_array(array) for key, array in episode.obs.items()}
    _check_obs(index, "obs", obs, schema, length)

    arrays = {f"obs/{key}": array for key, array in obs.items()}
    arrays["actions"] = actions
    rewards = np.zeros(length) if episode.rewards is None else np.asarray(episode.rewards)
    if episode.dones is None:
        dones = np.zeros(length, dtype=np.int64)
        dones[-1] = 1
    else:
        dones = np.asarray(episode.dones)
    for name, array in (("rewards", rewards), ("dones", dones)):
        if array.shape != (length,):
            raise DatasetError(f"episode {index}: {name} has shape {array.shape}, expected ({length},)")
        _check_finite(index, name, array)
        arrays[name] = array

    if (episode.states is None) != (schema.state_dim is None):
        have = "has" if episode.states is not None else "has no"
        raise DatasetError(f"episode {index}: {have} states, unlike the first episode")
    if episode.states is not None:
        states = np.asarray(episode.states)
        _check_steps(index, "states", states, length)
        states = states.reshape(length, -1)
        if states.shape[1] != schema.state_dim:
            raise DatasetError(
                f"episode {index}: states have {states.shape[1]} dims, the first episode's have {schema.state_dim}"
            )
        arrays["states"] = states

    if (episode.next_obs is None) == schema.has_next_obs:
        have = "has" if episode.next_obs is not None else "has no"
        raise DatasetError(f"episode {index}: {have} next_obs, unlike the first episode")
    if episode.next_obs is not None:
        next_obs = {key: _as_array(array) for key, array in episode.next_obs.items()}
        _check_obs(index, "next_obs", next_obs, schema, length)
        arrays.update({f"next_obs/{key}": array for key, array in next_obs.items()})
    return arrays


def _write_demo(group: h5py.Group, arrays: dict[str, np.ndarray | BlockArray], compression: str | None) -> None:
    for name, array in arrays.items():
        image = compression is not None and is_image(array)
        options = {"compression": compression, "chunks": (1, *array.shape[1:])} if image else {}
        if isinstance(array, BlockArray):
            dataset = group.create_dataset(name, shape=array.shape, dtype=array.dtype, **options)
            steps = max(1, _BLOCK_BYTES // max(1, array.dtype.itemsize * int(np.prod(array.shape[1:]))))
            for start in range(0, len(array), steps):
                dataset[start : start + steps] = array[start : start + steps]
        else:
            group.create_dataset(name, data=array, **options)


def split_train_valid(num_demos: int, valid_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Random demo split. With valid_fraction > 0 and at least two demos, valid gets at least one
    demo and train keeps at least one."""
    num_valid = int(round(valid_fraction * num_demos))
    if valid_fraction > 0 and num_demos >= 2:
        num_valid = min(max(num_valid, 1), num_demos - 1)
    order = np.random.default_rng(seed).permutation(num_demos)
    return sorted(order[num_valid:].tolist()), sorted(order[:num_valid].tolist())


def _demo_names_array(indices: list[int]) -> np.ndarray:
    return np.array([f"demo_{i}" for i in indices], dtype="S")


def write_robomimic(
    path: str | os.PathLike,
    episodes: Iterable[Episode],
    env_args: dict | None = None,
    *,
    valid_fraction: float = 0.1,
    seed: int = 0,
    attrs: dict | None = None,
    compression: str | None = "gzip",
    percent_masks: Sequence[int] = (),
    named_masks: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write episodes (consumed one at a time) to a Robomimic-format HDF5 file.

    Masks: `train` and `valid` (a seeded split, `valid_fraction` of the demos), and for each p in
    `percent_masks` Robomimic's `<p>_percent` (a seeded p% of the demos) with its own
    `<p>_percent_train`/`<p>_percent_valid` split; `named_masks` maps further mask names (such as
    Robomimic's operator masks `better`/`okay`/`worse`) to episode indices. `compression` applies to image observations only.
    The file is written under a temporary name and renamed at the end, so an interrupted write never
    leaves a partial file at `path`. Raises DatasetError naming the episode index and key for
    inconsistent or non-finite data.
    """
    path = Path(path)
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with h5py.File(temporary, "w") as file:
            data = file.create_group("data")
            schema: _Schema | None = None
            total_steps = 0
            num_demos = 0
            for index, episode in enumerate(episodes):
                schema = schema or _schema_of(index, episode)
                arrays = _validated_arrays(index, episode, schema)
                demo = data.create_group(f"demo_{index}")
                length = len(arrays["actions"])
                demo.attrs["num_samples"] = length
                for key, value in (episode.attrs or {}).items():
                    demo.attrs[key] = encode_attr(value)
                _write_demo(demo, arrays, compression)
                total_steps += length
                num_demos += 1
            if num_demos == 0:
                raise DatasetError(f"{path}: no episodes to write")
            data.attrs["total"] = total_steps
            if env_args is not None:
                data.attrs["env_args"] = json.dumps(env_args, default=_json_default)
            train, valid = split_train_valid(num_demos, valid_fraction, seed)
            file.create_dataset("mask/train", data=_demo_names_array(train))
            file.create_dataset("mask/valid", data=_demo_names_array(valid))
            for percent in percent_masks:
                _write_percent_masks(file, percent, num_demos, valid_fraction, seed)
            for name, indices in (named_masks or {}).items():
                if name in file["mask"]:
                    raise ValueError(f"{path}: mask {name!r} is already written")
                if any(not 0 <= index < num_demos for index in indices):
                    raise ValueError(f"{path}: mask {name!r} names episodes outside 0..{num_demos - 1}")
                file.create_dataset(f"mask/{name}", data=_demo_names_array(sorted(indices)))
            for key, value in (attrs or {}).items():
                file.attrs[key] = encode_attr(value)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _write_percent_masks(file: h5py.File, percent: int, num_demos: int, valid_fraction: float, seed: int) -> None:
    if not 0 < percent < 100:
        raise ValueError(f"percent masks must be between 0 and 100 (exclusive), got {percent}")
    size = max(1, round(percent * num_demos / 100))
    subset = np.sort(np.random.default_rng([seed, percent]).permutation(num_demos)[:size])
    train, valid = split_train_valid(len(subset), valid_fraction, seed)
    file.create_dataset(f"mask/{percent}_percent", data=_demo_names_array(subset.tolist()))
    file.create_dataset(f"mask/{percent}_percent_train", data=_demo_names_array(subset[train].tolist()))
    file.create_dataset(f"mask/{percent}_percent_valid", data=_demo_names_array(subset[valid].tolist()))


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open a dataset read-only, turning missing/unreadable files into DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{path}: not a readable HDF5 file ({error})") from error


def _data_group(file: h5py.File, path: str | os.PathLike) -> h5py.Group:
    if not isinstance(file.get("data"), h5py.Group):
        raise DatasetError(f"{path}: no 'data' group (not a Robomimic-format file)")
    return file["data"]


def _env_args_of(data: h5py.Group, path: str | os.PathLike) -> dict | None:
    raw = data.attrs.get("env_args")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: data.attrs['env_args'] is not valid JSON ({error})") from error


def read_env_args(path: str | os.PathLike) -> dict | None:
    """The environment description stored in data.attrs['env_args'], or None if absent."""
    with open_hdf5(path) as file:
        return _env_args_of(_data_group(file, path), path)


def read_file_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """File-level provenance attrs, JSON-encoded values decoded."""
    with open_hdf5(path) as file:
        return {key: decode_attr(value) for key, value in file.attrs.items()}


def read_initial_states(path: str | os.PathLike, filter_key: str | None = None) -> list[tuple[str, np.ndarray, str | None]]:
    """(demo name, states[0], model_file or None) of each demo (of mask/<filter_key>), in demo order."""
    path = Path(path)
    with open_hdf5(path) as file:
        initial = []
        for name in _selected_demos(file, path, filter_key):
            demo = file[f"data/{name}"]
            if not isinstance(demo.get("states"), h5py.Dataset) or len(demo["states"]) == 0:
                raise DatasetError(f"{path}: data/{name} has no states, so it gives no initial state")
            model_file = demo.attrs.get("model_file")
            model_file = model_file.decode() if isinstance(model_file, bytes) else model_file
            initial.append((name, _read(demo["states"], path)[0], model_file))
    return initial


def _demo_sort_key(name: str) -> tuple[int, str]:
    """robomimic orders demos by the number in demo_<n>."""
    match = re.fullmatch(r"demo_(\d+)", name)
    return (int(match.group(1)) if match else -1, name)


def mask_demo_names(masks: h5py.Group, key: str) -> list[str]:
    """The demo names listed by mask/<key>, decoded, in stored order (empty if the mask lists none)."""
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name)
            for name in np.asarray(masks[key][()]).reshape(-1)]


def _selected_demos(file: h5py.File, path: Path, filter_key: str | None) -> list[str]:
    data = _data_group(file, path)
    if filter_key is None:
        names = list(data.keys())
    else:
        masks = file.get("mask")
        available = sorted(masks.keys()) if isinstance(masks, h5py.Group) else []
        if filter_key not in available:
            raise DatasetError(
                f"{path}: filter key '{filter_key}' not in mask/ (available: {', '.join(available) or 'none'})"
            )
        names = mask_demo_names(masks, filter_key)
        missing = [name for name in names if name not in data]
        if missing:
            raise DatasetError(f"{path}: mask/{filter_key} lists demos not in data/: {', '.join(missing)}")
    if not names:
        selection = f"mask/{filter_key}" if filter_key else "data/"
        raise DatasetError(f"{path}: no demos in {selection}")
    return sorted(names, key=_demo_sort_key)


def _read(dataset: h5py.Dataset, path: Path, out: np.ndarray | None = None) -> np.ndarray:
    """Read a whole dataset, turning I/O failures (e.g. a truncated file) into DatasetError."""
    try:
        if out is None:
            return dataset[()]
        dataset.read_direct(out)
        return out
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot read {dataset.name} ({error})") from error


class RobomimicDataset:
    """Training windows from a Robomimic-format HDF5 file.

    Item i is {"obs": {key: (frame_stack, *shape)}, "actions": (action_horizon, A)}: observation
    frames k-F+1..k and actions k..k+H-1 of the step k it stands for, padded at episode ends as
    robomimic's SequenceDataset pads (see mvp_ros.data.windows). Arrays keep the file's dtypes.
    With cache=True the selected demos are loaded once into contiguous arrays (with a progress bar
    unless progress=False) and `get_batch` is pure numpy indexing; with cache=False every batch is
    read from the file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        obs_keys: Sequence[str],
        *,
        action_horizon: int = 1,
        frame_stack: int = 1,
        filter_key: str | None = None,
        cache: bool = True,
        progress: bool = True,
    ):
        if isinstance(obs_keys, str) or not obs_keys:
            raise ValueError(f"obs_keys must be a non-empty list of keys, got {obs_keys!r}")
        self.path = Path(path)
        self.obs_keys = list(obs_keys)
        self.cache = cache
        self._file_handle: h5py.File | None = None
        self._file_pid: int | None = None
        self._datasets: dict[int, dict[str, h5py.Dataset]] = {}
        with open_hdf5(self.path) as file:
            self.env_args = _env_args_of(_data_group(file, self.path), self.path)
            self.demo_names = _selected_demos(file, self.path, filter_key)
            lengths = self._check_layout(file)
            self.windows = WindowIndex(lengths, frame_stack, action_horizon)
            self._actions: np.ndarray | None = None
            self._obs: dict[str, np.ndarray] = {}
            if cache:
                self._load_into_memory(file, progress)

    def _check_layout(self, file: h5py.File) -> list[int]:
        """Validate every selected demo; set obs_shapes, obs_dtypes, action_dim; return lengths."""
        lengths = []
        self.obs_shapes: dict[str, tuple[int, ...]] = {}
        self.obs_dtypes: dict[str, np.dtype] = {}
        self.action_dim = -1
        for name in self.demo_names:
            demo = file[f"data/{name}"]
            if "num_samples" not in demo.attrs:
                raise DatasetError(f"{self.path}: data/{name} has no num_samples attr")
            length = int(demo.attrs["num_samples"])
            if length < 1:
                raise DatasetError(f"{self.path}: data/{name} has 0 steps")
            if not isinstance(demo.get("actions"), h5py.Dataset) or demo["actions"].ndim != 2:
                raise DatasetError(f"{self.path}: data/{name}/actions is missing or not (T, A)")
            actions = demo["actions"]
            if self.action_dim < 0:
                self.action_dim = actions.shape[1]
            if actions.shape != (length, self.action_dim):
                raise DatasetError(
                    f"{self.path}: data/{name}/actions has shape {actions.shape}, "
                    f"expected ({length}, {self.action_dim}) from num_samples and the first demo"
                )
            available = sorted(demo["obs"].keys()) if isinstance(demo.get("obs"), h5py.Group) else []
            for key in self.obs_keys:
                if key not in available:
                    raise DatasetError(
                        f"{self.path}: obs key '{key}' not in data/{name}/obs "
                        f"(available: {', '.join(available) or 'none'})"
                    )
                obs = demo["obs"][key]
                shape = self.obs_shapes.setdefault(key, obs.shape[1:])
                dtype = self.obs_dtypes.setdefault(key, obs.dtype)
                if obs.shape[0] != length:
                    raise DatasetError(
                        f"{self.path}: data/{name}/obs/{key} has {obs.shape[0]} steps but num_samples is {length}"
                    )
                if obs.shape[1:] != shape or obs.dtype != dtype:
                    raise DatasetError(
                        f"{self.path}: data/{name}/obs/{key} is {obs.dtype}{list(obs.shape[1:])} per step, "
                        f"data/{self.demo_names[0]}/obs/{key} is {dtype}{list(shape)}"
                    )
            lengths.append(length)
        return lengths

    def _load_into_memory(self, file: h5py.File, progress: bool) -> None:
        total = len(self.windows)
        names = {"actions": "actions", **{key: f"obs/{key}" for key in self.obs_keys}}
        first = file[f"data/{self.demo_names[0]}"]
        arrays = {field: np.empty((total, *first[name].shape[1:]), first[name].dtype) for field, name in names.items()}
        bounds = zip(self.windows.episode_starts, self.windows.episode_starts + self.windows.episode_lengths)
        demos = tqdm(self.demo_names, desc=f"loading {self.path.name}", unit="demo", leave=False, disable=not progress)
        for demo_name, (start, end) in zip(demos, bounds):
            for field, name in names.items():
                _read(file[f"data/{demo_name}/{name}"], self.path, arrays[field][start:end])
        for array in arrays.values():
            array.flags.writeable = False
        self._actions = arrays.pop("actions")
        self._obs = arrays

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        batch = self.get_batch(np.array([index]))
        return {"obs": {key: frames[0] for key, frames in batch["obs"].items()}, "actions": batch["actions"][0]}

    def get_batch(self, indices: np.ndarray) -> dict:
        """{"obs": {key: (B, frame_stack, *shape)}, "actions": (B, action_horizon, A)}."""
        windows = self.windows.check(np.asarray(indices).reshape(-1))
        obs_steps = self.windows.obs_steps(windows)
        action_steps = self.windows.action_steps(windows)
        if self.cache:
            return {
                "obs": {key: self._obs[key][obs_steps] for key in self.obs_keys},
                "actions": self._actions[action_steps],
            }
        return self._read_batch(windows, obs_steps, action_steps)

    def _file(self) -> h5py.File:
        """The lazily opened file, reopened in a new process (e.g. a DataLoader worker)."""
        if self._file_handle is None or self._file_pid != os.getpid():
            self._file_handle = open_hdf5(self.path)
            self._file_pid = os.getpid()
            self._datasets = {}
        return self._file_handle

    def _episode_datasets(self, episode: int) -> dict[str, h5py.Dataset]:
        """One demo's h5py datasets by field, looked up once per open file (path lookups are slow)."""
        file = self._file()
        if episode not in self._datasets:
            demo = file[f"data/{self.demo_names[episode]}"]
            self._datasets[episode] = {"actions": demo["actions"], **{key: demo["obs"][key] for key in self.obs_keys}}
        return self._datasets[episode]

    def _read_batch(self, windows: np.ndarray, obs_steps: np.ndarray, action_steps: np.ndarray) -> dict:
        obs: dict[str, list[np.ndarray]] = {key: [] for key in self.obs_keys}
        actions = []
        for window, frames, chunk in zip(windows, obs_steps, action_steps):
            episode = self.windows.step_episode[window]
            datasets = self._episode_datasets(episode)
            start = self.windows.episode_starts[episode]
            for key in self.obs_keys:
                obs[key].append(_read_steps(datasets[key], frames - start))
            actions.append(_read_steps(datasets["actions"], chunk - start))
        return {"obs": {key: np.stack(frames) for key, frames in obs.items()}, "actions": np.stack(actions)}

    def all_actions(self) -> np.ndarray:
        """(N_steps, A) actions of the selected demos, e.g. for normalization statistics."""
        return self._actions if self.cache else self._concatenate("actions")

    def all_obs(self, key: str) -> np.ndarray:
        """(N_steps, *shape) observations under `key` (one of obs_keys) of the selected demos."""
        if key not in self.obs_keys:
            raise DatasetError(f"obs key '{key}' was not loaded (loaded: {', '.join(self.obs_keys)})")
        return self._obs[key] if self.cache else self._concatenate(f"obs/{key}")

    def _concatenate(self, name: str) -> np.ndarray:
        data = self._file()["data"]
        return np.concatenate([_read(data[f"{demo}/{name}"], self.path) for demo in self.demo_names])

    def __getstate__(self) -> dict:
        # An open h5py handle can't cross process boundaries; workers reopen the file.
        return {**self.__dict__, "_file_handle": None, "_file_pid": None, "_datasets": {}}

    def close(self) -> None:
        if self._file_handle is not None:
            self._file_handle.close()
            self._file_handle = None
            self._datasets = {}


def _read_steps(dataset: h5py.Dataset, steps: np.ndarray) -> np.ndarray:
    """Rows `steps` (non-decreasing, possibly repeated) of a dataset, reading one contiguous slice."""
    first, last = int(steps[0]), int(steps[-1])
    return dataset[first : last + 1][steps - first]
