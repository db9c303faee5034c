"""How much slower the same work runs once per control period than back to back on this machine.

    .venv/bin/python benchmarks/bench_wakeup.py --json benchmarks/results/wakeup_cpu.json

A policy node sleeps between ticks. On some machines (virtual ones, or CPUs in deep idle states)
the first milliseconds after a sleep run slower: the core clocks up again, caches and branch
predictors refill. This times two pieces of work, alternating blocks of calls back to back with
blocks of calls paced by a sleep of one control period:
  python   a pure-Python loop (no torch, tiny data): slows only if the CPU itself is slow to wake
  policy   `Policy.act` of the bench's MVP (4x512 MLP, chunk 5, low-dim, one torch thread)
If `python` slows down as much as `policy`, the machine, not the code, sets the node's tick time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mvp_ros.policy import Policy
from mvp_ros.policy.bench import machine
from mvp_ros.ros.tick_bench import write_bench_policy


def python_work() -> int:
    total = 0
    for i in range(20_000):
        total += i
    return total


def timed_blocks(work, period_s: float, blocks: int, block: int) -> dict[str, list[float]]:
    """Milliseconds per call, back to back and after sleeping until the next period, in alternating blocks."""
    times: dict[str, list[float]] = {"back_to_back": [], "paced": []}
    for _ in range(blocks):
        for _ in range(block):
            started = time.perf_counter()
            work()
            times["back_to_back"].append((time.perf_counter() - started) * 1e3)
        next_at = time.perf_counter()
        for _ in range(block):
            next_at += period_s
            time.sleep(max(0.0, next_at - time.perf_counter()))
            started = time.perf_counter()
            work()
            times["paced"].append((time.perf_counter() - started) * 1e3)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    result = {}
    for name, values in times.items():
        result[f"{name}_p50_ms"] = round(float(np.percentile(values, 50)), 4)
        result[f"{name}_p99_ms"] = round(float(np.percentile(values, 99)), 4)
    result["paced_over_back_to_back_p50"] = round(result["paced_p50_ms"] / result["back_to_back_p50_ms"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--period-ms", type=float, default=10.0, help="the control period (10 ms: 100 Hz)")
    parser.add_argument("--blocks", type=int, default=10, help="pairs of blocks (back to back, paced)")
    parser.add_argument("--block", type=int, default=100, help="calls per block")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        checkpoint, _ = write_bench_policy(Path(directory), images=False, width=512, depth=4)
        policy = Policy.load(checkpoint, device="cpu", execution="eager")
    obs = {key: np.zeros(shape) for key, shape in policy.config.obs_shapes.items()}
    results = {"period_ms": args.period_ms, "machine": machine(torch.device("cpu"))}
    for name, work in {"python": python_work, "policy": lambda: policy.act(obs)}.items():
        for _ in range(50):
            work()
        results[name] = summary(timed_blocks(work, args.period_ms / 1e3, args.blocks, args.block))
        print(name, results[name])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
