"""What each change to the two-camera MVP training step bought, measured side by side in one run.

Each row adds one change to the row before it, starting from the step as it was (a residual block
on every encoder stage, images in NCHW, no augmentation, one torch thread), up to the one-thread
step models/lift_image trained with, then one thread per core; a last group of rows tries
alternatives to that one-thread step. Every row is a whole `mvp train` step at batch 64:
the batch gathered from a Robomimic-format file of two 84x84 cameras and proprioception, the loss,
backward, AdamW and the EMA update. The rows run interleaved in blocks, so a busy machine slows
them alike; wall and CPU time per step are both kept: on a shared machine a one-thread row's CPU
time moves far less than its wall time, which counts the time other processes held the core.

    .venv/bin/python benchmarks/image_step_ablation.py --json benchmarks/results/image_step_ablation.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mvp_ros.data.robomimic import Episode, RobomimicDataset, write_robomimic
from mvp_ros.bench.policy_timing import machine
from mvp_ros.policy.config import PolicyConfig
from mvp_ros.policy.model import ChunkPolicyModel, update_ema
from mvp_ros.policy.normalizer import Normalization
from mvp_ros.training.workspace import to_tensors

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
    prefetch: bool = False  # the next batch gathered in a background thread while the model steps
    compile_encoder: bool = False


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
        Variant("alternative: + batch gathered in a background thread", CROP, prefetch=True),
        Variant("alternative: + torch.compile of the observation encoder", CROP, compile_encoder=True),
        Variant("alternative: a residual block per stage, with the crops", {**PREVIOUS_ENCODER, **CROP}),
        Variant("alternative: a narrower last stage, image_encoder_widths (16, 32, 32)",
                {**CROP, "image_encoder_widths": (16, 32, 32)}),
        Variant("alternative: narrower stages, image_encoder_widths (8, 16, 32)",
                {**CROP, "image_encoder_widths": (8, 16, 32)}),
    ]
    return cumulative, alternatives


def write_dataset(path: Path, episodes: int, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_robomimic(path, [Episode(
        obs={**{key: rng.integers(0, 256, (steps, 84, 84, 3), dtype=np.uint8) for key in CAMERAS},
             **{key: rng.normal(size=(steps, size)).astype(np.float32) for key, size in PROPRIOCEPTION.items()}},
        actions=rng.uniform(-1, 1, (steps, ACTION_DIM))) for _ in range(episodes)], compression=None)


class Step:
    """One variant's training step, as `mvp train` runs it, on its own model and optimizer."""

    def __init__(self, variant: Variant, dataset: RobomimicDataset, batch_size: int, seed: int):
        self.variant, self.dataset, self.batch_size = variant, dataset, batch_size
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
        if variant.compile_encoder:
            self.model.obs_encoder.compile()
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-4)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.executor = ThreadPoolExecutor(1) if variant.prefetch else None
        self.pending = self._submit() if variant.prefetch else None

    def _batch(self):
        indices = self.rng.integers(len(self.dataset), size=self.batch_size)
        return to_tensors(self.dataset.get_batch(indices), torch.device("cpu"))

    def _submit(self):
        return self.executor.submit(self._batch)

    def __call__(self) -> None:
        torch.set_num_threads(self.variant.threads)
        if self.executor is not None:
            obs, actions = self.pending.result()
            self.pending = self._submit()
        else:
            obs, actions = self._batch()
        loss, _ = self.model.loss(obs, actions, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        update_ema(self.ema, self.model, 0.995)


def timed(step: Callable[[], None]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU time of this process, all its threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(steps: list[Step], repeats: int, warmup: int, block: int) -> list[dict[str, list[float]]]:
    """Round-robin in blocks of `block` timed steps; each block starts with one untimed step."""
    for step in steps:
        for _ in range(warmup):
            step()
    samples = [{"wall": [], "cpu": []} for _ in steps]
    while len(samples[0]["wall"]) < repeats:
        for step, sample in zip(steps, samples):
            step()
            for _ in range(min(block, repeats - len(sample["wall"]))):
                wall, cpu = timed(step)
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
    obs, actions = step._batch()
    try:
        torch.compile(model.loss)(obs, actions)
        return "yes"
    except Exception as error:  # dynamo raises many types; the message is the result
        return f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the table here")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per row")
    parser.add_argument("--block", type=int, default=5, help="timed steps of a row before the next row runs")
    parser.add_argument("--episodes", type=int, default=20, help="episodes of 50 steps in the generated dataset")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    cumulative, alternatives = variants(cores)
    rows = cumulative + alternatives
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "cameras.hdf5"
        write_dataset(path, args.episodes, 50)
        dataset = RobomimicDataset(path, [*CAMERAS, *PROPRIOCEPTION], action_horizon=HORIZON)
        load_before = os.getloadavg()[0]
        steps = [Step(variant, dataset, args.batch_size, seed=0) for variant in rows]
        compiles = whole_loss_compiles(steps[len(cumulative) - 1])
        samples = measure(steps, args.repeats, warmup=2, block=args.block)
        data_seconds = time_of_data(dataset, args.batch_size)
        load_after = os.getloadavg()[0]

    baseline = float(np.median(samples[0]["wall"]))
    baseline_cpu = float(np.median(samples[0]["cpu"]))
    table = []
    for index, (variant, sample) in enumerate(zip(rows, samples)):
        wall, cpu = float(np.median(sample["wall"])), float(np.median(sample["cpu"]))
        previous = cumulative[index - 1] if 0 < index < len(cumulative) else None
        row = {"change": variant.change, "s_per_step": round(wall, 4), "cpu_s_per_step": round(cpu, 4),
               "ratio_to_baseline": round(wall / baseline, 3), "cpu_ratio_to_baseline": round(cpu / baseline_cpu, 3),
               "threads": variant.threads,
               "policy": {key: list(value) if isinstance(value, tuple) else value
                          for key, value in variant.policy.items()}}
        if previous is not None:
            row["ratio_to_previous_row"] = round(wall / float(np.median(samples[index - 1]["wall"])), 3)
        table.append(row)
        print(f"{wall:7.3f} s/step ({cpu:6.3f} CPU s)  x{wall / baseline:5.2f} (CPU x{cpu / baseline_cpu:5.2f})"
              f"  {variant.change}")
    result = {
        "machine": {**machine(torch.device("cpu")), "load_average_1min": [round(load_before, 2), round(load_after, 2)]},
        "batch_size": args.batch_size, "repeats": args.repeats,
        "data_s_per_batch": round(data_seconds, 4),
        "whole_loss_torch_compile": compiles,
        "rows": table,
    }
    print(f"gathering a batch: {data_seconds * 1000:.1f} ms; torch.compile of the whole loss: {compiles}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
