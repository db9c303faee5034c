"""The loops of `mvp train --algo mvp-rl`: offline RL with best-of-N on a Robomimic HDF5 file
(`train_mvp_rl`), then optionally online fine-tuning in the dataset's robosuite task
(`--online-steps N`, `fine_tune_online`). The update they drive is mvp_ros.rl.learner's `MvpRlLearner`.

The output directory is a policy checkpoint (`Policy.load` reads it) plus `critic.safetensors` and
`critic.json` (`load_critic` reads them), `train_log.csv` and `loss.png`. Online steps continue
the step count of the log after the offline steps, one row per `log_every` environment steps.
`training_state.*` holds the raw policy, both critics, their optimizers and the random states, so
`--resume` continues the offline phase exactly (and then runs the online phase, if any). Saved
during the online phase, it also holds the loop's position (rl.online.OnlineState) and
`replay.safetensors` + `replay.json` the online transitions, so `--resume` continues the online
phase exactly too: it steps a new environment through the running episode again (reset with the
episode's seed, the stored actions; rl.online.replay_running_episode) and goes on from there.
`--eval-every` evaluates the policy as in behaviour cloning (mvp_ros.training.evaluation); `best/`
holds the policy, not its critic. The loop runs in one process: `mvp train` refuses it under torchrun.

Online, each chunk is executed open loop, stopping early when the episode ends (success, or the
task's horizon). Each transition enters the replay buffer as it happens, and after every
environment step the caller's `after_env_step` runs (the gradient updates, the log, checkpoints);
the running episode's windows are sampled once their chunk and the state after it exist
(rl.replay). The episode the step budget cuts short is closed as not terminated. The buffer already
holds the offline data, so updates keep drawing on it. The progress bar shows the finished
episodes and their success rate.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..policy.config import ConfigError
from ..rl.config import RLConfig
from ..policy.critic import save_critic
from ..rl.learner import MvpRlLearner
from ..rl.online import FrameStack, OnlineState, check_env, replay_running_episode
from ..rl.replay import ChunkReplay, replay_from_dataset, step_reward
from .evaluation import EVAL_COLUMNS, SuccessEvaluator
from .workspace import TrainConfig, Workspace, validation_loss

LOG_COLUMNS = ["step", "seconds", "loss", "loss_mf", "loss_ivc", "loss_critic", "q_mean", "target_mean",
               "valid_loss", "env_steps", "episodes", "success_rate", *EVAL_COLUMNS]


def train_mvp_rl(config: TrainConfig, progress: bool = True, resume: bool = False) -> Path:
    """Trains the MVP policy and its critic into `config.out`: `config.steps` offline updates, then
    `config.online_steps` environment steps online (continuing the run there if `resume`); returns
    the checkpoint directory."""
    workspace = Workspace.open(config, resume, progress)
    device, rng, generator = workspace.device, workspace.rng, workspace.generator
    train_set, valid_set = workspace.train_set, workspace.valid_set
    if config.online_steps and not train_set.env_args:
        raise ConfigError(f"{config.dataset} has no env_args (data.attrs['env_args']): online fine-tuning "
                          "(--online-steps) cannot build its environment")
    rl = RLConfig.from_dict(config.rl)
    replay = replay_from_dataset(train_set, config.horizon, config.frame_stack, rl.reward_mode, rl.success_reward,
                                 extra_capacity=config.online_steps)
    learner = MvpRlLearner(workspace.model, workspace.normalization, config, rl, device)
    total_steps = config.steps + config.online_steps
    start = 0
    offline_steps = replay.size  # online transitions are stored after the dataset's
    online = OnlineState()
    if resume:
        document = workspace.resume(*learner.state(), learner.ema, total_steps)
        start, learner.updates = int(document["step"]), int(document["updates"])
        if start > config.steps:
            if "online" not in document:
                raise ConfigError(f"{workspace.out} was saved at step {start}, inside its online phase (offline "
                                  f"steps: {config.steps}), by a version of mvp_ros that did not save the online "
                                  "transitions, so it cannot be resumed")
            replay.load_steps(workspace.out)
            online = OnlineState(**document["online"])
            if config.steps + online.env_steps != start:
                raise ConfigError(f"{workspace.out} was saved at step {start} after {online.env_steps} online steps: "
                                  f"its offline steps were not {config.steps} (--steps changed?)")
    workspace.out.mkdir(parents=True, exist_ok=True)

    def record(step: int, metrics: dict) -> dict:
        return {"algo": "mvp-rl", "settings": dataclasses.asdict(config), "rl": dataclasses.asdict(rl),
                "step": step, "dataset_demos": len(train_set.demo_names), "replay_steps": replay.size,
                "replay_episodes": replay.num_episodes, "online": online.stats, "metrics": metrics,
                "device": str(device), "ema_decay": config.ema_decay}

    def save(step: int, metrics: dict) -> Path:
        extra = {"updates": learner.updates}
        if step > config.steps:  # in the online phase: its state and transitions, so that --resume continues it
            replay.save_steps_from(workspace.out, offline_steps)
            extra["online"] = dataclasses.asdict(online)
        path = workspace.save(step, *learner.state(), learner.ema, record(step, metrics), extra=extra)
        save_critic(workspace.out, learner.critic)
        return path

    evaluator = SuccessEvaluator(workspace, resume)
    with contextlib.closing(evaluator), workspace.log(LOG_COLUMNS, start if resume else None) as log:

        def train_step(step: int) -> dict:
            """One update; validation, a log row and a checkpoint when their step comes."""
            metrics = learner.update(replay.sample(config.batch_size, rng).to(device), generator)
            last = step == total_steps
            if valid_set is not None and (step % config.validate_every == 0 or last):
                metrics["valid_loss"] = validation_loss(learner.ema, valid_set, device, config.batch_size, config.seed)
            if step % config.log_every == 0 or last or "valid_loss" in metrics:
                log(step, {**online.stats, **metrics})
            if step % config.checkpoint_every == 0 and not last:
                save(step, metrics)
            if evaluator.due(step, last):
                evaluator.submit(step, learner.ema, record(step, metrics))
            evaluator.collect(log, step)
            return metrics

        metrics: dict = {}
        bar = tqdm(range(start + 1, config.steps + 1), desc="offline mvp-rl", unit="step", disable=not progress,
                   initial=start, total=config.steps)
        for step in bar:
            metrics = train_step(step)
            if step % config.log_every == 0:
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", critic=f"{metrics['loss_critic']:.4f}")
        if config.online_steps:
            def after_env_step(state: OnlineState) -> None:
                nonlocal metrics
                for _ in range(rl.online_updates_per_step - 1):
                    learner.update(replay.sample(config.batch_size, rng).to(device), generator)
                metrics = train_step(config.steps + state.env_steps)

            fine_tune_online(learner, replay, train_set.env_args, config.online_steps, rng, generator, device,
                             rl.reward_mode, after_env_step, progress, online)
        checkpoint = save(total_steps, metrics)
        evaluator.finish(log, total_steps)
    return checkpoint


def fine_tune_online(learner: MvpRlLearner, replay: ChunkReplay, env_args: dict, env_steps: int,
                     rng: np.random.Generator, generator: torch.Generator, device: torch.device, reward_mode: str,
                     after_env_step: Callable[[OnlineState], None], progress: bool = True,
                     state: OnlineState | None = None) -> OnlineState:
    """Runs environment steps until `env_steps` in all, from `state` (a resumed run's) or from the start."""
    from ..sim.envs import make_env  # mujoco and robosuite, only needed here

    state = state or OnlineState()
    env = make_env(env_args)
    bar = tqdm(total=env_steps, initial=state.env_steps, desc="online mvp-rl", unit="env step", disable=not progress)
    try:
        stack = FrameStack(list(learner.model.config.obs_shapes), learner.model.config.frame_stack)
        obs = replay_running_episode(env, replay, state.episode_seed, stack) if replay.running_steps else None
        while state.env_steps < env_steps:
            if obs is None:
                state.episode_seed = int(rng.integers(2**31))
                obs = env.reset(seed=state.episode_seed)
                check_env(env, obs, learner)
                stack.reset(obs)
            if not state.chunk_left:  # chunks run open loop, until the episode ends
                state.chunk_left = learner.act(stack.batch(device), generator)[0].cpu().numpy().tolist()
            action = np.asarray(state.chunk_left.pop(0), np.float32)
            next_obs, reward, done, info = env.step(action)
            success = bool(info["success"])
            replay.add_step(obs, action, step_reward(reward, success, reward_mode), terminal=success)
            state.env_steps += 1
            obs = next_obs
            stack.push(obs)
            if done:
                if not success:
                    replay.end_episode(terminated=False)  # the task's horizon
                state.episodes += 1
                state.successes += success
                state.chunk_left, obs = [], None
                bar.set_postfix(episodes=state.episodes, success_rate=f"{state.stats['success_rate']:.2f}")
            bar.update(1)
            after_env_step(state)
        if replay.running_steps:
            replay.end_episode(terminated=False)  # cut short by the step budget
            state.chunk_left = []  # so that resuming with more --online-steps starts a fresh episode's chunk
        return state
    finally:
        bar.close()
        env.close()
