"""IVC ablation: one-step MVP on the multimodal toy with the IVC weight lambda in {0, 0.5, 1}.

    nice .venv/bin/python benchmarks/ivc_ablation.py --json benchmarks/results/ivc_ablation.json

Each (lambda, seed) trains MVP with the same seeds for data, noise and initialization
(test/helpers/toy.py train_toy: Adam with cosine decay, fresh toy batches), then measures one-step
samples a = eps + u(eps, 0, 1 | o):
  near_mode, between_modes, balance, sliced_w1   where the samples fall (see toy.mode_metrics);
  flow_map_error   mean |one-step sample - exact flow endpoint| (normalized units), the exact
                   endpoint from integrating the toy's closed-form marginal velocity;
  boundary_error   mean |u(z, t, t | o) - v(z, t | o)| at t ~ U(0, 1), z on the path: the
                   quantity the IVC term trains (normalized units). With adaptive weighting
                   (p > 0) the losses are no longer squared errors, so their minimizer is not the
                   conditional mean (p = 0.5 makes it |delta|, a geometric median): run with
                   --adaptive-weight-power 0 to see IVC alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from mvp_ros.policy.config import PolicyConfig
from mvp_ros.policy.model import ChunkPolicyModel
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "helpers"))  # the toy task the tests use
from toy import ToyTask, evaluate_toy, exact_flow, model_inputs, train_toy  # noqa: E402

METRICS = ("near_mode", "between_modes", "balance", "sliced_wasserstein", "flow_map_error", "boundary_error",
           "train_seconds")


@torch.no_grad()
def field_errors(model: ChunkPolicyModel, task: ToyTask, samples: int, seed: int) -> dict[str, float]:
    """flow_map_error and boundary_error of the learned mean velocity against the toy's exact field."""
    generator = torch.Generator().manual_seed(seed)
    obs, actions = task.sample_batch(samples, generator)
    noise, path_noise = torch.randn(2, samples, 2, generator=generator)
    t = torch.rand(samples, generator=generator)
    cond = model.obs_encoder(model_inputs(obs))
    scaler = model.action_scaler
    exact_args = (obs.double(), scaler.center.double(), scaler.half_range.double())

    zeros, ones = torch.zeros(samples), torch.ones(samples)
    one_step = noise + model.backbone(noise, cond, zeros, ones)
    endpoint = exact_flow(task, exact_args[0], noise.double(), *exact_args[1:]).float()

    z = (1 - t)[:, None] * path_noise + t[:, None] * scaler.normalize(actions)
    velocity = task.marginal_velocity(exact_args[0], z.double(), t.double(), *exact_args[1:]).float()
    return {"flow_map_error": (one_step - endpoint).norm(dim=-1).mean().item(),
            "boundary_error": (model.backbone(z, cond, t, t) - velocity).norm(dim=-1).mean().item()}


def run_one(ivc_weight: float, seed: int, task: ToyTask, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    model = train_toy("mvp", args.steps, seed, task, batch_size=args.batch_size, learning_rate=args.learning_rate,
                      hidden_dim=args.hidden_dim, depth=args.depth, ivc_weight=ivc_weight,
                      adaptive_weight_power=args.adaptive_weight_power)
    train_seconds = time.perf_counter() - start
    metrics = evaluate_toy(model, task, args.samples, seed=1000 + seed)
    metrics.update(field_errors(model, task, args.samples, seed=2000 + seed))
    return {"ivc_weight": ivc_weight, "seed": seed, "train_seconds": train_seconds, **metrics}


def summarize(runs: list[dict], weights: list[float]) -> dict[str, dict[str, dict[str, float]]]:
    summary = {}
    for weight in weights:
        selected = [run for run in runs if run["ivc_weight"] == weight]
        summary[str(weight)] = {
            name: {"mean": statistics.fmean(run[name] for run in selected),
                   "std": statistics.pstdev(run[name] for run in selected),
                   "min": min(run[name] for run in selected), "max": max(run[name] for run in selected)}
            for name in METRICS
        }
    return summary


def table(summary: dict) -> str:
    header = "| lambda | " + " | ".join(METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for weight, stats in summary.items():
        cells = [f"{stats[name]['mean']:.3f} ± {stats[name]['std']:.3f}" for name in METRICS]
        lines.append(f"| {weight} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ivc-weights", default="0,0.5,1", help="comma-separated lambda values")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, the same for every lambda")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--adaptive-weight-power", type=float, default=PolicyConfig.adaptive_weight_power,
                        help="p of the adaptive weight 1 / (|delta|^2 + c)^p; 0 gives plain squared errors")
    parser.add_argument("--modes", type=int, default=2, help="number of modes of the toy")
    parser.add_argument("--samples", type=int, default=4000, help="one-step samples per evaluation")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/ivc_ablation.json"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    weights = [float(value) for value in args.ivc_weights.split(",")]
    seeds = [int(value) for value in args.seeds.split(",")]
    task = ToyTask(num_modes=args.modes)
    load_before = os.getloadavg()
    runs = []
    for seed, weight in tqdm([(seed, weight) for seed in seeds for weight in weights], desc="ivc ablation"):
        runs.append(run_one(weight, seed, task, args))
        tqdm.write(" ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                            for key, value in runs[-1].items()))

    summary = summarize(runs, weights)
    result = {
        "command": " ".join(sys.argv),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "task": vars(task) | {"near_radius": task.near_radius, "between_radius": task.between_radius},
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "summary": summary, "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(table(summary))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
