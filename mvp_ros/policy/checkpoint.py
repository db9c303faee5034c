"""Checkpoints: a directory with `model.safetensors` (weights) and `config.json` (everything else).

config.json holds the format version, the `PolicyConfig`, the normalization statistics, the
observation contract and simulator `env_args` when known, training metadata, library versions,
and the SHA-256 of model.safetensors, so a corrupted or swapped weights file is caught on load.
Loading never executes code from the checkpoint (no pickle).
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from .. import __version__
from .checkpoint_files import (CONFIG_FILE, FORMAT, FORMAT_VERSION, WEIGHTS_FILE, CheckpointError,
                               read_checkpoint_document)
from .config import ConfigError, PolicyConfig
from .model import ChunkPolicyModel
from .normalizer import Normalization

@dataclass
class CheckpointInfo:
    directory: Path
    config: PolicyConfig
    normalization: Normalization
    weights_sha256: str
    env_args: dict | None = None
    contract: dict | None = None
    training: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(directory: str | Path, model: ChunkPolicyModel, normalization: Normalization, *,
                    env_args: dict | None = None, contract: dict | None = None,
                    training: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "policy": model.config.to_dict(),
        "normalization": normalization.to_dict(),
        "env_args": env_args,
        "contract": contract,
        "training": training or {},
        "versions": {"mvp_ros": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "weights_sha256": _sha256(weights),
    }
    temporary = directory / (CONFIG_FILE + ".partial")
    temporary.write_text(json.dumps(document, indent=2))
    temporary.replace(directory / CONFIG_FILE)
    return directory


def read_checkpoint_info(directory: str | Path) -> CheckpointInfo:
    """Reads and validates config.json alone (cheap: no weights are loaded)."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    document = read_checkpoint_document(directory)
    try:
        config = PolicyConfig.from_dict(document["policy"])
        normalization = Normalization.from_dict(document["normalization"])
    except (ConfigError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: invalid policy or normalization entry: {error}") from None
    _check_normalization(config, normalization, config_path)
    return CheckpointInfo(directory=directory, config=config, normalization=normalization,
                          weights_sha256=str(document["weights_sha256"]), env_args=document.get("env_args"),
                          contract=document.get("contract"),
                          training=document.get("training") or {}, versions=document.get("versions") or {})


def _finite_numbers(values: list) -> bool:
    return all(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
               for value in values)


def _check_normalization(config: PolicyConfig, normalization: Normalization, config_path: Path) -> None:
    """Lengths that fit the architecture, finite numbers, positive std, action_min <= action_max."""
    for name in ("action_min", "action_max"):
        if len(getattr(normalization, name)) != config.action_dim:
            raise CheckpointError(f"{config_path}: normalization.{name} has {len(getattr(normalization, name))} "
                                  f"values for action_dim {config.action_dim}")
    for key in config.lowdim_keys:
        for stats in (normalization.obs_mean, normalization.obs_std):
            if len(stats.get(key, ())) != config.obs_shapes[key][0]:
                raise CheckpointError(f"{config_path}: normalization statistics for observation {key!r} "
                                      f"do not match its shape {config.obs_shapes[key]}")
    statistics = {"action_min": normalization.action_min, "action_max": normalization.action_max}
    for key in config.lowdim_keys:
        statistics[f"obs_mean[{key!r}]"] = normalization.obs_mean[key]
        statistics[f"obs_std[{key!r}]"] = normalization.obs_std[key]
    for name, values in statistics.items():
        if not _finite_numbers(values):
            raise CheckpointError(f"{config_path}: normalization.{name} holds values that are not finite numbers: {values}")
        if name.startswith("obs_std") and min(values) <= 0:
            raise CheckpointError(f"{config_path}: normalization.{name} must be positive, got {values}")
    if any(low > high for low, high in zip(normalization.action_min, normalization.action_max)):
        raise CheckpointError(f"{config_path}: normalization.action_max {normalization.action_max} "
                              f"is below action_min {normalization.action_min}")


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[ChunkPolicyModel, CheckpointInfo]:
    info = read_checkpoint_info(directory)
    weights = info.directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    if _sha256(weights) != info.weights_sha256:
        raise CheckpointError(f"{weights} does not match the SHA-256 recorded in {CONFIG_FILE}: "
                              "the file is corrupted, truncated or from another checkpoint")
    # Shapes first, from the safetensors header and a model without storage, so weights that do
    # not fit config.json are refused before either is allocated.
    _check_shapes(weights, _stored_shapes(weights), _architecture_shapes(info))
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights} cannot be read as safetensors: {error}") from None
    model = ChunkPolicyModel(info.config, info.normalization)
    model.load_state_dict(state)
    return model.to(device).eval(), info


def _stored_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from the file's header; no tensor is read."""
    try:
        with safe_open(str(weights), framework="pt") as stored:
            return {name: tuple(stored.get_slice(name).get_shape()) for name in stored.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights} cannot be read as safetensors: {error}") from None


class _ParametersOnMeta(TorchFunctionMode):
    """`torch.empty`, with which nn.Linear, nn.Conv2d and nn.GroupNorm create their parameters, on
    the meta device (a shape, no storage); every other call as usual, so the small buffers a model
    computes while it is built stay on the CPU: arithmetic on meta tensors imports torch._dynamo,
    which takes seconds."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _architecture_shapes(info: CheckpointInfo) -> dict[str, tuple[int, ...]]:
    """The weights' shapes that config.json's architecture needs, from a model whose parameters
    have no storage."""
    with _ParametersOnMeta():
        model = ChunkPolicyModel(info.config, info.normalization)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _check_shapes(weights: Path, stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit the architecture in {CONFIG_FILE}: "
                              f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    for name, shape in expected.items():
        if stored[name] != shape:
            raise CheckpointError(f"{weights}: tensor {name!r} has shape {stored[name]}, "
                                  f"the architecture in {CONFIG_FILE} needs {shape}")
