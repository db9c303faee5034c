"""What the policy node checks at configure time, before it subscribes to anything."""
from __future__ import annotations

import importlib
from typing import Any

from mvp_ros.data.contract import Contract


class ConfigurationError(ValueError):
    """A checkpoint, contract or parameter that the node cannot run with."""


def check_policy_against_contract(policy: Any, contract: Contract, contract_path: str) -> None:
    """The checkpoint's observation keys and shapes, and its action size, must fit the contract.

    The contract given to the node is the source of truth; a contract stored in the checkpoint (the
    one it was trained with) must agree with it on the policy's keys, their shapes and the action names.
    """
    checkpoint = str(policy.info.directory) if policy.info else "the checkpoint"
    for key, shape in policy.config.obs_shapes.items():
        spec = contract.observations.get(key)
        if spec is None:
            raise ConfigurationError(
                f"{checkpoint} needs observation {key!r}, which contract {contract_path} does not define"
                f" (it defines {sorted(contract.observations)})"
            )
        if tuple(spec.shape) != tuple(shape):
            raise ConfigurationError(
                f"observation {key!r}: {checkpoint} was trained on shape {tuple(shape)}, contract {contract_path}"
                f" gives shape {tuple(spec.shape)}"
            )
    if policy.config.action_dim != len(contract.action.names):
        raise ConfigurationError(
            f"{checkpoint} produces {policy.config.action_dim} action dims, contract {contract_path} has"
            f" {len(contract.action.names)} ({list(contract.action.names)})"
        )
    stored = policy.info.contract if policy.info else None
    if stored:
        _check_stored_contract(Contract.from_dict(stored, source=f"{checkpoint}/config.json contract"),
                               contract, policy.config.obs_shapes, checkpoint, contract_path)


def _check_stored_contract(trained: Contract, contract: Contract, keys: dict, checkpoint: str, contract_path: str) -> None:
    for key in keys:
        spec = trained.observations.get(key)
        if spec is None:
            raise ConfigurationError(f"observation {key!r} is missing from the contract stored in {checkpoint}")
        if spec.shape != contract.observations[key].shape:
            raise ConfigurationError(
                f"observation {key!r} has shape {spec.shape} in the contract stored in {checkpoint},"
                f" {contract.observations[key].shape} in contract {contract_path}"
            )
    if trained.action.names != contract.action.names:
        raise ConfigurationError(
            f"action names differ: {checkpoint} was trained with {list(trained.action.names)},"
            f" contract {contract_path} has {list(contract.action.names)}"
        )


def import_tf2_ros(keys: list[str]) -> Any:
    try:
        return importlib.import_module("tf2_ros")
    except ImportError as error:
        raise ConfigurationError(
            f"observation(s) {keys} are tf sources, which need the tf2_ros package; tf2_ros is not installed"
            " here (it is not on PyPI: source a ROS 2 installation that provides it)"
        ) from error
