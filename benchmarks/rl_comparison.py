"""Behaviour cloning, MVP-RL and Q-chunking on one mixed-quality Lift dataset, success against
environment steps.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python benchmarks/rl_comparison.py \\
        --json benchmarks/results/rl_comparison.json --plot benchmarks/results/rl_comparison.png

Every method trains with `mvp train` on the same data (`mvp demos --task lift --quality mixed`,
written first if the file is missing), network, batch, critic settings, training seed and offline
update budget, and is evaluated with `mvp eval` on the same fresh seeds, chunks executed open loop:

  BC      `--algo bc`, the MVP head, the policy alone; and the same with the flow head, which
          separates what QC's critic adds from what its head does alone;
  MVP-RL  `--algo mvp-rl`, evaluated with `--best-of N` after the offline updates (0 environment
          steps beyond the data), then after each stage of `--online-steps` (the same run resumed
          with a larger total, so each stage ends the episode it was in);
  QC      the same as MVP-RL with `--head flow` (10 Euler steps per candidate): Q-chunking's best-of-N.

The JSON holds the scale, the seeds, the machine, and per evaluation point its success, the
commands that made it and the load average before its training and after its evaluation; per
online point also the episodes the online phase had finished and their success rate; per method
its training updates per second (offline; online: environment steps, each with its update, per
second) from the runs' train_log.csv and its inference time per chunk from `mvp eval`.
Every stage whose evaluation is in --work-dir is skipped, so a stopped run continues where it was.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

LOWDIM_KEYS = "robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object"


@dataclass(frozen=True)
class Scale:
    demos: int  # mixed-quality episodes in the dataset, a third per operator
    offline_steps: int  # training updates before any environment step, the same for every method
    online_stages: tuple[int, ...]  # total online environment steps after which MVP-RL and QC are evaluated
    eval_episodes: int
    eval_max_steps: int  # 0: the task's horizon
    batch_size: int
    hidden_dim: int  # of the policy and of each critic
    depth: int
    candidates: int  # N of best-of-N, in the bootstrap, online and at evaluation
    compile: bool  # torch.compile the RL update's bootstrap and critic loss (rl.compile)
    log_every: int


SCALES = {
    "small": Scale(demos=200, offline_steps=2000, online_stages=(500, 1000, 2000, 3000), eval_episodes=20,
                   eval_max_steps=0, batch_size=128, hidden_dim=256, depth=3, candidates=8, compile=True,
                   log_every=100),
    "quick": Scale(demos=6, offline_steps=12, online_stages=(8, 16), eval_episodes=2, eval_max_steps=30,
                   batch_size=16, hidden_dim=32, depth=2, candidates=4, compile=False, log_every=4),
}


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    head: str
    algo: str
    color: str  # of its line in the plot


# BC of the flow head separates what QC's critic adds from what its head does without one.
METHODS = (Method("bc", "BC (MVP head)", "mvp", "bc", "tab:grey"),
           Method("bc-flow", "BC (flow head, 10 Euler steps)", "flow", "bc", "tab:brown"),
           Method("mvp-rl", "MVP-RL", "mvp", "mvp-rl", "tab:blue"),
           Method("qc", "QC (flow head, 10 Euler steps)", "flow", "mvp-rl", "tab:orange"))


def mvp(*arguments: object) -> list[object]:
    return [Path(sys.executable).with_name("mvp"), *arguments]


def run(command: list[object], log: list[str]) -> float:
    """Runs an `mvp` command, noting it in `log`; returns its wall seconds."""
    command = [str(part) for part in command]
    log.append(shlex.join(["mvp", *command[1:]]))
    print(f"$ {log[-1]}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                             "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    return time.perf_counter() - started


def training_config(scale: Scale) -> dict:
    """The settings every method shares, as the YAML of `mvp train --config`."""
    return {"batch_size": scale.batch_size, "log_every": scale.log_every,
            "policy": {"hidden_dim": scale.hidden_dim, "depth": scale.depth},
            "rl": {"num_candidates": scale.candidates, "critic_hidden_dim": scale.hidden_dim,
                   "critic_depth": scale.depth, "compile": scale.compile}}


def dataset_summary(path: Path) -> dict:
    """Per operator of the mixed-quality file: its episodes, how many succeed, their mean length."""
    with h5py.File(path, "r") as file:
        demos = [file["data"][name] for name in file["data"]]
        operators = {}
        for operator in sorted({str(demo.attrs["operator"]) for demo in demos}):
            own = [demo for demo in demos if str(demo.attrs["operator"]) == operator]
            operators[operator] = {"episodes": len(own),
                                   "successes": sum(bool(np.max(demo["rewards"][()]) >= 1.0) for demo in own),
                                   "mean_steps": round(float(np.mean([demo.attrs["num_samples"] for demo in own])), 1)}
        return {"episodes": len(demos), "train_mask_episodes": len(file["mask"]["train"]), "operators": operators}


def trained_step(out: Path) -> int:
    state = out / "training_state.json"
    return json.loads(state.read_text())["step"] if state.exists() else 0


def online_episodes(out: Path, step: int) -> dict:
    """The online episodes finished by `step` and their success rate while training (best-of-N,
    open loop), from the last row train_log.csv holds for that step."""
    with (out / "train_log.csv").open() as stream:
        row = [row for row in csv.DictReader(stream) if int(row["step"]) == step][-1]
    return {"online_episodes": int(row["episodes"]), "online_success_rate": round(float(row["success_rate"]), 3)}


def log_rate(out: Path, first_step: int, last_step: int) -> float:
    """Steps per second over the rows of train_log.csv logged in (first_step, last_step]. Each process
    (the run, and each --resume) appends rows with seconds counted from its own start; each one's
    steps are timed from its first row, so that its start (loading, compilation) is left out."""
    with (out / "train_log.csv").open() as stream:
        rows = [(int(row["step"]), float(row["seconds"])) for row in csv.DictReader(stream)
                if first_step < int(row["step"]) <= last_step]
    processes: list[list[tuple[int, float]]] = []
    for step, seconds in rows:
        if not processes or step <= processes[-1][-1][0] or seconds < processes[-1][-1][1]:
            processes.append([])
        processes[-1].append((step, seconds))
    timed = [(process[-1][0] - process[0][0], process[-1][1] - process[0][1]) for process in processes
             if len(process) > 1]
    if not timed:
        raise SystemExit(f"{out / 'train_log.csv'}: no process logged two rows between steps {first_step} and "
                         f"{last_step}; lower log_every")
    return round(sum(steps for steps, _ in timed) / sum(seconds for _, seconds in timed), 3)


class Comparison:
    def __init__(self, args: argparse.Namespace, scale: Scale):
        self.args, self.scale = args, scale
        self.work = args.work_dir
        self.config_path = self.work / "train.yaml"

    def dataset_command(self) -> list[object]:
        return mvp("demos", "--task", "lift", "--quality", "mixed", "--episodes", self.scale.demos,
                   "--seed", self.args.seed, "--out", self.args.dataset)

    def write_dataset(self) -> None:
        if not self.args.dataset.exists():
            self.args.dataset.parent.mkdir(parents=True, exist_ok=True)
            run(self.dataset_command(), [])

    def train(self, method: Method, out: Path, online_steps: int, commands: list[str]) -> float:
        """Trains `out` to the offline steps and `online_steps`, resuming it if it exists; 0 s if it is there."""
        target = self.scale.offline_steps + online_steps
        done = trained_step(out)
        if done > target:
            raise SystemExit(f"{out} is trained past step {target} (at {done}) while its evaluation there is "
                             "missing: remove the directory to run this method again")
        if done == target:
            return 0.0
        command = mvp("train", "--out", out, "--steps", self.scale.offline_steps, "--no-progress")
        if done:
            command += ["--resume"]
        else:
            command += ["--config", self.config_path, "--dataset", self.args.dataset, "--obs-keys", LOWDIM_KEYS,
                        "--head", method.head, "--algo", method.algo, "--horizon", 5, "--seed", self.args.seed,
                        "--threads", 1]
        if online_steps:
            command += ["--online-steps", online_steps]
        return run(command, commands)

    def evaluate(self, method: Method, out: Path, online_steps: int) -> dict:
        """The success of `out` on the evaluation seeds, read from its JSON (run if missing)."""
        path = out / f"eval_online_{online_steps}.json"
        best_of = 1 if method.algo == "bc" else self.scale.candidates
        if not path.exists():
            commands: list[str] = []
            load_before = os.getloadavg()[0]
            train_seconds = self.train(method, out, online_steps, commands)
            command = mvp("eval", "--checkpoint", out, "--episodes", self.scale.eval_episodes,
                          "--seed", self.args.eval_seed, "--best-of", best_of, "--torch-threads", 1,
                          "--json", path, "--no-progress")
            if self.scale.eval_max_steps:
                command += ["--max-steps", self.scale.eval_max_steps]
            eval_seconds = run(command, commands)
            result = json.loads(path.read_text())
            result["driver"] = {"commands": commands, "train_wall_seconds": round(train_seconds, 1),
                                "eval_wall_seconds": round(eval_seconds, 1),
                                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
            path.write_text(json.dumps(result, indent=2) + "\n")
        result = json.loads(path.read_text())
        return {"env_steps": online_steps, "updates": self.scale.offline_steps + online_steps,
                "successes": result["successes"], "episodes": result["episodes"],
                "success_rate": result["success_rate"], "success_rate_ci95": result["success_rate_ci95"],
                "seeds": result["seeds"], "best_of": result["settings"]["best_of"],
                "inference_ms_p50": result["inference_ms_p50"], "inference_ms_p99": result["inference_ms_p99"],
                **result["driver"]}

    def method_result(self, method: Method) -> dict:
        out = self.work / method.name
        stages = (0,) if method.algo == "bc" else (0, *self.scale.online_stages)
        points = [self.evaluate(method, out, online_steps) for online_steps in stages]
        offline = self.scale.offline_steps
        for point in points[1:]:
            point.update(online_episodes(out, offline + point["env_steps"]))
        return {"method": method.name, "label": method.label, "head": method.head, "algo": method.algo,
                "color": method.color,
                "best_of": points[0]["best_of"], "offline_updates_per_s": log_rate(out, 0, offline),
                "online_env_steps_per_s": log_rate(out, offline, offline + stages[-1]) if stages[-1] else None,
                "inference_ms_p50": points[0]["inference_ms_p50"], "points": points}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    last_step = max(point["env_steps"] for method in result["methods"] for point in method["points"])
    for method in result["methods"]:
        steps = [point["env_steps"] for point in method["points"]]
        rates = [point["success_rate"] for point in method["points"]]
        low = [point["success_rate"] - point["success_rate_ci95"][0] for point in method["points"]]
        high = [point["success_rate_ci95"][1] - point["success_rate"] for point in method["points"]]
        label = method["label"] + (f", best-of-{method['best_of']}" if method["best_of"] > 1 else "")
        if len(steps) == 1:  # BC takes no environment steps: its level, for reference
            axis.axhline(rates[0], linestyle="--", color=method["color"], label=f"{label} (offline only)")
            axis.errorbar(steps, rates, yerr=[low, high], fmt="o", color=method["color"], capsize=3)
        else:
            axis.errorbar(steps, rates, yerr=[low, high], marker="o", capsize=3, label=label, color=method["color"])
    scale = result["scale"]
    axis.set_xlim(-0.05 * last_step, 1.05 * last_step)
    axis.set_ylim(-0.05, 1.05)
    axis.set_xlabel("online environment steps (0: offline, after the same updates for every method)")
    axis.set_ylabel(f"success rate ({scale['eval_episodes']} episodes, 95% interval)")
    axis.set_title(f"Lift, mixed-quality data ({scale['demos']} episodes), {scale['depth']}x{scale['hidden_dim']}, "
                   f"batch {scale['batch_size']}, {scale['offline_steps']} offline updates", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "threads": 1}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run of every step, to check the driver")
    parser.add_argument("--dataset", type=Path, help="mixed-quality Lift file, written if missing "
                        "(default data/lift_mixed_<demos>.hdf5)")
    parser.add_argument("--work-dir", type=Path, help="the runs and their evaluations (default runs/rl_comparison "
                        "or runs/rl_comparison_quick)")
    parser.add_argument("--seed", type=int, default=0, help="of the demonstrations and of training")
    parser.add_argument("--eval-seed", type=int, default=1000000, help="evaluation episode i uses seed EVAL_SEED + i")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    args = parser.parse_args(argv)
    scale_name = "quick" if args.quick else "small"
    scale = SCALES[scale_name]
    args.dataset = args.dataset or Path(f"data/lift_mixed_{scale.demos}.hdf5")
    args.work_dir = args.work_dir or Path("runs/rl_comparison" + ("_quick" if args.quick else ""))

    comparison = Comparison(args, scale)
    comparison.write_dataset()
    comparison.work.mkdir(parents=True, exist_ok=True)
    comparison.config_path.write_text(yaml.safe_dump(training_config(scale), sort_keys=False))
    methods = [comparison.method_result(method) for method in METHODS]
    loads = [load for method in methods for point in method["points"] for load in point["load_average_1min"]]
    result = {
        "command": shlex.join([".venv/bin/python", "benchmarks/rl_comparison.py", *(argv or sys.argv[1:])]),
        "task": "lift", "dataset": str(args.dataset), "dataset_summary": dataset_summary(args.dataset),
        "scale_name": scale_name, "scale": asdict(scale),
        "training_config": training_config(scale), "obs_keys": LOWDIM_KEYS.split(","), "horizon": 5,
        "seeds": {"demos": args.seed, "training": args.seed,
                  "evaluation": list(range(args.eval_seed, args.eval_seed + scale.eval_episodes))},
        "machine": {**machine(), "load_average_1min_range": [min(loads), max(loads)]},
        "dataset_command": shlex.join(["mvp", *map(str, comparison.dataset_command()[1:])]), "methods": methods,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.plot)
    for method in methods:
        cells = ", ".join(f"{point['env_steps']}: {point['successes']}/{point['episodes']}" for point in method["points"])
        print(f"{method['label']}: {cells}; {method['offline_updates_per_s']} updates/s offline; "
              f"{method['inference_ms_p50']} ms per chunk")


if __name__ == "__main__":
    main()
