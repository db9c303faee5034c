"""Robomimic-format HDF5: writing episodes, reading metadata, and the training dataset.

Layout (the one robomimic 0.3.0 reads):

    data/                  attrs: total (sum of num_samples), env_args (JSON string, optional)
    data/demo_<i>/         attrs: num_samples, plus per-episode attrs (e.g. model_file)
        obs/<key>          (T, *shape)   low-dim float, images uint8 (T, H, W, C)
        next_obs/<key>     (T, *shape)   optional
        actions            (T, A)
        rewards, dones     (T,)
        states             (T, S)        optional simulator states
    mask/train, mask/valid demo names as fixed-length bytes
    file attrs             provenance; non-scalar values JSON-encoded
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np


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
        obs={key: (np.asarray(a).shape[1:], np.asarray(a).dtype) for key, a in episode.obs.items()},
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
    obs = {key: np.asarray(array) for key, array in episode.obs.items()}
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
        next_obs = {key: np.asarray(array) for key, array in episode.next_obs.items()}
        _check_obs(index, "next_obs", next_obs, schema, length)
        arrays.update({f"next_obs/{key}": array for key, array in next_obs.items()})
    return arrays


def _write_demo(group: h5py.Group, arrays: dict[str, np.ndarray], compression: str | None) -> None:
    for name, array in arrays.items():
        if compression is not None and is_image(array):
            group.create_dataset(
                name, data=array, compression=compression, chunks=(1, *array.shape[1:])
            )
        else:
            group.create_dataset(name, data=array)


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
) -> Path:
    """Write episodes (consumed one at a time) to a Robomimic-format HDF5 file.

    `compression` applies to image observations only. The file is written under a temporary
    name and renamed at the end, so an interrupted write never leaves a partial file at `path`.
    Raises DatasetError naming the episode index and key for inconsistent or non-finite data.
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
            for key, value in (attrs or {}).items():
                file.attrs[key] = encode_attr(value)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open a dataset read-only, turning missing/unreadable files into DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{path}: not a readable HDF5 file ({error})") from error


def read_env_args(path: str | os.PathLike) -> dict | None:
    """The environment description stored in data.attrs['env_args'], or None if absent."""
    with open_hdf5(path) as file:
        if "data" not in file:
            raise DatasetError(f"{path}: no 'data' group (not a Robomimic-format file)")
        raw = file["data"].attrs.get("env_args")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: data.attrs['env_args'] is not valid JSON ({error})") from error


def read_file_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """File-level provenance attrs, JSON-encoded values decoded."""
    with open_hdf5(path) as file:
        return {key: decode_attr(value) for key, value in file.attrs.items()}
