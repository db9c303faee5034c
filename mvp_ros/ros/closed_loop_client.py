"""The ROS side of `mvp demo`: a node that waits for the simulation and policy nodes, starts
episodes through the simulation's `~/reset` service, collects `~/episode_result`, and reads the
policy node's diagnostics."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState
from std_srvs.srv import Trigger

from mvp_ros.data.contract import load_contract
from mvp_ros.ros.diagnostics import values_of
from mvp_ros.ros.parent_node import ParentNode
from mvp_ros.ros.qos import EVENT_QOS, RELIABLE_QOS


class ClosedLoopClient(ParentNode):
    def __init__(self, domain_id: int, contract_path: Path, policy_status: str, logs: dict[str, Path]) -> None:
        super().__init__("mvp_demo", domain_id, logs)
        self.contract = load_contract(contract_path)
        self.policy_status = policy_status
        self.results: list[dict[str, Any]] = []
        self.policy_values: dict[str, str] = {}
        self.node.create_subscription(DiagnosticStatus, "/mvp_sim/episode_result", self._on_result, EVENT_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE_QOS)
        self.reset_client = self.node.create_client(Trigger, "/mvp_sim/reset")
        self.state_client = self.node.create_client(GetState, "/mvp_policy/get_state")

    def _on_result(self, msg: DiagnosticStatus) -> None:
        values = values_of(msg)
        self.results.append({"seed": int(values["seed"]), "success": values["success"] == "True",
                             "steps": int(values["steps"]), "held_steps": int(values["held_steps"]), "outcome": msg.message})

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.policy_status:
                self.policy_values = values_of(status)

    def wait_until_ready(self, nodes: dict[str, subprocess.Popen], timeout_s: float) -> None:
        """The policy node active, the simulation's reset service up, and every topic of the loop
        with a publisher and a subscriber (so the first observations of an episode are not lost)."""
        deadline = time.monotonic() + timeout_s
        self.spin_until(self.state_client.service_is_ready, timeout_s, "the policy node's lifecycle services", nodes)
        while True:
            future = self.state_client.call_async(GetState.Request())
            state = self.spin_until(lambda: future.done() and future.result(), deadline - time.monotonic(),
                                    "the policy node's state", nodes).current_state
            if state.id == State.PRIMARY_STATE_ACTIVE:
                break
            self.pause(0.2, nodes)
        self.spin_until(self.reset_client.service_is_ready, deadline - time.monotonic(), "the simulation's reset service", nodes)
        self.wait_for_endpoints([*self.contract.topics(), "/clock"], deadline - time.monotonic(), nodes)
        self.pause(0.5, nodes)  # discovery reached this node; give the nodes' endpoints a moment to match each other

    def pause(self, seconds: float, nodes: dict[str, subprocess.Popen]) -> None:
        end = time.monotonic() + seconds
        self.spin_until(lambda: time.monotonic() >= end, seconds + 1.0, "a pause", nodes)

    def run_episode(self, nodes: dict[str, subprocess.Popen], timeout_s: float) -> dict[str, Any]:
        done_before = len(self.results)
        future = self.reset_client.call_async(Trigger.Request())
        self.spin_until(future.done, 30.0, "the simulation to start an episode", nodes)
        self.spin_until(lambda: len(self.results) > done_before, timeout_s, "the episode to finish", nodes)
        return self.results[-1]

    def policy_diagnostics(self, min_ticks: int, nodes: dict[str, subprocess.Popen]) -> dict[str, str]:
        """The policy node's diagnostics once they count at least `min_ticks` ticks."""
        self.policy_values = {}
        return self.spin_until(
            lambda: self.policy_values if int(self.policy_values.get("ticks", -1)) >= min_ticks else None,
            10.0, f"policy diagnostics with {min_ticks} ticks", nodes)
