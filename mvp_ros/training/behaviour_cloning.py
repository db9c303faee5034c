"""The behaviour-cloning loop of `mvp train` (`--algo bc`, the default): any head trained on the
dataset's action chunks, with EMA weights, validation, periodic checkpoints and `--resume`.

The output directory is laid out as mvp_ros.training.workspace describes.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..policy.checkpoint import load_checkpoint, save_checkpoint
from ..policy.config import ConfigError
from ..policy.model import update_ema
from ..policy.policy import resolve_device
from .workspace import (LOG_FILE, PLOT_FILE, TrainConfig, build_model, check_resumable, dataset_contract,
                        load_datasets, plot_losses, restore_training_state, save_training_state, to_tensors,
                        validation_loss)


def train_bc(config: TrainConfig, progress: bool = True, resume: bool = False) -> Path:
    """Trains `config.head` by behaviour cloning into `config.out` (continuing the run there if
    `resume`); returns the checkpoint directory."""
    device = resolve_device(config.device)
    out = Path(config.out)
    if resume:
        check_resumable(out, config)
    elif (out / "config.json").exists():
        raise ConfigError(f"{out} already holds a checkpoint: pass --resume to continue it, or choose another --out")

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train_set, valid_set = load_datasets(config)
    contract = dataset_contract(config.dataset)
    model, normalization = build_model(config, train_set)
    # the encoders take channels-last images (networks.py); weights in that layout too save a
    # reorder per convolution and step (checkpoints still store contiguous tensors)
    model.obs_encoder.image_encoders.to(memory_format=torch.channels_last)
    model.to(device)
    # eval mode: validation sees the inference transform of images, not random augmentation
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    start = 0
    if resume:
        start = restore_training_state(out, {"model": model}, {"optimizer": (optimizer, model)}, rng, generator)["step"]
        if start >= config.steps:
            raise ConfigError(f"{out} is already trained to step {start}; pass a larger --steps to continue")
        ema.load_state_dict(load_checkpoint(out, device)[0].state_dict())
    out.mkdir(parents=True, exist_ok=True)

    def save(step: int, metrics: dict) -> Path:
        save_training_state(out, step, {"model": model}, {"optimizer": (optimizer, model)}, rng, generator)
        training = {"settings": dataclasses.asdict(config), "step": step, "dataset_demos": len(train_set.demo_names),
                    "dataset_windows": len(train_set), "valid_demos": len(valid_set.demo_names) if valid_set else 0,
                    "metrics": metrics, "device": str(device), "threads": torch.get_num_threads(),
                    "ema_decay": config.ema_decay}
        path = save_checkpoint(out, ema, normalization, env_args=train_set.env_args, contract=contract,
                               training=training)
        plot_losses(out / LOG_FILE, out / PLOT_FILE)
        return path

    log_path = out / LOG_FILE
    columns = ["step", "seconds", *_metric_names(config.head), "valid_loss"]
    append = resume and log_path.exists()
    started = time.perf_counter()
    metrics: dict = {}
    with log_path.open("a" if append else "w", newline="") as log_file:
        log = csv.DictWriter(log_file, fieldnames=columns)
        if not append:
            log.writeheader()
        bar = tqdm(range(start + 1, config.steps + 1), desc=f"train {config.head}", disable=not progress,
                   unit="step", initial=start, total=config.steps)
        for step in bar:
            obs, actions = to_tensors(train_set.get_batch(rng.integers(len(train_set), size=config.batch_size)), device)
            loss, metrics = model.loss(obs, actions, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            update_ema(ema, model, config.ema_decay if step > 1 else 0.0)
            last = step == config.steps
            if valid_set is not None and (step % config.validate_every == 0 or last):
                metrics["valid_loss"] = validation_loss(ema, valid_set, device, config.batch_size, config.seed)
            if step % config.log_every == 0 or last or "valid_loss" in metrics:
                log.writerow({"step": step, "seconds": round(time.perf_counter() - started, 3), **metrics})
                log_file.flush()
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if step % config.checkpoint_every == 0 and not last:
                save(step, metrics)
    return save(config.steps, metrics)


def _metric_names(head: str) -> list[str]:
    return ["loss", "loss_mf", "loss_ivc"] if head == "mvp" else ["loss"]
