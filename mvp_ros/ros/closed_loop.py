"""`mvp demo`: the policy closing the loop over ROS 2, with no ROS install.

Starts the simulation bridge (`mvp sim-node`, lockstep) and the policy node (`mvp policy-node`,
on sim time) as two processes on a DDS domain of their own, runs seeded episodes through the
topics, and prints the success rate and the policy node's tick latency (observation ready ->
command published, from its diagnostics). Episode i uses seed SEED + i for the environment and
the policy's sampling noise, as `mvp eval` does, so the two can be compared episode by episode.

The topics are those of a contract of the simulated Panda: config/panda_sim_camera_contract.yaml
(joints, end-effector pose, two cameras, no simulator state) for a policy that reads images,
config/panda_sim_contract.yaml otherwise, or `--contract`. The policy node checks it against the
contract stored in the checkpoint, as on a robot.

    mvp demo --checkpoint models/lift_image --episodes 10 --json demo.json
    mvp demo --checkpoint models/lift_image --contract config/panda_sim_camera_compressed_contract.yaml
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mvp_ros.data.contract import CompressedImageObservation, Contract, ImageObservation, load_contract
from mvp_ros.resources import package_file
from mvp_ros.ros.node_process import (STOP_TIMEOUT_S, StopSignal, StopSignals, isolated_ros_environment,
                                      start_node_process, stop_node_processes)
from mvp_ros.ros.sim_messages import COMPRESSED_IMAGE_FORMATS
from mvp_ros.sim.success import wilson_interval

DEFAULT_CHECKPOINT = str(package_file("models", "lift_image"))
DEFAULT_CONTRACT = str(package_file("config", "panda_sim_contract.yaml"))
DEFAULT_CAMERA_CONTRACT = str(package_file("config", "panda_sim_camera_contract.yaml"))
POLICY_STATUS = "mvp_policy: control"
EPISODE_START_TOPIC = "/mvp_sim/episode_start"
STARTUP_TIMEOUT_S = 180.0
STEP_TIMEOUT_S = 2.0  # the simulation's lockstep wait: a missing command holds after this long
# The policy node's watchdog (steady clock). In lockstep the simulation sets the pace: rendering two
# cameras on a loaded machine took longer than the default five periods (250 ms) between commands,
# and a watchdog hold discards the temporal ensemble's plans mid-episode, so the episode drifted
# from `mvp eval`'s. A silent policy is caught by the simulation's own wait, as long as this.
WATCHDOG_TIMEOUT_S = STEP_TIMEOUT_S
# How long the nodes get to exit after a SIGINT/SIGTERM is passed on, before SIGKILL: they took 2-5 s
# on a busy host (most of it the interpreter's and libraries' teardown after the node stopped), and
# more than 10 s once under a full test run on two shared cores.
SIGNAL_STOP_TIMEOUT_S = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=Path(DEFAULT_CHECKPOINT),
                        help="policy checkpoint with env_args (default: the shipped camera policy models/lift_image)")
    parser.add_argument("--contract", type=Path,
                        help="observation contract (default: the shipped config/panda_sim_camera_contract.yaml for a"
                             " policy that reads images, config/panda_sim_contract.yaml otherwise)")
    parser.add_argument("--compressed-image-format", choices=COMPRESSED_IMAGE_FORMATS, default="png",
                        help="how the simulation encodes the contract's sensor_msgs/CompressedImage keys: png"
                             " (lossless, default) or jpeg (lossy)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to run (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses seed SEED + i (default 0)")
    parser.add_argument("--max-steps", type=int, default=0, help="steps per episode (default: the environment's horizon)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="policy device (default auto)")
    parser.add_argument("--temporal-ensemble", action="store_true",
                        help="the policy node averages overlapping chunks every tick (as `mvp eval --temporal-ensemble`)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--log-dir", type=Path, help="keep the nodes' logs here (default: a temporary directory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def run(args: argparse.Namespace) -> int:
    """0: done; 1: a node exited with an error at the end; 128 + signal number: stopped by SIGINT
    or SIGTERM, which is passed on to the nodes."""
    max_steps, contract_path, contract = _check_arguments(args)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="mvp_demo_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = isolated_ros_environment(os.environ.get("MVP_DEMO_DOMAIN_ID")) | {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    common = ["--checkpoint", str(args.checkpoint), "--contract", str(contract_path)]
    cameras = _camera_messages(contract, args.compressed_image_format)
    logs = {"sim": log_dir / "sim_node.log", "policy": log_dir / "policy_node.log"}
    nodes: dict[str, subprocess.Popen] = {}
    with StopSignals() as signals:
        try:
            nodes["sim"] = start_node_process(
                ["sim-node", *common, "--seed", str(args.seed), "--ros-args",
                 "-p", f"max_steps:={max_steps}", "-p", f"lockstep_timeout_s:={STEP_TIMEOUT_S}",
                 "-p", f"compressed_image_format:={args.compressed_image_format}"], env, logs["sim"])
            nodes["policy"] = start_node_process(
                ["policy-node", *common, "--device", args.device, "--ros-args",
                 "-p", "use_sim_time:=true", "-p", f"reset_topic:={EPISODE_START_TOPIC}", "-p", "inference_timeout_s:=1.0",
                 "-p", f"watchdog_timeout_s:={WATCHDOG_TIMEOUT_S}",
                 "-p", f"temporal_ensemble:={str(args.temporal_ensemble).lower()}"], env, logs["policy"])
            print(f"demo: {args.checkpoint} with contract {contract_path}"
                  + "".join(f"; {key} as {message}" for key, message in cameras.items()), flush=True)
            print(f"demo: ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}, {_pids(nodes)}, node logs in {log_dir}", flush=True)
            started, load_before = time.perf_counter(), os.getloadavg()[0]
            summary = _run_episodes(args, contract_path, max_steps, int(env["ROS_DOMAIN_ID"]), nodes, logs)
        except (StopSignal, Exception):
            # A signal raised inside rclpy's C++ code surfaces as another error (pybind11 converts it):
            # after a stop signal, whatever the interrupted call raised is that signal.
            if signals.received is None:
                raise
        finally:
            signals.raising = False
            if signals.received is None:
                exit_codes = stop_node_processes(nodes, signal.SIGINT, STOP_TIMEOUT_S)
            else:
                exit_codes = stop_node_processes(nodes, signals.received, SIGNAL_STOP_TIMEOUT_S)
    if signals.received is not None:
        nodes_stopped = ", ".join(f"{name} node (pid {nodes[name].pid}) {_exit_status(code)}"
                                  for name, code in exit_codes.items())
        print(f"demo: stopped by {signal.Signals(signals.received).name}, passed on to the nodes: "
              f"{nodes_stopped or 'none had started'}; node logs in {log_dir}", file=sys.stderr, flush=True)
        return 128 + signals.received
    summary |= {"seconds": time.perf_counter() - started, "node_exit_codes": exit_codes, "logs": str(log_dir),
                "checkpoint": str(args.checkpoint), "contract": str(contract_path), "camera_messages": cameras,
                # the tick latency depends on what else the machine ran: the 1-minute load average, first and last
                "load_average_1min": [load_before, os.getloadavg()[0]]}
    _report(summary, args.json)
    return 0 if all(code == 0 for code in exit_codes.values()) else 1


def _pids(nodes: dict[str, subprocess.Popen]) -> str:
    return ", ".join(f"{name} node pid {process.pid}" for name, process in nodes.items())


def _exit_status(code: int) -> str:
    return f"exit status {code}" if code >= 0 else f"ended by {signal.Signals(-code).name}"


def _check_arguments(args: argparse.Namespace) -> tuple[int, Path, Contract]:
    """The steps per episode and the contract to run with (its path and contents), once the
    checkpoint, its env_args and the contract are known to be good."""
    from mvp_ros.policy.checkpoint_files import read_checkpoint_document

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if args.max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {args.max_steps}")
    stored = read_checkpoint_document(args.checkpoint)
    env_args = stored.get("env_args")
    if not env_args:
        raise ValueError(f"checkpoint {args.checkpoint} has no env_args, so there is no simulation to run it in")
    contract_path = args.contract
    if contract_path is None:
        reads_images = any(len(shape) == 3 for shape in stored["policy"].get("obs_shapes", {}).values())
        contract_path = Path(DEFAULT_CAMERA_CONTRACT if reads_images else DEFAULT_CONTRACT)
    return args.max_steps or int(env_args["env_kwargs"]["horizon"]), contract_path, load_contract(contract_path)


def _camera_messages(contract: Contract, compressed_image_format: str) -> dict[str, str]:
    """image key -> the message the simulation sends it in, with the encoding of a compressed image."""
    return {key: spec.msgtype + (f" ({compressed_image_format})" if isinstance(spec, CompressedImageObservation) else "")
            for key, spec in contract.observations.items() if isinstance(spec, ImageObservation)}


def _run_episodes(args: argparse.Namespace, contract_path: Path, max_steps: int, domain_id: int,
                  nodes: dict[str, subprocess.Popen], logs: dict[str, Path]) -> dict[str, Any]:
    from mvp_ros.ros.closed_loop_client import ClosedLoopClient  # rclpy: imported once the arguments are known to be good

    client = ClosedLoopClient(domain_id, contract_path, POLICY_STATUS, logs)
    try:
        client.wait_until_ready(nodes, STARTUP_TIMEOUT_S)
        results = []
        progress = tqdm(range(args.episodes), desc="demo", unit="episode", disable=args.no_progress or None)
        for _ in progress:
            results.append(client.run_episode(nodes, timeout_s=max_steps * (STEP_TIMEOUT_S + 1.0)))
            progress.set_postfix(successes=sum(result["success"] for result in results))
        policy = client.policy_diagnostics(sum(result["steps"] for result in results), nodes)
    finally:
        client.close()
    return _summary(results, policy)


def _summary(results: list[dict[str, Any]], policy: dict[str, str]) -> dict[str, Any]:
    successes = sum(result["success"] for result in results)
    low, high = wilson_interval(successes, len(results))

    def number(key: str) -> float | None:
        value = float(policy[key])
        return None if math.isnan(value) else value

    return {
        "success_rate": successes / len(results),
        "episodes": len(results),
        "successes": successes,
        "success_rate_ci95": [low, high],
        "seeds": [result["seed"] for result in results],
        "episode_success": [result["success"] for result in results],
        "episode_steps": [result["steps"] for result in results],
        "held_steps": sum(result["held_steps"] for result in results),
        "tick_latency_ms_p50": number("tick_latency_ms_p50"),
        "tick_latency_ms_p99": number("tick_latency_ms_p99"),
        "inference_ms_p50": number("inference_ms_p50"),
        "inference_ms_p99": number("inference_ms_p99"),
        "missed_ticks": int(policy["missed_ticks"]),
        "stale_ticks": int(policy["stale_ticks"]),
        "overruns": int(policy["overruns"]),
        "ticks": int(policy["ticks"]),
    }


def _report(summary: dict[str, Any], json_path: Path | None) -> None:
    low, high = summary["success_rate_ci95"]
    print(f"success rate {summary['success_rate']:.3f} ({summary['successes']}/{summary['episodes']},"
          f" 95% interval {low:.3f}-{high:.3f}) over ROS 2 topics, seeds {summary['seeds'][0]}-{summary['seeds'][-1]}")
    print(f"tick latency (observation ready -> command published): p50 {_ms(summary['tick_latency_ms_p50'])},"
          f" p99 {_ms(summary['tick_latency_ms_p99'])}; inference p50 {_ms(summary['inference_ms_p50'])};"
          f" {summary['ticks']} ticks, {summary['missed_ticks']} missed, {summary['stale_ticks']} stale,"
          f" {summary['held_steps']} simulation steps without a command; {summary['seconds']:.1f} s")
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {json_path}")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} ms"
