"""`mvp bench`: inference latency and training cost of every head on the same backbone.

Every case is timed interleaved with the others in one run (a block of calls of case A, of
case B, ..., then again), so a noisy machine slows them alike and the ratios to MVP 1-step stay
meaningful.

    mvp bench --json bench.json --plot bench.png [--device cpu|cuda] [--repeats 200]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import PolicyConfig
from .model import ChunkPolicyModel
from .normalizer import Normalization
from .policy import resolve_device

ACTION_DIM, HORIZON, LOWDIM = 7, 5, 19
IMAGE_SHAPE = (84, 84, 3)
# name -> (head, steps shown in the table, PolicyConfig overrides, candidates per call)
INFERENCE_CASES = {
    "mvp": ("mvp", 1, {}, 1),
    "mvp best-of-16": ("mvp", 1, {}, 16),
    "flow": ("flow", 10, {}, 1),
    "ddim": ("diffusion", 10, {"diffusion_sampler": "ddim"}, 1),
    "ddpm": ("diffusion", 100, {}, 1),
    "mlp": ("mlp", 1, {}, 1),
}
TRAINING_HEADS = ("mvp", "flow", "diffusion", "mlp")


@dataclass
class Case:
    name: str
    head: str
    steps: int
    run: Callable[[], object]


def obs_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"state": (LOWDIM,)}
    if kind == "image":
        shapes.update({"agentview_image": IMAGE_SHAPE, "robot0_eye_in_hand_image": IMAGE_SHAPE})
    return shapes


def build(head: str, kind: str, overrides: dict, device: torch.device, width: int, depth: int) -> ChunkPolicyModel:
    config = PolicyConfig(head=head, action_dim=ACTION_DIM, horizon=HORIZON, obs_shapes=obs_shapes(kind),
                          hidden_dim=width, depth=depth, **overrides)
    normalization = Normalization([-1.0] * ACTION_DIM, [1.0] * ACTION_DIM, {"state": [0.0] * LOWDIM},
                                  {"state": [1.0] * LOWDIM})
    return ChunkPolicyModel(config, normalization).to(device).eval()


def random_obs(kind: str, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    obs = {}
    for key, shape in obs_shapes(kind).items():
        if len(shape) == 3:
            obs[key] = torch.randint(0, 256, (batch, 1, *shape), dtype=torch.uint8, device=device)
        else:
            obs[key] = torch.randn(batch, 1, *shape, device=device)
    return obs


def timed(function: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000


def interleave(cases: list[Case], repeats: int, warmup: int, device: torch.device, block: int = 10) -> dict[str, list[float]]:
    """Round-robin over the cases in blocks of `block` calls; the first call of each block is not kept.

    Blocks rather than single calls, because alternating six networks call by call measures a
    cold cache that a deployed policy, running alone, never sees.
    """
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    for case in cases:
        for _ in range(warmup):
            case.run()
    while any(len(values) < repeats for values in samples.values()):
        for case in cases:
            case.run()
            for _ in range(min(block, repeats - len(samples[case.name]))):
                samples[case.name].append(timed(case.run, device))
    return samples


def inference_cases(kinds: list[str], device: torch.device, width: int, depth: int) -> list[Case]:
    cases = []
    generator = torch.Generator(device=device).manual_seed(0)
    for kind in kinds:
        obs = random_obs(kind, 1, device)
        for name, (head, steps, overrides, candidates) in INFERENCE_CASES.items():
            model = build(head, kind, overrides, device, width, depth)

            def run(model=model, obs=obs, candidates=candidates):
                with torch.inference_mode():
                    return model.sample(obs, candidates, generator)

            cases.append(Case(f"{name}/{kind}", name, steps, run))
    return cases


def training_cases(device: torch.device, batch_size: int, width: int, depth: int) -> list[Case]:
    cases = []
    obs = random_obs("lowdim", batch_size, device)
    actions = torch.rand(batch_size, HORIZON, ACTION_DIM, device=device) * 2 - 1
    for head in TRAINING_HEADS:
        model = build(head, "lowdim", {}, device, width, depth).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)

        def step(model=model, optimizer=optimizer):
            loss, _ = model.loss(obs, actions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        cases.append(Case(head, head, 1, step))
    return cases


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4)


def benchmark(device: torch.device, repeats: int, image_repeats: int, train_repeats: int, batch_size: int,
              width: int, depth: int) -> dict:
    inference = []
    for kind, count in (("lowdim", repeats), ("image", image_repeats)):
        if count <= 0:
            continue
        cases = inference_cases([kind], device, width, depth)
        samples = interleave(cases, count, warmup=max(3, count // 10), device=device)
        reference = np.percentile(samples[f"mvp/{kind}"], 50)
        for case in cases:
            values = samples[case.name]
            inference.append({"head": case.head, "steps": case.steps, "obs": kind, "mode": "eager",
                              "device": device.type, "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
                              "ratio_to_mvp": round(float(np.percentile(values, 50) / reference), 2),
                              "samples_ms": [round(value, 4) for value in values]})
    training = []
    if train_repeats > 0:
        samples = interleave(training_cases(device, batch_size, width, depth), train_repeats, warmup=3, device=device)
        flow = np.percentile(samples["flow"], 50)
        for head, values in samples.items():
            median = float(np.percentile(values, 50))
            training.append({"head": head, "steps_per_s": round(1000 / median, 2), "step_ms_p50": round(median, 3),
                             "ratio_to_flow": round(median / flow, 3), "batch_size": batch_size})
    return {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"},
            "backbone": f"{depth}x{width} GELU MLP", "chunk": [HORIZON, ACTION_DIM],
            "inference": inference, "training": training}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({row["obs"] for row in result["inference"]})
    figure, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        rows = [row for row in result["inference"] if row["obs"] == kind]
        axis.boxplot([row["samples_ms"] for row in rows], showfliers=False)
        axis.set_xticks(range(1, len(rows) + 1), [f"{row['head']}\n{row['steps']} step(s)" for row in rows], fontsize=8)
        axis.set_yscale("log")
        axis.set_ylabel("latency per chunk (ms)")
        axis.set_title(f"{kind} observations, batch 1, {result['machine']['device_name']}")
        axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the latency distributions")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per low-dim inference case")
    parser.add_argument("--image-repeats", type=int, default=50, help="timed calls per image case (0: skip)")
    parser.add_argument("--train-repeats", type=int, default=30, help="timed training steps per head (0: skip)")
    parser.add_argument("--batch-size", type=int, default=256, help="training batch size")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--width", type=int, default=512, help="backbone width (default 512)")
    parser.add_argument("--depth", type=int, default=4, help="backbone depth (default 4)")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    result = benchmark(resolve_device(args.device), args.repeats, args.image_repeats, args.train_repeats,
                       args.batch_size, args.width, args.depth)
    print(f"{'head':>16} {'steps':>5} {'obs':>6} {'p50 ms':>8} {'p99 ms':>8} {'x mvp':>6}")
    for row in result["inference"]:
        print(f"{row['head']:>16} {row['steps']:>5} {row['obs']:>6} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} "
              f"{row['ratio_to_mvp']:>6.2f}")
    for row in result["training"]:
        print(f"train {row['head']:>10}: {row['step_ms_p50']:8.2f} ms/step, {row['steps_per_s']:7.2f} steps/s, "
              f"{row['ratio_to_flow']:.2f}x flow")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0
