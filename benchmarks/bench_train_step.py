"""Training-step cost of each head on the same backbone, measured interleaved in one run.

    .venv/bin/python benchmarks/bench_train_step.py --json benchmarks/results/train_step.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from mvp_ros.policy.config import PolicyConfig
from mvp_ros.policy.model import ChunkPolicyModel
from mvp_ros.policy.normalizer import Normalization


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    obs_dim, action_dim, horizon = 19, 7, 5
    normalization = Normalization([-1.0] * action_dim, [1.0] * action_dim, {"obs": [0.0] * obs_dim},
                                  {"obs": [1.0] * obs_dim})
    runners = {}
    for head in ("mvp", "flow", "diffusion", "mlp"):
        model = ChunkPolicyModel(PolicyConfig(head=head, action_dim=action_dim, horizon=horizon,
                                              obs_shapes={"obs": (obs_dim,)}), normalization)
        runners[head] = (model, torch.optim.Adam(model.parameters(), lr=3e-4))
    obs = {"obs": torch.randn(args.batch_size, 1, obs_dim)}
    actions = torch.rand(args.batch_size, horizon, action_dim) * 2 - 1

    seconds: dict[str, list[float]] = {head: [] for head in runners}
    for _ in range(args.steps + 5):
        for head, (model, optimizer) in runners.items():
            started = time.perf_counter()
            loss, _ = model.loss(obs, actions)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds[head].append(time.perf_counter() - started)
    median_ms = {head: 1000 * statistics.median(values[5:]) for head, values in seconds.items()}
    result = {
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "batch_size": args.batch_size, "backbone": "4x512 GELU MLP", "chunk": [horizon, action_dim],
        "training": [{"head": head, "step_ms_p50": round(ms, 3), "steps_per_s": round(1000 / ms, 2),
                      "ratio_to_flow": round(ms / median_ms["flow"], 3)} for head, ms in median_ms.items()],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    for row in result["training"]:
        print(f"{row['head']:>10}: {row['step_ms_p50']:8.2f} ms/step  {row['ratio_to_flow']:.2f}x flow")


if __name__ == "__main__":
    main()
