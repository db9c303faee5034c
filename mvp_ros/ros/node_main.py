"""What the node commands (`mvp policy-node`, `mvp sim-node`, `mvp record`) share: `--ros-args` and signals."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from mvp_ros.ros.parameters import check_params_files


def add_ros_args_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ros-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="ROS arguments, e.g. --ros-args --params-file config/policy_node.yaml -p use_sim_time:=true",
    )


def overrides(given: dict[str, object]) -> list[Parameter]:
    """Command-line options that were given, as node parameters (they win over --ros-args)."""
    return [Parameter(name, value=value) for name, value in given.items() if value is not None]


@contextmanager
def ros_context(program: str, ros_args: list[str], node_name: str) -> Iterator[threading.Event]:
    """rclpy initialised with the `--ros-args` part, once its parameters files are known to have a
    section for the node `node_name`; the event is set by SIGINT or SIGTERM."""
    check_params_files(ros_args, node_name)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=[program, "--ros-args", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    try:
        yield stop
    finally:
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def console_main(command: str) -> Callable[[], int]:
    """The console script of a node (`ros2 run mvp_ros policy_node ...`): runs `mvp COMMAND ...`."""

    def main() -> int:
        from mvp_ros.cli import main as mvp_main

        return mvp_main([command, *sys.argv[1:]])

    return main
