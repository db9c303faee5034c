"""Node processes for the commands that run nodes as children (`mvp demo`, `mvp bench`): started as
`mvp ...` with the output to a log file, stopped with SIGINT (what Ctrl-C sends) so they publish
their safe action and exit cleanly."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path


def isolated_ros_environment(domain_id: str | None = None) -> dict[str, str]:
    """This environment on a DDS domain of its own (random unless given), discovery on this host only."""
    return os.environ | {
        "ROS_DOMAIN_ID": domain_id or str(random.SystemRandom().randint(1, 100)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }


def start_node_process(arguments: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`mvp ARGUMENTS...` in a child process, stdout and stderr to `log`."""
    with log.open("w") as output:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "mvp_ros.cli", *arguments], env=env,
                                stdout=output, stderr=subprocess.STDOUT)


def stop_node_process(process: subprocess.Popen) -> int:
    """SIGINT, then SIGKILL after 30 s; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
