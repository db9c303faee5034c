"""How much slower the same work runs once per control period than back to back on this machine.

    .venv/bin/python benchmarks/bench_wakeup.py --json benchmarks/results/wakeup_cpu.json

A policy node waits between ticks. On some machines the first milliseconds after a wait run slower:
a core in a deep idle state clocks up again, and on a virtual machine other guests may run on the
same core meanwhile and take its caches and branch predictors. This times three pieces of work,
in rotating blocks of calls: back to back, paced by a sleep until the next control period, and
paced by busy-waiting until then (the core never idles, only the work stops):
  python    a pure-Python loop (no torch, tiny data)
  torch_op  one small torch operation (an add of 64 floats): how much the first operation of a
            tick pays
  weights   a 512-vector through four 512x512 matrices (`torch.mm`): the backbone's 4 MB of weights
            with nothing else, how much a tick pays to bring them back from memory
  policy    `Policy.act` of the bench's MVP (4x512 MLP, chunk 5, low-dim, one torch thread)
If busy-waiting is as slow as sleeping, idle states are not the cause: the state the work left in
the caches was lost while it waited, and only a machine with the core to itself avoids that.
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
from mvp_ros.bench.policy_timing import machine
from mvp_ros.bench.ros_tick import write_bench_policy


def python_work() -> int:
    total = 0
    for i in range(20_000):
        total += i
    return total


def timed_blocks(work, period_s: float, blocks: int, block: int) -> dict[str, list[float]]:
    """Milliseconds per call: back to back, after sleeping until the next period, and after busy-waiting
    until it, in rotating blocks."""
    times: dict[str, list[float]] = {"back_to_back": [], "paced": [], "busy_wait": []}

    def sleep_until(deadline: float) -> None:
        time.sleep(max(0.0, deadline - time.perf_counter()))

    def spin_until(deadline: float) -> None:
        while time.perf_counter() < deadline:
            pass

    waits = {"back_to_back": None, "paced": sleep_until, "busy_wait": spin_until}
    for _ in range(blocks):
        for pacing, wait in waits.items():
            next_at = time.perf_counter()
            for _ in range(block):
                next_at += period_s
                if wait is not None:
                    wait(next_at)
                started = time.perf_counter()
                work()
                times[pacing].append((time.perf_counter() - started) * 1e3)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    result = {}
    for name, values in times.items():
        result[f"{name}_p50_ms"] = round(float(np.percentile(values, 50)), 4)
        result[f"{name}_p99_ms"] = round(float(np.percentile(values, 99)), 4)
    for pacing in ("paced", "busy_wait"):
        result[f"{pacing}_over_back_to_back_p50"] = round(result[f"{pacing}_p50_ms"] / result["back_to_back_p50_ms"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--period-ms", type=float, default=10.0, help="the control period (10 ms: 100 Hz)")
    parser.add_argument("--blocks", type=int, default=10, help="rounds of blocks (back to back, paced, busy-waiting)")
    parser.add_argument("--block", type=int, default=100, help="calls per block")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        checkpoint, _ = write_bench_policy(Path(directory), images=False, width=512, depth=4)
        policy = Policy.load(checkpoint, device="cpu", execution="eager")
    obs = {key: np.zeros(shape) for key, shape in policy.config.obs_shapes.items()}
    results = {"period_ms": args.period_ms, "machine": machine(torch.device("cpu"))}
    small = torch.zeros(64)
    vector, matrices = torch.randn(1, 512), torch.randn(4, 512, 512)

    def weights_work() -> torch.Tensor:
        hidden = vector
        for matrix in matrices:
            hidden = torch.mm(hidden, matrix)
        return hidden

    workloads = {"python": python_work, "torch_op": lambda: torch.add(small, 1.0), "weights": weights_work,
                 "policy": lambda: policy.act(obs)}
    for name, work in workloads.items():
        for _ in range(50):
            work()
        results[name] = summary(timed_blocks(work, args.period_ms / 1e3, args.blocks, args.block))
        print(name, results[name])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
