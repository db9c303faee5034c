"""Side by side on one task: every head on the same backbone, data and training budget.

Trains each variant with `mvp train`, evaluates it with `mvp eval` on the same seeds, and
writes one JSON and one Markdown table (success rate, inference time per chunk, training time):

    .venv/bin/python benchmarks/compare_heads.py --dataset data/lift.hdf5 --steps 10000 --episodes 50
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

VARIANTS = {  # name -> (head, policy overrides)
    "mvp": ("mvp", {}),
    "mvp (ivc_weight 0)": ("mvp", {"ivc_weight": 0.0}),
    "flow (10 Euler steps)": ("flow", {}),
    "diffusion (DDIM 10 steps)": ("diffusion", {"diffusion_sampler": "ddim"}),
    "diffusion (DDPM 100 steps)": ("diffusion", {}),
    "mlp": ("mlp", {}),
}
LOWDIM_KEYS = "robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object"


def mvp_command(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).with_name("mvp")), *arguments]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--obs-keys", default=LOWDIM_KEYS)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/compare_heads"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/compare_heads.json"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    args = parser.parse_args()

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    rows = []
    for name in [part.strip() for part in args.variants.split(",")]:
        head, overrides = VARIANTS[name]
        slug = name.split(" ")[0] + ("_ivc0" if "ivc_weight 0" in name else "") + ("_ddpm" if "DDPM" in name else "")
        out = args.work_dir / slug
        config_path = args.work_dir / f"{slug}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump({"policy": overrides}))
        if not (out / "config.json").exists():
            started = time.perf_counter()
            subprocess.run(mvp_command("train", "--config", str(config_path), "--dataset", args.dataset,
                                       "--out", str(out), "--obs-keys", args.obs_keys, "--head", head,
                                       "--steps", str(args.steps), "--seed", str(args.seed), "--no-progress"),
                           check=True, env=environment)
            (out / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
        evaluation = out / "eval.json"
        subprocess.run(mvp_command("eval", "--checkpoint", str(out), "--episodes", str(args.episodes),
                                   "--seed", str(args.seed), "--temporal-ensemble", "--json", str(evaluation),
                                   "--no-progress"), check=True, env=environment)
        result = json.loads(evaluation.read_text())
        rows.append({"variant": name, "head": head, "policy_overrides": overrides,
                     "success_rate": result["success_rate"], "successes": result["successes"],
                     "episodes": result["episodes"], "success_rate_ci95": result["success_rate_ci95"],
                     "inference_ms_p50": result["inference_ms_p50"], "inference_ms_p99": result["inference_ms_p99"],
                     "train_seconds": float((out / "wall_seconds.txt").read_text())})
    mvp_p50 = next((row["inference_ms_p50"] for row in rows if row["variant"] == "mvp"), None)
    for row in rows:
        row["inference_ratio_to_mvp"] = round(row["inference_ms_p50"] / mvp_p50, 2) if mvp_p50 else None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"dataset": args.dataset, "steps": args.steps, "episodes": args.episodes,
                                     "seed": args.seed, "rows": rows}, indent=2) + "\n")
    print("| variant | success (95% CI) | inference p50 ms (x MVP) | training s |")
    print("|---|---|---|---|")
    for row in rows:
        low, high = row["success_rate_ci95"]
        print(f"| {row['variant']} | {row['success_rate']:.2f} ({low:.2f}-{high:.2f}) | "
              f"{row['inference_ms_p50']:.2f} ({row['inference_ratio_to_mvp']}x) | {row['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
