"""`mvp bench`: MVP against the multi-step heads on the same backbone, in one run, on this machine.

Three parts, each optional:
  inference  every head's sampling call at batch 1, low-dim and two 84x84 cameras, per execution
             mode (eager, torch.compile, AOTInductor on a CPU, CUDA graph on a GPU), p50/p99 and the
             ratio to MVP 1-step
             (mvp_ros/bench/policy_timing.py)
  ros_tick   the policy node in its own process at 100 Hz (low-dim) and 30 Hz (two cameras), driven
             over DDS by a synthetic observation publisher; observation -> command latency and
             missed ticks (mvp_ros/bench/ros_tick.py)
  training   steps per second of the MVP loss (with its JVP) against flow matching, diffusion, MLP:
             low-dim, and two 84x84 cameras with the random crops image policies train with, at
             batch 64 and 256, on as many torch threads as `mvp train` takes unless --train-threads
             says otherwise; then updates per second of MVP-RL and of QC (the same RL loop with the
             flow head) at N candidates, their ratio to a BC update, and each update's arithmetic
             floor (its matrix multiplications replayed back to back, mvp_ros/bench/matmul_floor.py)

    mvp bench --json benchmarks/results/bench_cpu.json --plot benchmarks/results/bench_cpu.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mvp_ros.bench.policy_timing import INFERENCE_CASES
from mvp_ros.policy.execution import DEVICE_OF_MODE, MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the latency distributions")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="where inference, training and the policy node run (default cpu)")
    parser.add_argument("--modes", default="auto",
                        help="comma-separated execution modes of the inference part: eager, compile, aot, cuda_graph "
                             "(default auto: eager and compile, then aot on a CPU or cuda_graph on a GPU)")
    parser.add_argument("--heads", default=",".join(INFERENCE_CASES),
                        help=f"comma-separated inference cases (default all: {','.join(INFERENCE_CASES)})")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per low-dim inference case (0: skip)")
    parser.add_argument("--image-repeats", type=int, default=50, help="timed calls per image case (0: skip)")
    parser.add_argument("--train-repeats", type=int, default=30, help="timed training steps per head (0: skip)")
    parser.add_argument("--batch-size", type=int, default=256, help="low-dim training batch size")
    parser.add_argument("--image-train-repeats", type=int, default=10,
                        help="timed two-camera training steps per head and batch size (0: skip)")
    parser.add_argument("--image-batch-sizes", default="64,256",
                        help="comma-separated batch sizes of the two-camera training rows (default 64,256)")
    parser.add_argument("--rl-repeats", type=int, default=10,
                        help="timed updates of BC, MVP-RL and QC and of their floors, at --batch-size (0: skip)")
    parser.add_argument("--rl-candidates", type=int, default=16, help="N of the RL updates' best-of-N bootstrap")
    parser.add_argument("--rl-eager", action="store_true",
                        help="time the RL updates with the bootstrap run eagerly, not torch.compile'd as mvp train runs it")
    parser.add_argument("--train-threads", type=int, default=0,
                        help="torch threads of the training part (default 0: as mvp train, OMP_NUM_THREADS if set,"
                             " else one per core)")
    parser.add_argument("--ros-duration", type=float, default=60.0,
                        help="seconds of the low-dim ROS tick at --ros-rate (0: skip)")
    parser.add_argument("--ros-rate", type=float, default=100.0, help="low-dim control rate of the ROS tick (Hz)")
    parser.add_argument("--ros-image-duration", type=float, default=20.0,
                        help="seconds of the two-camera ROS tick at --ros-image-rate (0: skip)")
    parser.add_argument("--ros-image-rate", type=float, default=30.0, help="two-camera control rate (Hz)")
    parser.add_argument("--ros-execution", default="auto", help="the policy node's execution parameter (default auto)")
    parser.add_argument("--ros-threads", type=int, default=1, help="the policy node's torch_threads parameter (default 1)")
    parser.add_argument("--ros-priority", type=int, default=0,
                        help="the policy node's thread_priority parameter: SCHED_FIFO 1-99 while ticking (default 0: normal)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--width", type=int, default=512, help="backbone width (default 512)")
    parser.add_argument("--depth", type=int, default=4, help="backbone depth (default 4)")


def run(args: argparse.Namespace) -> int:
    import torch

    from mvp_ros.bench.policy_timing import benchmark
    from mvp_ros.policy.runtime import resolve_device

    device = resolve_device(args.device)
    modes = _modes(args.modes, device)
    heads = [head.strip() for head in args.heads.split(",") if head.strip()]
    unknown = [head for head in heads if head not in INFERENCE_CASES]
    if unknown or "mvp" not in heads:
        raise ValueError(f"--heads must include mvp and name only {list(INFERENCE_CASES)}; got {heads}")
    setups = _tick_setups(args, device)
    torch.set_num_threads(args.threads)
    image_batch_sizes = _positive_integers("--image-batch-sizes", args.image_batch_sizes)
    if args.rl_candidates < 1:
        raise ValueError(f"--rl-candidates must be >= 1, got {args.rl_candidates}")
    if args.train_threads < 0:
        raise ValueError(f"--train-threads must be >= 0 (0: as mvp train), got {args.train_threads}")
    result = benchmark(device, args.repeats, args.image_repeats, args.train_repeats, args.batch_size,
                       args.width, args.depth, modes, heads, args.image_train_repeats, image_batch_sizes,
                       args.train_threads or None, args.rl_repeats, args.rl_candidates, not args.rl_eager)
    result["ros_tick"] = result["ros_tick_image"] = None
    if setups:
        from mvp_ros.bench.ros_tick import NodeSettings, ros_tick  # rclpy only for this part

        node = NodeSettings(args.ros_execution, args.ros_threads, args.ros_priority, device.type)
        for row in ros_tick(setups, args.width, args.depth, node):
            result["ros_tick" if row["obs"] == "lowdim" else "ros_tick_image"] = row
    _print(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _modes(text: str, device) -> list[str]:
    if text == "auto":
        return ["eager", "compile", "cuda_graph" if device.type == "cuda" else "aot"]
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        raise ValueError(f"--modes takes auto or a comma-separated list of {', '.join(MODES)}; got {text!r}")
    for mode in modes:
        _check_device("--modes", mode, device)
    return modes


def _positive_integers(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(value) for value in text.split(",") if value.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"{flag} takes comma-separated positive integers; got {text!r}")
    return values


def _check_device(flag: str, mode: str, device) -> None:
    needed = DEVICE_OF_MODE.get(mode, device.type)
    if needed != device.type:
        raise ValueError(f"{flag} {mode} needs --device {needed} (the bench runs on {device})")


def _tick_setups(args: argparse.Namespace, device) -> list:
    """The ROS tick runs asked for, checked before minutes of inference timing are spent. rclpy is
    imported only when there are some: the other parts run on machines without ROS."""
    runs = [(obs, rate, duration) for obs, duration, rate in (("lowdim", args.ros_duration, args.ros_rate),
                                                               ("image", args.ros_image_duration, args.ros_image_rate))
            if duration > 0]
    if not runs:
        return []
    from mvp_ros.ros.realtime import check_priority
    from mvp_ros.bench.ros_tick import TickSetup

    for obs, rate, duration in runs:
        if rate <= 0 or duration * rate < 1:
            raise ValueError(f"the {obs} ROS tick needs a rate > 0 and at least one tick; got {rate:g} Hz for {duration:g} s")
    if args.ros_execution != "auto" and args.ros_execution not in MODES:
        raise ValueError(f"--ros-execution takes auto or one of {', '.join(MODES)}; got {args.ros_execution!r}")
    _check_device("--ros-execution", args.ros_execution, device)
    if args.ros_threads < 1:
        raise ValueError(f"--ros-threads must be >= 1, got {args.ros_threads}")
    try:
        check_priority(args.ros_priority)
    except ValueError as error:
        raise ValueError(f"--ros-priority: {error}") from None
    return [TickSetup(*run) for run in runs]


def _print(result: dict) -> None:
    print(f"{'head':>22} {'steps':>5} {'obs':>6} {'mode':>10} {'p50 ms':>8} {'p99 ms':>8} {'x mvp':>6}")
    for row in result["inference"]:
        ratio = "" if row["ratio_to_mvp"] is None else f"{row['ratio_to_mvp']:.2f}"
        print(f"{row['head']:>22} {row['steps']:>5} {row['obs']:>6} {row['mode']:>10} {row['p50_ms']:>8.3f} "
              f"{row['p99_ms']:>8.3f} {ratio:>6}")
    for key in ("ros_tick", "ros_tick_image"):
        row = result[key]
        if row:
            print(f"ROS tick, {row['obs']} at {row['rate_hz']:g} Hz for {row['duration_s']:g} s: observation published ->"
                  f" command received p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms (-> published by the node"
                  f" {row['command_published_p50_ms']:.3f} / {row['command_published_p99_ms']:.3f}, -> this process's"
                  f" callback {row['callback_p50_ms']:.3f} / {row['callback_p99_ms']:.3f}); {row['missed_ticks']} of"
                  f" {row['ticks']} ticks missed; in the node (observation ready -> command published) p50"
                  f" {row['node_tick_p50_ms']:.3f} ms, p99 {row['node_tick_p99_ms']:.3f} ms ({row['node_scheduling']})")
    for row in result["training"]:
        print(f"train {row['head']:>10} {row['obs']:>6} batch {row['batch_size']:>4}, {row['threads']} thread(s):"
              f" {row['step_ms_p50']:8.2f} ms/step, {row['steps_per_s']:7.2f} steps/s, {row['ratio_to_flow']:.2f}x flow")
    for row in result["rl_training"]:
        print(f"update {row['update']:>6} batch {row['batch_size']:>4}, N {row['candidates']:>2}, {row['threads']} thread(s):"
              f" {row['update_ms_p50']:8.2f} ms ({row['updates_per_s']:.2f}/s), {row['ratio_to_bc']:.2f}x BC,"
              f" floor {row['floor_ms_p50']:.2f} ms ({row['flops'] / 1e9:.1f} GFLOP), {row['ratio_to_floor']:.2f}x floor")


def plot(result: dict, path: Path) -> None:
    """One panel per observation kind and execution mode (latency per chunk), and one for the ROS ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(row["obs"], row["mode"]) for row in result["inference"]},
                    key=lambda p: (p[0] != "lowdim", p[0], MODES.index(p[1])))
    ticks = [result[key] for key in ("ros_tick", "ros_tick_image") if result.get(key)]
    count = len(panels) + bool(ticks)
    columns = min(count, 3)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False)
    axes = list(axes.flat)
    for axis in axes[count:]:
        axis.set_visible(False)
    for axis, (kind, mode) in zip(axes, panels):
        cases = [row for row in result["inference"] if (row["obs"], row["mode"]) == (kind, mode)]
        axis.boxplot([row["samples_ms"] for row in cases], showfliers=False)
        axis.set_xticks(range(1, len(cases) + 1), [f"{row['head']}\n{row['steps']} step(s)" for row in cases], fontsize=8)
        axis.set_yscale("log")
        axis.set_ylabel("latency per chunk (ms)")
        axis.set_title(f"{kind}, {mode}, batch 1, {result['machine']['device_name']}", fontsize=9)
        axis.grid(alpha=0.3, axis="y")
    if ticks:
        axis = axes[count - 1]
        axis.boxplot([row["samples_ms"] for row in ticks], showfliers=True, flierprops={"markersize": 2})
        axis.set_xticks(range(1, len(ticks) + 1), [f"{row['obs']}\n{row['rate_hz']:g} Hz" for row in ticks], fontsize=8)
        for index, row in enumerate(ticks, start=1):
            axis.hlines(1000 / row["rate_hz"], index - 0.4, index + 0.4, colors="red", linestyles="dashed")
        axis.set_ylabel("observation published -> command received (ms)")
        axis.set_title("policy node tick over DDS (red: one control period)", fontsize=9)
        axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
