"""What the policy node checks at configure time, before it subscribes to anything."""
from __future__ import annotations

import importlib
from typing import Any

from mvp_ros.data.contract import Contract
from mvp_ros.data.contract_diff import compare_contracts


class ConfigurationError(ValueError):
    """A checkpoint, contract or parameter that the node cannot run with."""


def check_policy_against_contract(policy: Any, contract: Contract, contract_path: str, *, control_rate_hz: float,
                                  allow_without_contract: bool) -> list[str]:
    """The checkpoint's observation keys and shapes, and its action size, must fit the contract; and the
    contract stored in the checkpoint (that of its training data) must mean what the deployed one means.

    The contract given to the node is the source of truth for topics and timing. Every difference from
    the stored contract that changes what the policy reads or commands (mvp_ros.data.contract_diff) is
    refused, all of them in one error. Returns notes for the node to log: the differences that keep the
    meaning, or, for a checkpoint without a contract run with `allow_without_contract`, that nothing
    could be checked.
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
    if not stored:
        if allow_without_contract:
            return [f"{checkpoint} carries no contract, so contract {contract_path} could not be checked against"
                    " the data it was trained on (allow_checkpoint_without_contract is true)"]
        raise ConfigurationError(
            f"{checkpoint} carries no contract (its config.json has \"contract\": null), so contract {contract_path}"
            " cannot be checked against the data it was trained on; set the node parameter"
            " allow_checkpoint_without_contract:=true to run it anyway"
        )
    trained = Contract.from_dict(stored, source=f"{checkpoint}/config.json contract")
    diff = compare_contracts(trained, contract, policy.config.obs_shapes, control_rate_hz)
    if diff.refused:
        raise ConfigurationError(
            f"contract {contract_path} differs from the contract {checkpoint} was trained with in ways that change"
            " what the policy reads or commands:\n" + "\n".join(f"  {difference}" for difference in diff.refused)
        )
    return [f"contract {contract_path} differs from the contract {checkpoint} was trained with, keeping the meaning:"
            f" {difference}" for difference in diff.allowed]


def import_tf2_ros(keys: list[str]) -> Any:
    try:
        return importlib.import_module("tf2_ros")
    except ImportError as error:
        raise ConfigurationError(
            f"observation(s) {keys} are tf sources, which need the tf2_ros package; tf2_ros is not installed"
            " here (it is not on PyPI: source a ROS 2 installation that provides it)"
        ) from error
