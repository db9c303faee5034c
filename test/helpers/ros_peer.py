"""Test-side plumbing for the ROS node tests: node processes on a DDS domain of their own (started
and stopped as the package's commands do, mvp_ros.ros.node_process), and a peer node in the test
process (its own rclpy context, spun on a background thread) that publishes, records what arrives,
and calls services. Everything goes over real Fast DDS between processes.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from mvp_ros.ros.diagnostics import values_of
from mvp_ros.ros.node_process import isolated_ros_environment, start_node_process, stop_node_processes

REPO = Path(__file__).resolve().parents[2]
MVP = [sys.executable, "-m", "mvp_ros.cli"]


def domain_environment() -> dict[str, str]:
    """A DDS domain of this test module's own (101-200), kept on this machine, with offscreen rendering."""
    return isolated_ros_environment(str(random.SystemRandom().randint(101, 200))) | {
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }


class NodeProcess:
    """`mvp <command> ...` as a child process, run through `prefix` (a command such as setpriv) if
    given; its output goes to a file (no pipe to fill up)."""

    def __init__(self, arguments: list[str], env: dict[str, str], log: Path, prefix: Sequence[str] = ()) -> None:
        self.log = log
        self.popen = start_node_process(arguments, env, log, prefix)

    def output(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 30.0) -> int:
        """Send `sig`, wait up to `timeout_s`; the exit status. A process still running then is killed
        and fails the test."""
        status = stop_node_processes({"node": self.popen}, sig, timeout_s)["node"]
        if status == -signal.SIGKILL and sig != signal.SIGKILL:
            raise AssertionError(f"{self.popen.args} did not stop within {timeout_s} s:\n{self.output()}")
        return status


class Peer:
    """One rclpy node in the test process on the domain of `env`."""

    def __init__(self, env: dict[str, str], name: str = "test_peer") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[float, Any]]] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - the context shut down under the executor
                if self.context.ok():
                    raise

    def record(self, message_type: type, topic: str, reliable: bool = True, qos: QoSProfile | None = None) -> None:
        """Keep every message on `topic` with its arrival time (time.monotonic())."""
        self.received[topic] = []
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        profile = qos or QoSProfile(depth=1000, reliability=reliability)

        def keep(msg: Any) -> None:
            with self.lock:
                self.received[topic].append((time.monotonic(), msg))

        self.node.create_subscription(message_type, topic, keep, profile)

    def messages(self, topic: str, since: float = 0.0) -> list[Any]:
        with self.lock:
            return [msg for arrived, msg in self.received[topic] if arrived >= since]

    def wait_for(self, condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def wait_for_messages(self, topic: str, count: int, timeout_s: float, since: float = 0.0) -> list[Any]:
        return self.wait_for(lambda: len(self.messages(topic, since)) >= count and self.messages(topic, since),
                             timeout_s, f"{count} messages on {topic}")

    def diagnostics(self, name: str, since: float = 0.0) -> dict[str, str] | None:
        """The newest /diagnostics status called `name` that arrived after `since` (record /diagnostics first)."""
        for msg in reversed(self.messages("/diagnostics", since)):
            for status in msg.status:
                if status.name == name:
                    return values_of(status)
        return None

    def fresh_diagnostics(self, name: str, timeout_s: float = 5.0) -> dict[str, str]:
        """A status published after this call (diagnostics come once a second)."""
        since = time.monotonic()
        return self.wait_for(lambda: self.diagnostics(name, since), timeout_s, f"diagnostics {name!r}")

    def call(self, service_type: type, name: str, request: Any = None, timeout_s: float = 20.0) -> Any:
        client = self.node.create_client(service_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise AssertionError(f"service {name} did not appear within {timeout_s} s")
            future = client.call_async(request or service_type.Request())
            self.wait_for(future.done, timeout_s, f"a response from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.context.try_shutdown()
        self._thread.join(timeout=5)
