"""What each change to the two-camera MVP training step bought, measured side by side in one run.

Each row adds one change to the row before it, starting from the step as it was (a residual block
on every encoder stage, images in NCHW, no augmentation, one torch thread), up to the one-thread
step models/lift_image trained with, then one thread per core; a last group of rows tries
alternatives to that one-thread step: bf16 autocast (`mvp train --precision bf16`), batches
gathered ahead by a background thread (`--prefetch`), torch.compile of the encoder or the backbone,
other encoders. Every row is a whole `mvp train` step (its `optimizer_step` and `Batches`) at batch
64: the batch gathered from a Robomimic-format file of two 84x84 cameras and proprioception, the
loss, backward, AdamW and the EMA update. The rows run interleaved in blocks, so a busy machine
slows them alike; wall and CPU time per step are both kept: on a shared machine a one-thread row's
CPU time moves far less than its wall time, which counts the time other processes held the core.
A row whose first step fails (a torch.compile that cannot trace the step) is recorded with its
error instead of a time. Beside the rows: whether torch.compile can take the whole loss, what it
does with the backbone inside the MVP target's torch.func.jvp, the MVP target alone eager against
compiled with the JVP inside the compiled function, and how far bf16 autocast moves the JVP.

    .venv/bin/python benchmarks/image_step_ablation.py --json benchmarks/results/image_step_ablation.json

On a GPU (`--device cuda`, run by benchmarks/gpu_check.sh at batch 64 and 256) the rows are fp32
against bf16, with and without prefetching and compiling.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch._dynamo.utils import counters

from mvp_ros.bench.policy_timing import machine
from mvp_ros.data.robomimic import Episode, RobomimicDataset, write_robomimic
from mvp_ros.policy.config import PolicyConfig
from mvp_ros.policy.model import ChunkPolicyModel, update_ema
from mvp_ros.policy.mvp import mean_flow_target
from mvp_ros.policy.normalizer import Normalization
from mvp_ros.training.batches import Batches
from mvp_ros.training.behaviour_cloning import optimizer_step
from mvp_ros.training.workspace import autocast, to_tensors

CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")
PROPRIOCEPTION = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}
ACTION_DIM, HORIZON = 7, 5


@dataclass
class Variant:
    change: str
    policy: dict  # PolicyConfig overrides
    threads: int = 1
    nchw_input: bool = False  # the encoders' input made contiguous NCHW, as the image path was before
    channels_last_weights: bool = True
    prefetch: int = 0  # batches gathered ahead by a background thread (mvp train --prefetch)
    precision: str = "fp32"  # mvp train --precision
    compile: tuple[str, ...] = ()  # submodules of the model compiled with torch.compile


PREVIOUS_ENCODER = {"image_encoder_blocks": (1, 1, 1)}
CROP = {"image_augmentation": "crop", "image_augmentation_pixels": 4}


def variants(cores: int) -> tuple[list[Variant], list[Variant]]:
    """(cumulative changes, alternatives to the one-thread step with crops)."""
    cumulative = [
        Variant("previous step: a residual block per encoder stage, NCHW images, 1 thread", PREVIOUS_ENCODER,
                nchw_input=True, channels_last_weights=False),
        Variant("+ channels-last images into the encoder", PREVIOUS_ENCODER, channels_last_weights=False),
        Variant("+ channels-last encoder weights", PREVIOUS_ENCODER),
        Variant("+ one residual block, on the last stage (the new default encoder)", {}),
        Variant("+ random 76x76 crops of the 84x84 images", CROP),
        Variant(f"+ {cores} threads (one per core)", CROP, threads=cores),
    ]
    alternatives = [
        Variant("alternative: random shift (pad 4) instead of crop", {"image_augmentation": "shift"}),
        Variant("alternative: + 2 batches gathered ahead in a background thread (--prefetch 2)", CROP, prefetch=2),
        Variant(f"alternative: + --prefetch 2, {cores} threads", CROP, threads=cores, prefetch=2),
        Variant("alternative: + bf16 autocast (--precision bf16)", CROP, precision="bf16"),
        Variant(f"alternative: + bf16 autocast, {cores} threads", CROP, threads=cores, precision="bf16"),
        Variant("alternative: + torch.compile of the observation encoder", CROP, compile=("obs_encoder",)),
        Variant("alternative: + torch.compile of the backbone (inside the JVP)", CROP, compile=("backbone",)),
        Variant("alternative: + torch.compile of the encoder and the backbone", CROP,
                compile=("obs_encoder", "backbone")),
        Variant("alternative: a residual block per stage, with the crops", {**PREVIOUS_ENCODER, **CROP}),
        Variant("alternative: a narrower last stage, image_encoder_widths (16, 32, 32)",
                {**CROP, "image_encoder_widths": (16, 32, 32)}),
        Variant("alternative: narrower stages, image_encoder_widths (8, 16, 32)",
                {**CROP, "image_encoder_widths": (8, 16, 32)}),
    ]
    return cumulative, alternatives


def gpu_variants() -> list[Variant]:
    """The rows of a CUDA run: the default step (crops, channels-last) in fp32 and bf16, and the other
    two settings on top of bf16."""
    return [
        Variant("fp32", CROP),
        Variant("bf16 autocast (--precision bf16, auto's choice on CUDA)", CROP, precision="bf16"),
        Variant("bf16 + 2 batches gathered ahead (--prefetch 2)", CROP, precision="bf16", prefetch=2),
        Variant("bf16 + torch.compile of the observation encoder", CROP, precision="bf16", compile=("obs_encoder",)),
        Variant("fp32 + 2 batches gathered ahead (--prefetch 2)", CROP, prefetch=2),
    ]


def write_dataset(path: Path, episodes: int, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_robomimic(path, [Episode(
        obs={**{key: rng.integers(0, 256, (steps, 84, 84, 3), dtype=np.uint8) for key in CAMERAS},
             **{key: rng.normal(size=(steps, size)).astype(np.float32) for key, size in PROPRIOCEPTION.items()}},
        actions=rng.uniform(-1, 1, (steps, ACTION_DIM))) for _ in range(episodes)], compression=None)


class Step:
    """One variant's training step, as `mvp train` runs it, on its own model and optimizer."""

    def __init__(self, variant: Variant, dataset: RobomimicDataset, batch_size: int, seed: int, device: torch.device):
        self.variant, self.device = variant, device
        config = PolicyConfig(head="mvp", action_dim=ACTION_DIM, horizon=HORIZON, obs_shapes=dataset.obs_shapes,
                              **variant.policy)
        lowdim = {key: dataset.all_obs(key) for key in config.lowdim_keys}
        normalization = Normalization.from_data(dataset.all_actions(), lowdim)
        torch.manual_seed(seed)
        self.model = ChunkPolicyModel(config, normalization).train()
        if variant.channels_last_weights:
            self.model.obs_encoder.image_encoders.to(memory_format=torch.channels_last)
        if variant.nchw_input:
            for encoder in self.model.obs_encoder.image_encoders.values():
                encoder.register_forward_pre_hook(lambda module, inputs: (inputs[0].contiguous(),))
        self.model.to(device)
        for name in variant.compile:
            getattr(self.model, name).compile()
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-4)
        self.generator = torch.Generator(device).manual_seed(seed)
        self.batches = Batches(dataset, batch_size, np.random.default_rng(seed), device, variant.prefetch)

    def __call__(self) -> None:
        torch.set_num_threads(self.variant.threads)
        obs, actions = next(self.batches)
        optimizer_step(self.model.loss, self.optimizer, obs, actions, self.generator, self.variant.precision,
                       self.device)
        update_ema(self.ema, self.model, 0.995)

    def first_step_error(self) -> str | None:
        """None if a step runs, else its error (torch.compile fails at the first call)."""
        try:
            self()
            return None
        except Exception as error:  # dynamo and inductor raise many types; the message is the result
            self.batches.close()
            return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"


def timed(step: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds of one call, to the end of its GPU work; CPU time of this process, all its threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(steps: list[Step], repeats: int, warmup: int, block: int,
            device: torch.device) -> list[dict[str, list[float]]]:
    """Round-robin in blocks of `block` timed steps; each block starts with one untimed step."""
    for step in steps:
        for _ in range(warmup):
            step()
    samples = [{"wall": [], "cpu": []} for _ in steps]
    while len(samples[0]["wall"]) < repeats:
        for step, sample in zip(steps, samples):
            step()
            for _ in range(min(block, repeats - len(sample["wall"]))):
                wall, cpu = timed(step, device)
                sample["wall"].append(wall)
                sample["cpu"].append(cpu)
    return samples


def time_of_data(dataset: RobomimicDataset, batch_size: int, repeats: int = 50) -> float:
    """Median seconds to gather one batch and make it tensors (what a background thread could hide)."""
    rng = np.random.default_rng(1)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        to_tensors(dataset.get_batch(rng.integers(len(dataset), size=batch_size)), torch.device("cpu"))
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def whole_loss_compiles(step: Step) -> str:
    """torch.compile of the whole loss (with the MVP target's forward-mode JVP): 'yes' or the error."""
    model = copy.deepcopy(step.model)
    obs, actions = next(step.batches)
    try:
        torch.compile(model.loss)(obs, actions)
        return "yes"
    except Exception as error:  # dynamo raises many types; the message is the result
        return f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"


def target_inputs(step: Step) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch's normalized action chunks, its encoded observations and times t in [0, 0.5)."""
    obs, actions = next(step.batches)
    with torch.no_grad():
        cond = step.model.obs_encoder(obs, step.generator)
    t = torch.rand(actions.shape[0], generator=step.generator, device=step.device) * 0.5
    return step.model.action_scaler.normalize(actions).flatten(1), cond, t


def compiled_backbone_inside_jvp(step: Step) -> str:
    """What torch.compile of the backbone does inside the MVP target's torch.func.jvp: 'compiled', or
    dynamo's reason for running it eagerly there."""
    backbone = copy.deepcopy(step.model.backbone)
    backbone.compile()
    target, cond, t = target_inputs(step)
    backbone(target, cond, t, t + 0.4)
    counters["unimplemented"].clear()
    mean_flow_target(lambda a, tt, rr: backbone(a, cond, tt, rr), target, t, t + 0.4, target)
    reasons = [reason for reason in counters["unimplemented"] if "functorch" in reason or "jvp" in reason]
    if not reasons:
        return "compiled"
    lines = [line.strip(" -") for line in reasons[0].splitlines() if line.strip()]
    return "runs eagerly: " + "; ".join([lines[0], *[line for line in lines if "not supported" in line][:1]])


def mvp_target_compile_ms(step: Step, repeats: int = 20) -> dict[str, float] | str:
    """Median ms of the MVP target alone (backbone forward, torch.func.jvp and backward to the
    condition) eagerly and with torch.compile around the whole function, the JVP inside it; or the
    compile error."""
    backbone = step.model.backbone
    target, cond, t = target_inputs(step)

    def mean_flow(a: torch.Tensor, tt: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        u, goal = mean_flow_target(lambda x, t0, r0: backbone(x, condition, t0, r0), a, tt, tt + 0.4, a)
        return (u - goal).pow(2).sum()

    def median_ms(function: Callable) -> float:
        times = []
        for index in range(repeats + 2):
            condition = cond.detach().requires_grad_(True)
            started = time.perf_counter()
            function(target, t, condition).backward()
            if step.device.type == "cuda":
                torch.cuda.synchronize(step.device)
            if index >= 2:
                times.append(time.perf_counter() - started)
        return round(float(np.median(times)) * 1000, 2)

    try:
        compiled = median_ms(torch.compile(mean_flow))
    except Exception as error:  # dynamo and inductor raise many types; the message is the result
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
    return {"eager_ms": median_ms(mean_flow), "compiled_ms": compiled}


def bf16_jvp_error(step: Step) -> dict[str, float]:
    """How far bf16 autocast moves the MVP target's JVP from fp32, on the step's model and a batch:
    relative L2 errors of the prediction u, of du/dt and of the target v + (r - t) du/dt."""
    obs, actions = next(step.batches)
    model = step.model
    with torch.no_grad():
        cond = model.obs_encoder.eval()(obs)
    model.obs_encoder.train()
    target = model.action_scaler.normalize(actions).flatten(1)
    generator = torch.Generator(step.device).manual_seed(1)
    eps = torch.randn(target.shape, generator=generator, device=step.device)
    t = torch.rand(target.shape[0], generator=generator, device=step.device) * 0.5
    r = t + 0.4
    a_t, v = (1 - t)[:, None] * eps + t[:, None] * target, target - eps
    results = {}
    for precision in ("fp32", "bf16"):
        with autocast(precision, step.device):
            u, mean_target = mean_flow_target(lambda a, tt, rr: model.backbone(a, cond, tt, rr), a_t, t, r, v)
        u, mean_target = u.detach().float(), mean_target.float()
        results[precision] = (u, mean_target, (mean_target - v) / 0.4)

    def relative(index: int) -> float:
        reference = results["fp32"][index]
        return round(float((results["bf16"][index] - reference).norm() / reference.norm()), 6)

    return {"u": relative(0), "du_dt": relative(2), "target": relative(1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the table here")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per row")
    parser.add_argument("--block", type=int, default=5, help="timed steps of a row before the next row runs")
    parser.add_argument("--episodes", type=int, default=20, help="episodes of 50 steps in the generated dataset")
    parser.add_argument("--device", default="cpu", help="cpu (the CPU rows) or cuda (fp32 against bf16)")
    args = parser.parse_args()

    device = torch.device(args.device)
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        cumulative, alternatives = [], gpu_variants()
    else:
        cumulative, alternatives = variants(cores)
    rows = cumulative + alternatives
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "cameras.hdf5"
        write_dataset(path, args.episodes, 50)
        dataset = RobomimicDataset(path, [*CAMERAS, *PROPRIOCEPTION], action_horizon=HORIZON)
        load_before = os.getloadavg()[0]
        steps = [Step(variant, dataset, args.batch_size, 0, device) for variant in rows]
        reference = steps[len(cumulative) - 1] if cumulative else steps[0]
        # before any row compiles the backbone: dynamo gives its reason once, then skips the frame silently
        backbone_in_jvp = compiled_backbone_inside_jvp(reference)
        errors = [step.first_step_error() for step in steps]
        compiles = whole_loss_compiles(reference)
        target_ms = mvp_target_compile_ms(reference)
        jvp_error = bf16_jvp_error(reference)
        working = [step for step, error in zip(steps, errors) if error is None]
        measured = iter(measure(working, args.repeats, warmup=2, block=args.block, device=device))
        samples = [next(measured) if error is None else None for error in errors]
        for step in working:
            step.batches.close()
        data_seconds = time_of_data(dataset, args.batch_size)
        load_after = os.getloadavg()[0]

    baseline = float(np.median(samples[0]["wall"]))
    baseline_cpu = float(np.median(samples[0]["cpu"]))
    table = []
    for index, (variant, sample, error) in enumerate(zip(rows, samples, errors)):
        row = {"change": variant.change, "threads": variant.threads, "precision": variant.precision,
               "prefetch": variant.prefetch, "compiled": list(variant.compile),
               "policy": {key: list(value) if isinstance(value, tuple) else value
                          for key, value in variant.policy.items()}}
        if error is not None:
            table.append({**row, "error": error})
            print(f"  failed: {variant.change}: {error}")
            continue
        wall, cpu = float(np.median(sample["wall"])), float(np.median(sample["cpu"]))
        row |= {"s_per_step": round(wall, 4), "cpu_s_per_step": round(cpu, 4),
                "ratio_to_baseline": round(wall / baseline, 3), "cpu_ratio_to_baseline": round(cpu / baseline_cpu, 3)}
        if 0 < index < len(cumulative):
            row["ratio_to_previous_row"] = round(wall / float(np.median(samples[index - 1]["wall"])), 3)
        table.append(row)
        print(f"{wall:7.4f} s/step ({cpu:6.3f} CPU s)  x{wall / baseline:5.2f} (CPU x{cpu / baseline_cpu:5.2f})"
              f"  {variant.change}")
    result = {
        "machine": {**machine(device), "load_average_1min": [round(load_before, 2), round(load_after, 2)]},
        "batch_size": args.batch_size, "repeats": args.repeats,
        "data_s_per_batch": round(data_seconds, 4),
        "whole_loss_torch_compile": compiles,
        "backbone_torch_compile_inside_jvp": backbone_in_jvp,
        "mvp_target_torch_compile": target_ms,
        "bf16_jvp_relative_error": jvp_error,
        "rows": table,
    }
    print(f"gathering a batch: {data_seconds * 1000:.1f} ms; torch.compile of the whole loss: {compiles}")
    print(f"compiled backbone inside the JVP: {backbone_in_jvp}; the MVP target eager against compiled: {target_ms}")
    print(f"bf16 autocast against fp32, relative error of u, du/dt, the target: {jvp_error}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
