"""`mvp train --algo mvp-rl`: offline RL with best-of-N on a Robomimic HDF5 file, then optionally
online fine-tuning in the dataset's robosuite task (`--online-steps N`).

One update, on one batch of chunk windows from the replay buffer (mvp_ros.rl.replay):
  policy  L_MF + lambda * L_IVC on the replay action chunks, exactly the behaviour-cloning loss (the
          critic sends no gradient into the generator), then the EMA weights follow.
  critic  sum over the ensemble of mean (Q_j(s_k, A_k) - y_k)^2, with the chunked TD target y_k of
          mvp_ros.rl.td; its bootstrap action is the best of N one-step samples of the EMA policy at
          s_{k+h} under the target critic. Then the target critic moves towards the critic by tau.
The EMA policy is the one that acts (online, and in `best_of_n` at evaluation) and the one saved.

The output directory is a policy checkpoint (`Policy.load` reads it) plus `critic.safetensors` and
`critic.json` (`load_critic` reads them), `train_log.csv` and `loss.png`. Online steps continue
the step count of the log after the offline steps, one row per `log_every` environment steps.
`training_state.*` holds the raw policy, both critics, their optimizers and the random states, so
`--resume` continues the offline phase exactly (and then runs the online phase, if any); a run saved
during its online phase cannot be resumed, because the online transitions are not saved.
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
from ..policy.model import ChunkPolicyModel
from ..policy.normalizer import Normalization
from ..policy.policy import resolve_device
from ..policy.train import (LOG_FILE, PLOT_FILE, TrainConfig, build_model, check_resumable, dataset_contract,
                            load_datasets, plot_losses, restore_training_state, save_training_state, update_ema,
                            validation_loss)
from .config import RLConfig
from .critic import ChunkCritic, best_of_n, polyak_update, save_critic
from .replay import ChunkBatch, replay_from_dataset
from .td import chunk_td_target

LOG_COLUMNS = ["step", "seconds", "loss", "loss_mf", "loss_ivc", "loss_critic", "q_mean", "target_mean",
               "valid_loss", "env_steps", "episodes", "success_rate"]


class MvpRlLearner:
    """The policy (raw and EMA weights), the critic ensemble and its target, their optimizers, one update."""

    def __init__(self, model: ChunkPolicyModel, normalization: Normalization, config: TrainConfig,
                 rl: RLConfig, device: torch.device):
        self.rl = rl
        self.ema_decay = config.ema_decay
        self.model = model.to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.critic = ChunkCritic(model.config, normalization, rl.critic_config()).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.policy_optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                                  weight_decay=config.weight_decay)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=rl.critic_lr)
        self.updates = 0

    def update(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        metrics = self.update_policy(batch, generator)
        metrics.update(self.update_critic(batch, generator))
        self.updates += 1
        return metrics

    def update_policy(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        loss, metrics = self.model.loss(batch.obs, batch.actions, generator)
        self.policy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.policy_optimizer.step()
        update_ema(self.ema, self.model, self.ema_decay if self.updates > 0 else 0.0)
        return metrics

    def td_target(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        """y = sum_{i<h} gamma^i r_{k+i} + gamma^h Qbar(s_{k+h}, a*'), a*' the best of N EMA-policy samples."""
        with torch.no_grad():
            _, next_value = best_of_n(self.ema, self.target_critic, batch.next_obs, self.rl.num_candidates, generator)
            return chunk_td_target(batch.rewards, batch.step_mask, batch.bootstrap, next_value, self.rl.gamma)

    def update_critic(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        target = self.td_target(batch, generator)
        q_values = self.critic(batch.obs, batch.actions[:, None])[..., 0]  # (K, B): each member on the replay chunk
        loss = (q_values - target).pow(2).mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        polyak_update(self.target_critic, self.critic, self.rl.tau)
        return {"loss_critic": loss.item(), "q_mean": q_values.mean().item(), "target_mean": target.mean().item()}

    def state(self) -> tuple[dict[str, torch.nn.Module], dict[str, tuple[torch.optim.Optimizer, torch.nn.Module]]]:
        """What `--resume` saves and restores (the EMA policy is the checkpoint itself)."""
        modules = {"model": self.model, "critic": self.critic, "target_critic": self.target_critic}
        optimizers = {"optimizer": (self.policy_optimizer, self.model), "critic_optimizer": (self.critic_optimizer, self.critic)}
        return modules, optimizers

    def act(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """The chunk to execute: best of N EMA-policy samples under the critic, (B, horizon, action_dim)."""
        return best_of_n(self.ema, self.critic, obs, self.rl.num_candidates, generator)[0]


def train_mvp_rl(config: TrainConfig, progress: bool = True, resume: bool = False) -> Path:
    out = Path(config.out)
    if resume:
        check_resumable(out, config)
    elif (out / "config.json").exists():
        raise ConfigError(f"{out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    rl = RLConfig.from_dict(config.rl)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    train_set, valid_set = load_datasets(config)
    if config.online_steps and not train_set.env_args:
        raise ConfigError(f"{config.dataset} has no env_args (data.attrs['env_args']): online fine-tuning "
                          "(--online-steps) cannot build its environment")
    contract = dataset_contract(config.dataset)
    model, normalization = build_model(config, train_set)
    replay = replay_from_dataset(train_set, config.horizon, config.frame_stack, rl.reward_mode, rl.success_reward,
                                 extra_capacity=config.online_steps)
    learner = MvpRlLearner(model, normalization, config, rl, device)
    total_steps = config.steps + config.online_steps
    start = 0
    if resume:
        document = restore_training_state(out, *learner.state(), rng, generator)
        start, learner.updates = int(document["step"]), int(document["updates"])
        if start >= total_steps:
            raise ConfigError(f"{out} is already trained to step {start}; pass a larger --steps to continue")
        if start > config.steps:
            raise ConfigError(f"{out} was saved at step {start}, inside its online phase (offline steps: "
                              f"{config.steps}); the online transitions are not saved, so it cannot be resumed")
        learner.ema.load_state_dict(load_checkpoint(out, device)[0].state_dict())
    out.mkdir(parents=True, exist_ok=True)
    online: dict = {}

    def save(step: int, metrics: dict) -> Path:
        training = {"algo": "mvp-rl", "settings": dataclasses.asdict(config), "rl": dataclasses.asdict(rl),
                    "step": step, "dataset_demos": len(train_set.demo_names), "replay_steps": replay.size,
                    "replay_episodes": replay.num_episodes, "online": dict(online), "metrics": metrics,
                    "device": str(device), "ema_decay": config.ema_decay}
        save_training_state(out, step, *learner.state(), rng, generator, extra={"updates": learner.updates})
        save_checkpoint(out, learner.ema, normalization, env_args=train_set.env_args, contract=contract,
                        training=training)
        save_critic(out, learner.critic)
        plot_losses(out / LOG_FILE, out / PLOT_FILE)
        return out

    started = time.perf_counter()
    append = resume and (out / LOG_FILE).exists()
    with (out / LOG_FILE).open("a" if append else "w", newline="") as log_file:
        log = csv.DictWriter(log_file, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if not append:
            log.writeheader()

        def train_step(step: int) -> dict:
            """One update; validation, a log row and a checkpoint when their step comes."""
            metrics = learner.update(replay.sample(config.batch_size, rng).to(device), generator)
            last = step == total_steps
            if valid_set is not None and (step % config.validate_every == 0 or last):
                metrics["valid_loss"] = validation_loss(learner.ema, valid_set, device, config.batch_size, config.seed)
            if step % config.log_every == 0 or last or "valid_loss" in metrics:
                log.writerow({"step": step, "seconds": round(time.perf_counter() - started, 3), **online, **metrics})
                log_file.flush()
            if step % config.checkpoint_every == 0 and not last:
                save(step, metrics)
            return metrics

        metrics: dict = {}
        bar = tqdm(range(start + 1, config.steps + 1), desc="offline mvp-rl", unit="step", disable=not progress,
                   initial=start, total=config.steps)
        for step in bar:
            metrics = train_step(step)
            if step % config.log_every == 0:
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", critic=f"{metrics['loss_critic']:.4f}")
        if config.online_steps:
            from .online import fine_tune_online  # imports robosuite, only needed here

            def after_env_step(stats: dict) -> None:
                nonlocal metrics
                online.update(stats)
                for _ in range(rl.online_updates_per_step - 1):
                    learner.update(replay.sample(config.batch_size, rng).to(device), generator)
                metrics = train_step(config.steps + stats["env_steps"])

            fine_tune_online(learner, replay, train_set.env_args, config.online_steps, rng, generator, device,
                             rl.reward_mode, after_env_step, progress)
    return save(total_steps, metrics)
