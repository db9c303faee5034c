"""The learning-core part of `mvp bench` (mvp_ros/bench/command.py): inference latency and training cost of
every head on the same backbone, and the cost of an RL update against a behaviour-cloning one.

Inference runs each head's fixed-shape sampling call the way a deployed policy runs it
(execution.py): eagerly, compiled with torch.compile, compiled ahead of time by AOTInductor on a
CPU, and on a GPU replayed as a CUDA graph. Every case is timed interleaved with the others in one
run (a block of calls of case A, of case B, ..., then again), so a noisy machine slows them alike
and the ratios to MVP 1-step stay meaningful.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..policy.config import PolicyConfig
from ..policy.critic import BestOfN, ChunkCritic, CriticConfig
from ..policy.execution import CAPTURING_MODES, graph_capturable, make_sampler, use_inference_layout
from ..policy.model import ChunkPolicyModel
from ..policy.normalizer import Normalization
from ..policy.threads import default_threads
from ..rl.config import RLConfig
from ..rl.learner import MvpRlLearner
from ..rl.replay import ChunkBatch
from .matmul_floor import MatmulFloor

ACTION_DIM, HORIZON, LOWDIM = 7, 5, 19
IMAGE_SHAPE = (84, 84, 3)
# name -> (head, steps shown in the table, PolicyConfig overrides, candidates per call); more than one
# candidate is the deployed select step (critic.BestOfN): N samples, the critic's values, the argmax
INFERENCE_CASES = {
    "mvp": ("mvp", 1, {}, 1),
    "mvp select best-of-16": ("mvp", 1, {}, 16),
    "flow": ("flow", 10, {}, 1),
    "ddim": ("diffusion", 10, {"diffusion_sampler": "ddim"}, 1),
    "ddpm": ("diffusion", 100, {}, 1),
    "mlp": ("mlp", 1, {}, 1),
}
TRAINING_HEADS = ("mvp", "flow", "diffusion", "mlp")
# RL updates (mvp_ros.rl.learner) -> their policy head: MVP-RL, and Q-chunking's best-of-N (the flow head)
RL_UPDATES = {"mvp-rl": "mvp", "qc": "flow"}
# Image training as `mvp train` runs it for models/lift_image: random 76x76 crops of the 84x84 cameras.
IMAGE_TRAINING = {"image_augmentation": "crop", "image_augmentation_pixels": 4}


@dataclass
class Case:
    name: str
    head: str
    steps: int
    run: Callable[[], object]
    mode: str = "eager"


def obs_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"state": (LOWDIM,)}
    if kind == "image":
        shapes.update({"agentview_image": IMAGE_SHAPE, "robot0_eye_in_hand_image": IMAGE_SHAPE})
    return shapes


NORMALIZATION = Normalization([-1.0] * ACTION_DIM, [1.0] * ACTION_DIM, {"state": [0.0] * LOWDIM},
                              {"state": [1.0] * LOWDIM})


def build(head: str, kind: str, overrides: dict, device: torch.device, width: int, depth: int) -> ChunkPolicyModel:
    config = PolicyConfig(head=head, action_dim=ACTION_DIM, horizon=HORIZON, obs_shapes=obs_shapes(kind),
                          hidden_dim=width, depth=depth, **overrides)
    return ChunkPolicyModel(config, NORMALIZATION).to(device).eval()


def build_critic(model: ChunkPolicyModel, width: int, depth: int) -> ChunkCritic:
    """A two-member critic ensemble as `mvp train --algo mvp-rl` builds it, on the model's device."""
    device = next(model.parameters()).device
    return ChunkCritic(model.config, NORMALIZATION, CriticConfig(hidden_dim=width, depth=depth)).to(device).eval()


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


def inference_cases(kind: str, modes: list[str], heads: list[str], device: torch.device, width: int,
                    depth: int) -> list[Case]:
    cases = []
    generator = torch.Generator(device=device).manual_seed(0)
    inputs = random_obs(kind, 1, device)
    for name in heads:
        head, steps, overrides, candidates = INFERENCE_CASES[name]
        model = use_inference_layout(build(head, kind, overrides, device, width, depth))
        if candidates > 1:
            model = BestOfN(model, use_inference_layout(build_critic(model, width, depth)))
        for mode in modes:
            if mode in CAPTURING_MODES and not graph_capturable(model.config):
                continue
            with torch.inference_mode():
                sampler = make_sampler(model, inputs, candidates, mode, generator)

            def run(sampler=sampler, candidates=candidates, chunk_dim=model.config.chunk_dim):
                with torch.inference_mode():
                    return sampler(torch.randn(candidates, chunk_dim, generator=generator, device=device))

            cases.append(Case(f"{name}/{kind}/{mode}", name, steps, run, mode))
    return cases


def training_cases(kind: str, device: torch.device, batch_size: int, width: int, depth: int) -> list[Case]:
    cases = []
    obs = random_obs(kind, batch_size, device)
    actions = torch.rand(batch_size, HORIZON, ACTION_DIM, device=device) * 2 - 1
    for head in TRAINING_HEADS:
        model = build(head, kind, IMAGE_TRAINING if kind == "image" else {}, device, width, depth).train()
        model.obs_encoder.image_encoders.to(memory_format=torch.channels_last)  # as mvp train does
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)

        def step(model=model, optimizer=optimizer):
            loss, _ = model.loss(obs, actions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        cases.append(Case(head, head, 1, step))
    return cases


def rl_batch(device: torch.device, batch_size: int) -> ChunkBatch:
    """A replay batch of random low-dim windows, every one bootstrapping, as mvp_ros.rl.replay samples them."""
    actions = torch.rand(batch_size, HORIZON, ACTION_DIM, device=device) * 2 - 1
    return ChunkBatch(obs=random_obs("lowdim", batch_size, device), actions=actions,
                      rewards=-torch.ones(batch_size, HORIZON, device=device),
                      step_mask=torch.ones(batch_size, HORIZON, device=device),
                      bootstrap=torch.ones(batch_size, device=device), next_obs=random_obs("lowdim", batch_size, device))


def rl_update_cases(device: torch.device, batch_size: int, width: int, depth: int, num_candidates: int,
                    compile_bootstrap: bool) -> tuple[list[Case], dict[str, MatmulFloor]]:
    """A behaviour-cloning update of the MVP head, and an MVP-RL and a QC update (mvp_ros.rl.learner
    at the same width and depth for the actor and the two critics), each with its arithmetic floor:
    its matrix multiplications, recorded from an eager update and replayed back to back."""
    batch, generator = rl_batch(device, batch_size), torch.Generator(device=device).manual_seed(0)
    optimizer_settings = SimpleNamespace(lr=3e-4, weight_decay=0.0, ema_decay=0.995)
    rl = RLConfig(num_candidates=num_candidates, critic_hidden_dim=width, critic_depth=depth, compile=compile_bootstrap)
    updates = {}
    bc_model = build("mvp", "lowdim", {}, device, width, depth).train()
    bc_optimizer = torch.optim.AdamW(bc_model.parameters(), lr=3e-4, weight_decay=0.0)

    def bc_update():
        loss, _ = bc_model.loss(batch.obs, batch.actions, generator)
        bc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        bc_optimizer.step()

    updates["bc"] = bc_update
    floors = {"bc": MatmulFloor(bc_update, device)}
    for name, head in RL_UPDATES.items():
        learner = MvpRlLearner(build(head, "lowdim", {}, device, width, depth).train(), NORMALIZATION,
                               optimizer_settings, rl, device)
        compiled = learner.next_values, learner.critic_loss
        learner.next_values, learner.critic_loss = learner._next_values, learner._critic_loss  # recorded eagerly
        floors[name] = MatmulFloor(lambda learner=learner: learner.update(batch, generator), device)
        learner.next_values, learner.critic_loss = compiled
        updates[name] = lambda learner=learner: learner.update(batch, generator)
    cases = [Case(name, name, 1, update) for name, update in updates.items()]
    cases += [Case(f"{name} floor", name, 1, floor.run) for name, floor in floors.items()]
    return cases, floors


def rl_training(device: torch.device, repeats: int, batch_size: int, width: int, depth: int, num_candidates: int,
                compile_bootstrap: bool = True) -> list[dict]:
    """Updates per second of BC, MVP-RL and QC and their floors, timed interleaved in blocks of two."""
    cases, floors = rl_update_cases(device, batch_size, width, depth, num_candidates, compile_bootstrap)
    samples = interleave(cases, repeats, warmup=2, device=device, block=2)
    medians = {name: float(np.percentile(values, 50)) for name, values in samples.items()}
    rows = []
    for name, floor in floors.items():
        median, floor_median = medians[name], medians[f"{name} floor"]
        rows.append({"update": name, "head": RL_UPDATES.get(name, "mvp"), "batch_size": batch_size,
                     "candidates": 1 if name == "bc" else num_candidates, "threads": torch.get_num_threads(),
                     "compiled_bootstrap": name != "bc" and compile_bootstrap,
                     "updates_per_s": round(1000 / median, 3), "update_ms_p50": round(median, 2),
                     "ratio_to_bc": round(median / medians["bc"], 2), "floor_ms_p50": round(floor_median, 2),
                     "ratio_to_floor": round(median / floor_median, 3), "matmuls": len(floor.calls),
                     "flops": floor.flops})
    return rows


def machine(device: torch.device) -> dict:
    """What the figures were measured on; the load average says how busy the machine was."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return {"platform": platform.platform(), "cpu": model, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4)


def benchmark(device: torch.device, repeats: int, image_repeats: int, train_repeats: int, batch_size: int,
              width: int, depth: int, modes: list[str], heads: list[str], image_train_repeats: int = 0,
              image_batch_sizes: tuple[int, ...] = (), train_threads: int | None = None, rl_repeats: int = 0,
              rl_candidates: int = 16, rl_compile: bool = True) -> dict:
    """`train_threads`: torch threads of the training part (if None, as many as `mvp train` takes)."""
    inference = []
    for kind, count in (("lowdim", repeats), ("image", image_repeats)):
        if count <= 0:
            continue
        # Each compiled case compiles `sample_with_noise` for another model, one more cache entry of that
        # one function: past torch.compile's limit (8) it would run the rest eagerly, so raise the limit
        # while these cases are built and timed, and fail rather than time an eager call as a compiled one.
        with torch._dynamo.config.patch(recompile_limit=torch._dynamo.config.recompile_limit + len(heads),
                                        fail_on_recompile_limit_hit=True):
            cases = inference_cases(kind, modes, heads, device, width, depth)
            samples = interleave(cases, count, warmup=max(3, count // 10), device=device)
        for case in cases:
            values = samples[case.name]
            reference = samples.get(f"mvp/{kind}/{case.mode}")
            inference.append({"head": case.head, "steps": case.steps, "obs": kind, "mode": case.mode,
                              "device": device.type, "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
                              "ratio_to_mvp": None if reference is None else
                              round(float(np.percentile(values, 50) / np.percentile(reference, 50)), 2),
                              "samples_ms": [round(value, 4) for value in values]})
    training = []
    groups = [("lowdim", batch_size, train_repeats)] + [("image", size, image_train_repeats) for size in image_batch_sizes]
    threads = torch.get_num_threads()
    torch.set_num_threads(train_threads or default_threads())
    try:
        for kind, size, count in groups:
            if count <= 0:
                continue
            samples = interleave(training_cases(kind, device, size, width, depth), count, warmup=3, device=device)
            flow = np.percentile(samples["flow"], 50)
            for head, values in samples.items():
                median = float(np.percentile(values, 50))
                training.append({"head": head, "obs": kind, "batch_size": size, "threads": torch.get_num_threads(),
                                 "steps_per_s": round(1000 / median, 2), "step_ms_p50": round(median, 3),
                                 "ratio_to_flow": round(median / flow, 3)})
        rl_updates = rl_training(device, rl_repeats, batch_size, width, depth, rl_candidates, rl_compile) \
            if rl_repeats > 0 else []
    finally:
        torch.set_num_threads(threads)
    return {"machine": machine(device),
            "backbone": f"{depth}x{width} GELU MLP", "chunk": [HORIZON, ACTION_DIM],
            "inference": inference, "training": training, "rl_training": rl_updates}
