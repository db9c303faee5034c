"""Continuity of the commanded arm trajectory, per-tick points against whole-chunk trajectories.

The policy node's tick core (mvp_ros/tick/core.py, with the node's contract handling and
mvp_ros.tick.commands.chunk_points) runs a scripted chunk policy at 10 Hz with the tick jitter the
issue reports (command intervals p99 about 1.3 periods, up to 1.9). The policy follows a smooth
target (one joint, 0.5 rad sine at 0.25 Hz), and each chunk is off by its own small random offset,
as successive chunks of a generative policy disagree. Every published JointTrajectory is then
followed the way a joint trajectory controller samples it: from its arrival, starting at the
reference's current state; positions only (the per-tick point) are interpolated linearly and held
at the point; points with velocities (the chunk) by cubic Hermite splines, held after the last.

Reported per mode, from the reference sampled every millisecond: the velocity jump at each
message's arrival (|v just after - v just before|), the 99th percentile of its acceleration, the
share of the time the reference stands still while the target moves, and the RMS distance to the
target.

    python benchmarks/bench_trajectory_continuity.py --json benchmarks/results/trajectory_continuity.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mvp_ros.data.contract import Contract
from mvp_ros.tick.commands import Command, chunk_points
from mvp_ros.tick.core import build_tick_core

RATE_HZ = 10
PERIOD_NS = 10**9 // RATE_HZ
HORIZON, EXECUTE = 8, 4
AMPLITUDE, FREQUENCY_HZ = 0.5, 0.25
CHUNK_OFFSET_STD = 0.01  # rad: how much successive chunks disagree
MS = 1_000_000


def target(time_ns: np.ndarray | int) -> np.ndarray:
    return AMPLITUDE * np.sin(2 * np.pi * FREQUENCY_HZ * np.asarray(time_ns) / 1e9)


def contract(mode: str) -> Contract:
    return Contract.from_dict({
        "contract_version": 1, "robot": "one_joint", "control_rate_hz": RATE_HZ,
        "observations": {"joint_pos": {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states",
                                       "joints": ["j1"], "align": {"rule": "asof", "tolerance_s": 0.2}},
                         "phase": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/phase", "size": 1,
                                   "align": {"rule": "asof", "tolerance_s": 0.2}}},
        "action": {"type": "trajectory_msgs/msg/JointTrajectory", "topic": "/arm", "names": ["j1"],
                   "limits": {"lower": [-1], "upper": [1]}, "max_delta": [0.3], "trajectory": {"mode": mode}},
    })


class ChunkPolicy:
    """At observation time t (the /phase observation), actions k = 0.. aim at the target at t + (k + 1) periods."""

    obs_keys = ["phase"]

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        now_ns = int(obs["phase"][0])
        times = now_ns + PERIOD_NS * np.arange(1, HORIZON + 1)
        return (target(times) + self.rng.normal(0, CHUNK_OFFSET_STD))[:, None]


class Reference:
    """A joint trajectory controller's reference: piecewise segments (start, end, position(t), velocity(t))."""

    def __init__(self) -> None:
        self.segments: list[tuple[int, int, callable, callable]] = []
        self.hold_position = 0.0

    def state(self, time_ns: int) -> tuple[float, float]:
        for start, end, position, velocity in reversed(self.segments):
            if start <= time_ns < end:
                return float(position(time_ns)), float(velocity(time_ns))
            if time_ns >= end:
                break
        return self.hold_position, 0.0

    def follow(self, arrival_ns: int, times_ns: list[int], positions: list[float], velocities: list[float] | None):
        """Replace what is planned after `arrival_ns` by the message's points (absolute times)."""
        start_position, start_velocity = self.state(arrival_ns)
        self.segments = [(s, min(e, arrival_ns), p, v) for s, e, p, v in self.segments if s < arrival_ns]
        knots = [(arrival_ns, start_position, start_velocity)]
        for time_ns, position, index in zip(times_ns, positions, range(len(positions))):
            if time_ns > knots[-1][0]:
                knots.append((time_ns, position, velocities[index] if velocities is not None else None))
        for (t0, p0, v0), (t1, p1, v1) in zip(knots, knots[1:]):
            if velocities is None:
                slope = (p1 - p0) / ((t1 - t0) / 1e9)
                self.segments.append((t0, t1, lambda t, t0=t0, p0=p0, s=slope: p0 + s * (t - t0) / 1e9,
                                      lambda t, s=slope: s))
            else:
                self.segments.append((t0, t1, *hermite(t0, p0, v0, t1, p1, v1)))
        self.hold_position = knots[-1][1]


def hermite(t0: int, p0: float, v0: float, t1: int, p1: float, v1: float):
    duration = (t1 - t0) / 1e9

    def position(t: int) -> float:
        s = (t - t0) / 1e9 / duration
        return ((2 * s**3 - 3 * s**2 + 1) * p0 + (s**3 - 2 * s**2 + s) * duration * v0
                + (-2 * s**3 + 3 * s**2) * p1 + (s**3 - s**2) * duration * v1)

    def velocity(t: int) -> float:
        s = (t - t0) / 1e9 / duration
        return ((6 * s**2 - 6 * s) * p0 / duration + (3 * s**2 - 4 * s + 1) * v0
                + (-6 * s**2 + 6 * s) * p1 / duration + (3 * s**2 - 2 * s) * v1)

    return position, velocity


def tick_latencies(ticks: int, rng: np.random.Generator) -> np.ndarray:
    """Observation -> publication delay of each tick: mostly a few ms, a tail reaching 0.9 periods."""
    latency = 5 * MS + rng.exponential(4 * MS, ticks)
    late = rng.random(ticks) < 0.03
    latency[late] += rng.uniform(0.2, 0.9, late.sum()) * PERIOD_NS
    return latency.astype(np.int64)


def run(mode: str, seconds: float, seed: int) -> dict:
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    rng = np.random.default_rng(seed)
    ticks = int(seconds * RATE_HZ)
    latencies = tick_latencies(ticks, rng)
    reference = Reference()
    arrivals: list[int] = []
    published: list[tuple[Command, int]] = []
    clock = {"steady": 0.0}
    core = build_tick_core(ChunkPolicy(seed), HORIZON, contract(mode), contract(mode).action, period_ns=PERIOD_NS,
                           execute=EXECUTE, temporal_ensemble=False, ensemble_decay=0.01, max_age_s=0.0,
                           tick_timeout_s=1.0, watchdog_s=10.0,
                           publish=lambda command: published.append((command, clock["publish_ns"])),
                           steady=lambda: clock["steady"], log=lambda level, text: None)
    start_ns = 10**9
    core.activate(0, start_ns)
    for index in range(ticks):
        tick_ns = start_ns + index * PERIOD_NS
        publish_ns = tick_ns + int(latencies[index])
        clock["steady"], clock["publish_ns"] = tick_ns / 1e9, publish_ns
        position, _ = reference.state(tick_ns)
        joints = JointState(name=["j1"], position=[position])
        joints.header.stamp.sec, joints.header.stamp.nanosec = divmod(tick_ns, 10**9)
        core.observe("/joint_states", joints, tick_ns)
        core.observe("/phase", Float64MultiArray(data=[float(tick_ns)]), tick_ns)
        before = len(published)
        core.timer(tick_ns)
        if len(published) == before:
            continue
        command, _ = published[-1]
        if mode == "chunk":
            points = chunk_points(command, slice(0, 1), PERIOD_NS, publish_ns)
            times = [command.stamp_ns + time_ns for time_ns in points.times_ns]
            reference.follow(publish_ns, times, points.positions[:, 0].tolist(), points.velocities[:, 0].tolist())
        else:  # one point, a period after publication (the node stamps per-tick points when it publishes)
            reference.follow(publish_ns, [publish_ns + PERIOD_NS], [float(command.action[0])], None)
        arrivals.append(publish_ns)
    samples = np.arange(start_ns + PERIOD_NS, start_ns + ticks * PERIOD_NS, MS)
    states = np.array([reference.state(int(time_ns)) for time_ns in samples])
    jumps = np.array([abs(reference.state(t + MS // 10)[1] - reference.state(t - MS // 10)[1]) for t in arrivals[1:]])
    target_moving = np.abs(np.gradient(target(samples), 1e-3)) > 0.05
    stopped = (np.abs(states[:, 1]) < 1e-6) & target_moving
    intervals = np.diff(arrivals) / 1e6
    acceleration = np.abs(np.diff(states[:, 1])) / 1e-3  # between millisecond samples (a jump counts as 1000x its size)
    return {
        "mode": mode, "messages": len(arrivals),
        "command_interval_ms_p50": float(np.percentile(intervals, 50)),
        "command_interval_ms_p99": float(np.percentile(intervals, 99)),
        "command_interval_ms_max": float(intervals.max()),
        "velocity_jump_rad_s_p50": float(np.percentile(jumps, 50)),
        "velocity_jump_rad_s_p99": float(np.percentile(jumps, 99)),
        "velocity_jump_rad_s_max": float(jumps.max()),
        "acceleration_rad_s2_p99": float(np.percentile(acceleration, 99)),
        "stopped_share_while_target_moves": float(stopped.sum() / target_moving.sum()),
        "rms_error_to_target_rad": float(np.sqrt(np.mean((states[:, 0] - target(samples)) ** 2))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {"command": " ".join(["python", *sys.argv]), "control_rate_hz": RATE_HZ, "horizon": HORIZON,
               "execute_steps": EXECUTE, "chunk_offset_std_rad": CHUNK_OFFSET_STD,
               "modes": [run(mode, args.seconds, args.seed) for mode in ("point", "chunk")]}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
