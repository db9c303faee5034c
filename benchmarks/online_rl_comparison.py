"""FPMD-M, FPMD-R, MFPO and SAC side by side, online from scratch in Gymnasium MuJoCo tasks: returns
against environment steps, training updates per second and milliseconds per action.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/online_rl_comparison.py \\
        --json benchmarks/results/online_rl_comparison.json --plot benchmarks/results/online_rl_comparison.png

Every method x task x seed is one `mvp_ros.rl.gym_online.run_online` run (what `mvp train --algo
fpmd|mfpo|sac` runs), one after another in this process, on one torch thread, interleaved (seed, then
task, then method) so that a machine whose load changes slows the methods alike. All methods share
the scale: environment steps, random steps first, batch, network width and depth (actor, critics,
MFPO's divergence network), the evaluation schedule and its seeds; the rest are each method's own
settings (docs/rl_online.md). The scale is far below the papers' million steps: it compares early
learning only.

The JSON holds the scale, the machine and its load average around each run, per run the evaluation
curve (mean return of the evaluation episodes at each evaluation), its training episodes, its
updates per second (update time only) and its median time per action while training (the method's
acting rule: FPMD's best of N, MFPO's and SAC's one sample), each in wall-clock time and in the
thread's CPU time, which other processes on a shared machine inflate less, and per method and task
the mean, min and max over seeds at each evaluation. A run whose online_log.json in --work-dir already reached
its last step is read, not run again, so a stopped benchmark continues where it was.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mvp_ros.rl.gym_online import LOG_JSON, OnlineRunConfig, run_online


@dataclass(frozen=True)
class Scale:
    online_steps: int  # environment steps per run
    learning_starts: int  # of them uniformly random, before the first update; one update per step after
    batch_size: int
    hidden_dim: int  # of every network
    depth: int
    eval_every: int  # environment steps between evaluations
    eval_episodes: int  # per evaluation, episode i reset with seed eval_seed + i
    eval_seed: int


SCALES = {
    "small": Scale(online_steps=1200, learning_starts=300, batch_size=64, hidden_dim=128, depth=3, eval_every=300,
                   eval_episodes=2, eval_seed=100000),
    "quick": Scale(online_steps=24, learning_starts=12, batch_size=8, hidden_dim=16, depth=2, eval_every=12,
                   eval_episodes=1, eval_seed=100000),
}
ENVS = ("Hopper-v5", "HalfCheetah-v5")
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    algo: str
    head: str
    color: str  # of its line in the plot
    agent: tuple[tuple[str, object], ...] = ()  # settings of its own beyond the scale's
    task_agent: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # (env, settings) for one task only


# FPMD's actor learning rate decays over a million updates, as in the paper's 1M-step runs, so these
# first steps train at the rate the paper's first steps do (not decayed to its end within the run).
PAPER_DECAY = (("actor_lr_decay_updates", 1_000_000),)
METHODS = (Method("fpmd_m", "FPMD-M", "fpmd", "mvp", "tab:blue", PAPER_DECAY),
           Method("fpmd_r", "FPMD-R", "fpmd", "flow", "tab:orange", PAPER_DECAY),
           # the MFPO authors' README runs HalfCheetah without the twin minimum (use_cdq False): their mean
           Method("mfpo", "MFPO", "mfpo", "mvp", "tab:green",
                  task_agent=(("HalfCheetah-v5", (("twin_aggregate", "mean"),)),)),
           Method("sac", "SAC", "sac", "mvp", "tab:grey"))


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "threads": 1}


def command_of(arguments: list[str]) -> str:
    """The command that wrote the result, less --work-dir: where the runs were kept changes no figure."""
    kept = [argument for argument in arguments if not argument.startswith("--work-dir=")]
    if "--work-dir" in kept:
        index = kept.index("--work-dir")
        del kept[index:index + 2]
    return shlex.join([".venv/bin/python", "benchmarks/online_rl_comparison.py", *kept])


def run_config(scale: Scale, method: Method, env: str, seed: int, out: Path) -> OnlineRunConfig:
    return OnlineRunConfig(algo=method.algo, head=method.head, env=env, online_steps=scale.online_steps,
                           out=str(out), seed=seed, batch_size=scale.batch_size,
                           learning_starts=scale.learning_starts, eval_every=scale.eval_every,
                           eval_episodes=scale.eval_episodes, eval_seed=scale.eval_seed, device="cpu", threads=1,
                           agent={"hidden_dim": scale.hidden_dim, "depth": scale.depth, **dict(method.agent),
                                  **dict(dict(method.task_agent).get(env, ()))})


def run_once(config: OnlineRunConfig) -> dict:
    """The run's record, from its online_log.json; trained first unless the log already reached the last step."""
    log_path = Path(config.out) / LOG_JSON
    done = log_path.is_file() and json.loads(log_path.read_text()).get("env_steps") == config.online_steps
    load_before, started, cpu_started = os.getloadavg()[0], time.perf_counter(), time.process_time()
    if not done:
        run_online(config, progress=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    log = json.loads(log_path.read_text())
    return {"seed": config.seed, "wall_seconds": round(wall, 1) if not done else None,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpu_seconds": round(cpu, 1) if not done else None,
            "updates": log["updates"], "updates_per_second": log["updates_per_second"],
            "updates_per_cpu_second": log["updates_per_cpu_second"], "act_ms_p50": log["act_ms_p50"],
            "act_ms_p99": log["act_ms_p99"], "act_cpu_ms_p50": log["act_cpu_ms_p50"],
            "curve": [{"env_steps": point["env_steps"], "mean_return": point["mean_return"]}
                      for point in log["evaluations"]],
            "training_episodes": [{"env_steps": episode["env_steps"], "return": episode["return"]}
                                  for episode in log["episodes"]],
            "last_metrics": log["last_metrics"]}


def summarize(runs: list[dict]) -> dict:
    """Mean, min and max over seeds at each evaluation, and the timings' means over seeds."""
    steps = [point["env_steps"] for point in runs[0]["curve"]]
    values = np.array([[point["mean_return"] for point in run["curve"]] for run in runs])
    return {"curve": [{"env_steps": step, "mean": float(column.mean()), "min": float(column.min()),
                       "max": float(column.max())} for step, column in zip(steps, values.T)],
            **{name: float(np.mean([run[name] for run in runs]))
               for name in ("updates_per_second", "updates_per_cpu_second", "act_ms_p50", "act_cpu_ms_p50")}}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = result["envs"]
    figure, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4), squeeze=False)
    colors = {method.name: method.color for method in METHODS}
    for axis, env in zip(axes[0], envs):
        for method in result["methods"]:
            curve = method["tasks"][env]["curve"]
            steps = [point["env_steps"] for point in curve]
            axis.plot(steps, [point["mean"] for point in curve], "o-", color=colors[method["name"]],
                      label=method["label"])
            axis.fill_between(steps, [point["min"] for point in curve], [point["max"] for point in curve],
                              color=colors[method["name"]], alpha=0.2)
        axis.set(xlabel="environment steps", ylabel="evaluation return", title=env)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    scale = result["scale"]
    figure.suptitle(f"{len(result['seeds'])} seeds (mean, band min-max); {scale['learning_starts']} random steps, "
                    f"then one update per step; {scale['depth']}x{scale['hidden_dim']} networks, batch "
                    f"{scale['batch_size']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run of every step, to check the driver")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--work-dir", type=Path, help="the runs (default runs/online_rl_comparison[_quick])")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    args = parser.parse_args(argv)
    scale_name = "quick" if args.quick else "small"
    scale = SCALES[scale_name]
    work = args.work_dir or Path("runs/online_rl_comparison" + ("_quick" if args.quick else ""))

    jobs = [(seed, env, method) for seed in args.seeds for env in args.envs for method in METHODS]
    runs: dict[tuple[str, str], list[dict]] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    for seed, env, method in tqdm(jobs, desc="online RL comparison", unit="run"):
        config = run_config(scale, method, env, seed, work / f"{env}_{method.name}_seed{seed}")
        runs.setdefault((method.name, env), []).append(run_once(config))
    wall = time.perf_counter() - started

    loads = [load for method_runs in runs.values() for run in method_runs for load in run["load_average_1min"]]
    result = {
        "command": command_of(argv or sys.argv[1:]),
        "scale_name": scale_name, "scale": asdict(scale), "envs": args.envs, "seeds": args.seeds,
        "evaluation_seeds": list(range(scale.eval_seed, scale.eval_seed + scale.eval_episodes)),
        "settings": {method.name: asdict(run_config(scale, method, args.envs[0], args.seeds[0], work))
                     for method in METHODS},
        "task_settings": {method.name: {env: dict(settings) for env, settings in method.task_agent}
                          for method in METHODS if method.task_agent},
        "machine": {**machine(), "load_average_1min_range": [min(loads), max(loads)]},
        "wall_seconds": round(wall, 1), "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "methods": [{"name": method.name, "label": method.label, "algo": method.algo, "head": method.head,
                     "tasks": {env: {**summarize(runs[method.name, env]), "runs": runs[method.name, env]}
                               for env in args.envs}} for method in METHODS],
    }
    for settings in result["settings"].values():
        del settings["out"], settings["seed"], settings["env"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.plot)
    for method in result["methods"]:
        for env, task in method["tasks"].items():
            final = task["curve"][-1]
            print(f"{method['label']} {env}: final return {final['mean']:.1f} ({final['min']:.1f} to {final['max']:.1f}); "
                  f"{task['updates_per_cpu_second']:.1f} updates per CPU second; {task['act_cpu_ms_p50']:.2f} CPU ms per action")
    return result


if __name__ == "__main__":
    main()
