"""Node processes for the commands that run nodes as children (`mvp demo`, `mvp bench`) and for the
node tests: on a DDS domain of their own, started as `mvp ...` with the output to a log file, stopped
with SIGINT (what Ctrl-C sends) or the signal that stopped the parent, so they publish their safe
action and exit cleanly."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

STOP_TIMEOUT_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, as KeyboardInterrupt, so that no `except Exception`
    on its way up (in rclpy or a wait loop) swallows it."""


class StopSignals:
    """A context in which SIGINT and SIGTERM are caught: the first is kept in `received` and, while
    `raising`, raised as StopSignal in the main thread; later ones are ignored, so stopping the
    children after it (bounded anyway) is never cut short and none is left running."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.raising = True

    def __enter__(self) -> "StopSignals":
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exception) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
            if self.raising:
                raise StopSignal(signal.Signals(signum).name)


def isolated_ros_environment(domain_id: str | None = None) -> dict[str, str]:
    """This environment on a DDS domain of its own (random unless given), discovery on this host only."""
    return os.environ | {
        "ROS_DOMAIN_ID": domain_id or str(random.SystemRandom().randint(1, 100)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }


def start_node_process(arguments: list[str], env: dict[str, str], log: Path,
                       prefix: Sequence[str] = ()) -> subprocess.Popen:
    """`mvp ARGUMENTS...` in a child process, run through the command `prefix` if given (such as
    prlimit or setpriv, which change the rights it runs with), stdout and stderr to `log`."""
    with log.open("w") as output:  # the child keeps its own descriptor
        return subprocess.Popen([*prefix, sys.executable, "-m", "mvp_ros.cli", *arguments], env=env,
                                stdout=output, stderr=subprocess.STDOUT)


def stop_node_processes(processes: dict[str, subprocess.Popen], sig: int = signal.SIGINT,
                        timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int]:
    """Send `sig` to every process still running, wait for them all up to `timeout_s`, then SIGKILL
    those still running; each one's exit status (negative: ended by that signal)."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(sig)
    deadline = time.monotonic() + timeout_s
    statuses = {}
    for name, process in processes.items():
        try:
            statuses[name] = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            statuses[name] = process.wait()
    return statuses


def stop_node_process(process: subprocess.Popen) -> int:
    """SIGINT, then SIGKILL after 30 s; the exit status."""
    return stop_node_processes({"node": process})["node"]
