"""The behaviour-cloning loop of `mvp train` (`--algo bc`, the default): any head trained on the
dataset's action chunks, with EMA weights, validation, periodic checkpoints and `--resume`; on
several processes under torchrun (mvp_ros.training.distributed); with success evaluations in the
dataset's simulated task (`--eval-every`, mvp_ros.training.evaluation); in bf16 autocast on a GPU
(`--precision`); with batches gathered ahead in a background thread (`--prefetch`,
mvp_ros.training.batches).

The output directory is laid out as mvp_ros.training.workspace describes.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import torch
from tqdm import tqdm

from ..policy.model import update_ema
from . import distributed
from .batches import Batches
from .distributed import LossFunction
from .evaluation import EVAL_COLUMNS, SuccessEvaluator
from .workspace import TrainConfig, Workspace, autocast, resolve_precision, validation_loss


def optimizer_step(loss_function: LossFunction, optimizer: torch.optim.Optimizer, obs: dict[str, torch.Tensor],
                   actions: torch.Tensor, generator: torch.Generator, precision: str,
                   device: torch.device) -> dict[str, float]:
    """One step on one batch: the loss in `precision` (resolved), its gradient, the optimizer's update
    of the fp32 weights; returns the loss's metrics."""
    with autocast(precision, device):
        loss, metrics = loss_function(obs, actions, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return metrics


def train_bc(config: TrainConfig, progress: bool = True, resume: bool = False) -> Path:
    """Trains `config.head` by behaviour cloning into `config.out` (continuing the run there if
    `resume`); returns the checkpoint directory."""
    workspace = Workspace.open(config, resume, progress)
    model, device, generator = workspace.model, workspace.device, workspace.generator
    ranks = workspace.ranks
    train_set, valid_set = workspace.train_set, workspace.valid_set
    # the encoders take channels-last images (networks.py); weights in that layout too save a
    # reorder per convolution and step (checkpoints still store contiguous tensors)
    model.obs_encoder.image_encoders.to(memory_format=torch.channels_last)
    model.to(device)
    # eval mode: validation sees the inference transform of images, not random augmentation
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    modules, optimizers = {"model": model}, {"optimizer": (optimizer, model)}
    start = workspace.resume(modules, optimizers, ema, config.steps)["step"] if resume else 0
    workspace.out.mkdir(parents=True, exist_ok=True)
    loss_function = distributed.loss_function(model, ranks, device)
    precision = resolve_precision(config.precision, device)

    def record(step: int, metrics: dict) -> dict:
        return {"settings": dataclasses.asdict(config), "step": step, "dataset_demos": len(train_set.demo_names),
                "dataset_windows": len(train_set), "valid_demos": len(valid_set.demo_names) if valid_set else 0,
                "metrics": metrics, "device": str(device), "threads": torch.get_num_threads(),
                "world_size": ranks.world_size, "ema_decay": config.ema_decay, "precision": precision}

    metrics: dict = {}
    evaluator = SuccessEvaluator(workspace, resume)
    columns = ["step", "seconds", *_metric_names(config.head), "valid_loss", *EVAL_COLUMNS]
    batches = Batches(train_set, config.batch_size, workspace.rng, device, config.prefetch)
    with contextlib.closing(evaluator), contextlib.closing(batches), workspace.log(columns, start if resume else None) as log:
        bar = tqdm(range(start + 1, config.steps + 1), desc=f"train {config.head}",
                   disable=not (progress and ranks.is_main), unit="step", initial=start, total=config.steps)
        for step in bar:
            obs, actions = next(batches)
            metrics = optimizer_step(loss_function, optimizer, obs, actions, generator, precision, device)
            update_ema(ema, model, config.ema_decay if step > 1 else 0.0)
            last = step == config.steps
            validating = valid_set is not None and (step % config.validate_every == 0 or last)
            if step % config.log_every == 0 or last or validating:
                metrics = distributed.mean_over_ranks(metrics, ranks, device)
                if validating and ranks.is_main:
                    metrics["valid_loss"] = validation_loss(ema, valid_set, device, config.batch_size, config.seed)
                log(step, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if step % config.checkpoint_every == 0 and not last:
                workspace.save(step, modules, optimizers, ema, record(step, metrics))
            if evaluator.due(step, last):
                evaluator.submit(step, ema, record(step, metrics))
            evaluator.collect(log, step)
        checkpoint = workspace.save(config.steps, modules, optimizers, ema, record(config.steps, metrics))
        evaluator.finish(log, config.steps)
    return checkpoint


def _metric_names(head: str) -> list[str]:
    return ["loss", "loss_mf", "loss_ivc"] if head == "mvp" else ["loss"]
