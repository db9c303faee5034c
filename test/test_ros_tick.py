"""The ROS tick benchmark (mvp_ros/bench/ros_tick.py) on a contract whose action goes to two command
topics: a tick counts as answered once both outputs' commands for it have arrived."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mvp_ros.bench.ros_tick import NodeSettings, TickDriver, TickSetup, bench_contract, measure, write_bench_policy
from mvp_ros.data.contract import Contract


@pytest.mark.slow
def test_the_node_is_driven_and_timed_with_the_action_split_over_two_outputs(tmp_path: Path) -> None:
    checkpoint, contract = write_bench_policy(tmp_path, images=False, width=32, depth=2, rate_hz=20.0, split_action=True)
    topics = [output["topic"] for output in yaml.safe_load(contract.read_text())["action"]["outputs"]]
    assert topics == ["/policy/command", "/policy/command/gripper"]
    row = measure(TickSetup("lowdim", 20.0, 2.0), checkpoint, contract, NodeSettings(execution="eager"), tmp_path)
    assert row["ticks"] == 40 and row["node_exit_code"] == 0
    # every tick the node ran was answered on both topics with a policy command, none held
    assert row["node_ticks"] == row["node_commands"] == row["commands_received"] > 0 and row["node_holds"] == 0
    assert 0 < row["command_published_p50_ms"] <= row["p50_ms"] <= row["callback_p50_ms"]


def test_an_output_without_a_stamp_is_refused_by_name() -> None:
    contract = bench_contract(images=False, rate_hz=20.0, split_action=True)
    contract["action"]["outputs"][1]["type"] = "std_msgs/msg/Float64MultiArray"
    with pytest.raises(ValueError, match=r"action\[1\] \(/policy/command/gripper\) is std_msgs/msg/Float64MultiArray, "
                                         r"not trajectory_msgs/msg/JointTrajectory"):
        TickDriver(Contract.from_dict(contract), domain_id=0, log=Path("unused.log"))
