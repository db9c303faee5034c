"""`mvp policy-node` at configure: the contract it is given against the contract stored in the
checkpoint (that of the data it was trained on). A difference that changes what the policy reads or
commands ends the command with status 2 and names every such difference; a checkpoint without a
contract runs only with `allow_checkpoint_without_contract:=true`."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from mvp_ros.cli import main as mvp_main

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import NodeProcess, Peer, domain_environment  # noqa: E402
from tiny_policy import LIFT_LOWDIM_SHAPES, PANDA_SIM_CONTRACT, write_tiny_checkpoint  # noqa: E402

OBS_SHAPES = LIFT_LOWDIM_SHAPES | {"robot0_joint_pos": (7,)}


def swapped(names: list[str], first: str, second: str) -> list[str]:
    return [second if name == first else first if name == second else name for name in names]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def configure(tmp_path: Path, capsys, checkpoint: Path, contract: dict, *parameters: str) -> tuple[int, str]:
    """Runs the node in this process; a refused configure returns at once with status 2."""
    contract_path = write_yaml(tmp_path / "contract.yaml", contract)
    status = mvp_main(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract_path), "--device",
                       "cpu", "--ros-args", "-p", "autostart:=true", "-p", "warmup_iterations:=0", *parameters])
    return status, capsys.readouterr().err


def test_swapped_arm_joints_and_action_names_are_refused_naming_both(tmp_path, capsys) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "panda", OBS_SHAPES, contract=PANDA_SIM_CONTRACT)
    contract = copy.deepcopy(PANDA_SIM_CONTRACT)
    arm = contract["observations"]["robot0_joint_pos"]
    arm["joints"] = swapped(arm["joints"], "robot0_joint1", "robot0_joint2")
    contract["action"]["names"] = swapped(contract["action"]["names"], "dx", "dy")
    status, error = configure(tmp_path, capsys, checkpoint, contract)
    assert status == 2
    assert (f"mvp policy-node: error: contract {tmp_path / 'contract.yaml'} differs from the contract {checkpoint} was"
            " trained with in ways that change what the policy reads or commands:") in error
    assert "  observation 'robot0_joint_pos': joints 'robot0_joint1' and 'robot0_joint2' are swapped" in error
    assert "  action: names 'dx' and 'dy' are swapped" in error


def test_another_control_rate_is_refused(tmp_path, capsys) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "panda", contract=PANDA_SIM_CONTRACT)
    status, error = configure(tmp_path, capsys, checkpoint, PANDA_SIM_CONTRACT, "-p", "control_rate_hz:=50.0")
    assert status == 2
    assert "  control rate: 20 Hz in training, 50 Hz deployed" in error


def test_a_checkpoint_without_a_contract_is_refused(tmp_path, capsys) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "no_contract")
    status, error = configure(tmp_path, capsys, checkpoint, PANDA_SIM_CONTRACT)
    assert status == 2
    assert (f"mvp policy-node: error: {checkpoint} carries no contract (its config.json has \"contract\": null), so"
            f" contract {tmp_path / 'contract.yaml'} cannot be checked against the data it was trained on; set the node"
            " parameter allow_checkpoint_without_contract:=true to run it anyway") in error


@pytest.mark.slow
def test_a_checkpoint_without_a_contract_runs_when_allowed_and_says_so(tmp_path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "no_contract")
    contract = write_yaml(tmp_path / "contract.yaml", PANDA_SIM_CONTRACT)
    env = domain_environment()
    process = NodeProcess(["policy-node", "--checkpoint", str(checkpoint), "--contract", str(contract),
                           "--device", "cpu", "--ros-args", "-p", "warmup_iterations:=0",
                           "-p", "allow_checkpoint_without_contract:=true"], env, tmp_path / "policy_node.log")
    peer = Peer(env)
    try:
        peer.wait_for(lambda: "active: ticking" in process.output() or not process.alive(), 60, "the node to activate")
    finally:
        peer.close()
        assert process.stop() == 0, process.output()
    assert "active: ticking" in process.output()
    assert (f"{checkpoint} carries no contract, so contract {contract} could not be checked against the data it was"
            " trained on (allow_checkpoint_without_contract is true)") in process.output()
