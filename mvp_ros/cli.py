"""The `mvp` command: one console script, one module per subcommand.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`. Errors from bad
input end the command with their message and exit status 2 (set MVP_DEBUG=1 for a traceback). Modules are
imported only when their subcommand runs, so `mvp --help` stays fast and `mvp train` never
imports rclpy.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("mvp_ros.training.command", "train a policy on a Robomimic-format HDF5 dataset"),
    "bag2hdf5": ("mvp_ros.data.bag2hdf5", "convert rosbag2 bags to Robomimic-format HDF5 through an observation contract"),
    "merge": ("mvp_ros.data.merge", "merge Robomimic-format HDF5 files of one task (several recording sessions or demo runs)"),
    "demos": ("mvp_ros.sim.write_demos", "write scripted-expert robosuite demonstrations to Robomimic-format HDF5"),
    "bench": ("mvp_ros.bench.command",
              "inference latency of every head, the policy node's ROS tick and training cost, side by side (JSON, plot)"),
    "eval": ("mvp_ros.sim.evaluate", "success rate of a checkpoint in its MuJoCo simulation (seeded episodes, JSON, video)"),
    "record": ("mvp_ros.ros.recorder_node", "record an observation contract's topics to a rosbag2 bag (MCAP)"),
    "policy-node": ("mvp_ros.ros.policy_node", "run a policy as a ROS 2 lifecycle node on the contract's topics"),
    "sim-node": ("mvp_ros.ros.sim_node", "run the robosuite simulation as a ROS 2 node publishing the contract's topics"),
    "demo": ("mvp_ros.ros.closed_loop",
             "closed-loop demo: the simulation and policy nodes over DDS, success rate and tick latency"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvp", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except (ValueError, RuntimeError, OSError, KeyError) as error:
        # Bad input (files, settings, checkpoints) ends with its message, not a traceback;
        # MVP_DEBUG=1 shows the traceback.
        if os.environ.get("MVP_DEBUG"):
            raise
        print(f"mvp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
