"""The node of a command that runs nodes as children (`mvp demo`, `mvp bench`): its own rclpy context
on the children's DDS domain, spun until a condition holds, failing with a clear error (and the
child's log) when a child exits or the wait times out."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor

LOG_TAIL_CHARS = 3000


class NodeProcessError(RuntimeError):
    """A child node exited, or a wait for it timed out; the message says which, with its log."""


class ParentNode:
    def __init__(self, name: str, domain_id: int, logs: dict[str, Path]) -> None:
        """`logs`: each child node's log file, by the name `spin_until`'s `nodes` give it."""
        self.logs = logs
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition: Callable[[], Any], timeout_s: float, what: str,
                   nodes: dict[str, subprocess.Popen]) -> Any:
        """Spin until `condition()` is truthy and return it; raise if a child exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if result := condition():
                return result
            for name, process in nodes.items():
                if process.poll() is not None:
                    raise NodeProcessError(f"the {name} node exited (status {process.returncode}) while waiting for"
                                           f" {what}; its log ends:\n{self.logs[name].read_text()[-LOG_TAIL_CHARS:]}")
            self.executor.spin_once(timeout_sec=0.05)
        raise NodeProcessError(f"timed out after {timeout_s:.0f} s waiting for {what}; node logs: {self.logs}")

    def wait_for_endpoints(self, topics: list[str], timeout_s: float, nodes: dict[str, subprocess.Popen]) -> None:
        """Every topic with a publisher and a subscriber, so what is sent from now on is not lost to discovery."""
        self.spin_until(lambda: all(self.node.count_publishers(t) and self.node.count_subscribers(t) for t in topics),
                        timeout_s, f"publishers and subscribers on {topics}", nodes)

    def close(self) -> None:
        self.node.destroy_node()
        self.context.try_shutdown()
