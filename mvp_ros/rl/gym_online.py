"""`mvp train --algo fpmd|mfpo|sac --env TASK --online-steps N`: online RL in a Gymnasium MuJoCo task
(Hopper-v5, HalfCheetah-v5, ...) with FPMD (mvp_ros.rl.fpmd; `--head mvp` FPMD-M, `--head flow`
FPMD-R), MFPO (mvp_ros.rl.mfpo) or the SAC baseline (mvp_ros.rl.sac). Guide: docs/rl_online.md.

The task's observation is the policy's one low-dim key `observation`, standardized by mean 0 and
std 1 (no statistics exist before the run); actions are scaled to [-1, 1] by the task's bounds.
Every step's transition (s, a, r, s', terminated) enters a `TransitionReplay`, whose batches are the
chunk replay's (mvp_ros.rl.replay.ChunkBatch) at horizon 1: a terminal step has no bootstrap, a time
limit keeps its bootstrap from the last observation. The first `learning_starts` steps act uniformly
at random; after each later step the agent makes one update on a batch from the buffer.

The output directory gets, after every evaluation and at the end, the agent's checkpoint (FPMD,
MFPO: `model.safetensors` + `config.json`, which `Policy.load` runs, and the critics beside it; SAC:
`sac_actor.safetensors` + `sac_actor.json`) and `online_log.json`: every training episode's return
against environment steps, the evaluations (`--eval-every`: episodes without exploration noise in a
separate environment), the last update's losses, the updates per second and the time per action
while training (the agent's acting rule, FPMD's best-of-N included); `returns.png` plots the returns.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..policy.config import ConfigError, PolicyConfig
from ..policy.normalizer import Normalization
from ..policy.runtime import resolve_device
from ..policy.threads import default_threads
from .fpmd import FpmdAgent, FpmdConfig
from .mfpo import MfpoAgent, MfpoConfig
from .replay import ChunkBatch
from .sac import ActorCriticConfig, SacAgent

GYM_ALGOS = ("fpmd", "mfpo", "sac")
# `mvp train`'s flags for training on a dataset, which these runs refuse rather than ignore: flag -> argument
DATASET_FLAGS = {"--config": "config", "--obs-keys": "obs_keys", "--filter-key": "filter_key",
                 "--valid-filter-key": "valid_filter_key", "--steps": "steps", "--horizon": "horizon",
                 "--frame-stack": "frame_stack", "--lr": "lr", "--precision": "precision", "--prefetch": "prefetch",
                 "--eval-max-steps": "eval_max_steps"}
OBSERVATION_KEY = "observation"
LOG_JSON = "online_log.json"
PLOT_FILE = "returns.png"
LEARNING_STARTS = 5000
Agent = FpmdAgent | MfpoAgent | SacAgent


@dataclass
class OnlineRunConfig:
    algo: str
    env: str
    online_steps: int
    out: str
    head: str = "mvp"  # FPMD's: mvp (FPMD-M) or flow (FPMD-R)
    seed: int = 0
    batch_size: int = 256
    # random actions first: LEARNING_STARTS steps, or a tenth of a shorter run; None picks that
    learning_starts: int | None = None
    eval_every: int = 0
    eval_episodes: int = 10
    replay_capacity: int = 1_000_000
    eval_seed: int = 100000  # evaluation episode i resets with seed eval_seed + i, at every evaluation
    device: str = "auto"
    threads: int = 0
    agent: dict = field(default_factory=dict)  # FpmdConfig, MfpoConfig or (SAC) ActorCriticConfig fields

    def __post_init__(self) -> None:
        if self.algo not in GYM_ALGOS:
            raise ConfigError(f"algo: {self.algo!r} is not one of the online Gymnasium algorithms {', '.join(GYM_ALGOS)}")
        if self.online_steps < 1:
            raise ConfigError(f"--online-steps: --algo {self.algo} needs at least 1 environment step, "
                              f"got {self.online_steps}")
        for name in ("batch_size", "eval_episodes", "replay_capacity"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.learning_starts is None:
            self.learning_starts = min(LEARNING_STARTS, self.online_steps // 10)
        if not self.out:
            raise ConfigError(f"--out: --algo {self.algo} needs the directory to write its checkpoint to")


class TransitionReplay:
    """The last `capacity` transitions, in arrays allocated once; sampling costs the batch, not the buffer."""

    def __init__(self, obs_dim: int, action_dim: int, capacity: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.next_row = capacity, 0, 0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        row = self.next_row
        self.obs[row], self.actions[row], self.rewards[row] = obs, action, reward
        self.next_obs[row], self.terminated[row] = next_obs, terminated
        self.next_row, self.size = (row + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator, device: torch.device) -> ChunkBatch:
        rows = rng.integers(self.size, size=batch_size)
        return ChunkBatch(obs={OBSERVATION_KEY: self.obs[rows][:, None]}, actions=self.actions[rows][:, None],
                          rewards=self.rewards[rows][:, None], step_mask=np.ones((batch_size, 1), np.float32),
                          bootstrap=1.0 - self.terminated[rows],
                          next_obs={OBSERVATION_KEY: self.next_obs[rows][:, None]}).to(device)


def make_env(name: str):
    """The Gymnasium task `name`, checked to have a vector observation and bounded vector actions."""
    import gymnasium

    try:
        env = gymnasium.make(name)
    except gymnasium.error.Error as error:
        raise ConfigError(f"--env {name!r}: Gymnasium cannot make this task ({error})") from None
    observation_space, action_space = env.observation_space, env.action_space
    if not isinstance(observation_space, gymnasium.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(f"--env {name!r}: its observation space {observation_space} is not a vector")
    if (not isinstance(action_space, gymnasium.spaces.Box) or len(action_space.shape) != 1
            or not np.isfinite(action_space.low).all() or not np.isfinite(action_space.high).all()):
        raise ConfigError(f"--env {name!r}: its action space {action_space} is not a bounded vector")
    return env


def task_description(env, head: str, hidden_dim: int, depth: int, **policy_settings) -> tuple[PolicyConfig, Normalization]:
    """The task as the package's networks see it (module doc); one-step sampling where a head has steps,
    unless `policy_settings` (PolicyConfig fields) say otherwise."""
    obs_dim = env.observation_space.shape[0]
    config = PolicyConfig(head=head, action_dim=env.action_space.shape[0], horizon=1,
                          obs_shapes={OBSERVATION_KEY: (obs_dim,)}, hidden_dim=hidden_dim, depth=depth,
                          **{"flow_steps": 1, **policy_settings})
    normalization = Normalization(action_min=env.action_space.low.tolist(), action_max=env.action_space.high.tolist(),
                                  obs_mean={OBSERVATION_KEY: [0.0] * obs_dim}, obs_std={OBSERVATION_KEY: [1.0] * obs_dim})
    return config, normalization


def build_agent(config: OnlineRunConfig, env, device: torch.device) -> Agent:
    settings_class = {"fpmd": FpmdConfig, "mfpo": MfpoConfig, "sac": ActorCriticConfig}[config.algo]
    unknown = sorted(set(config.agent) - {field.name for field in dataclasses.fields(settings_class)})
    if unknown:
        raise ConfigError(f"agent: {', '.join(unknown)} not settings of --algo {config.algo} ({settings_class.__name__})")
    if config.algo == "fpmd":
        settings = FpmdConfig(**{"head": config.head, **config.agent})
        policy_config, normalization = task_description(env, settings.head, settings.hidden_dim, settings.depth)
        total_updates = config.online_steps - config.learning_starts
        return FpmdAgent(policy_config, normalization, settings, total_updates, device)
    if config.algo == "mfpo":
        settings = MfpoConfig(**config.agent)
        policy_config, normalization = task_description(env, "mvp", settings.hidden_dim, settings.depth,
                                                        mvp_steps=settings.sampling_steps,
                                                        equal_time_fraction=settings.equal_time_fraction)
        return MfpoAgent(policy_config, normalization, settings, device)
    settings = ActorCriticConfig(**config.agent)
    # SAC's actor is a tanh-Gaussian of its own; the config describes the task to the encoder and the
    # critics, and its head ("mlp") is never sampled.
    policy_config, normalization = task_description(env, "mlp", settings.hidden_dim, settings.depth)
    return SacAgent(policy_config, normalization, settings, device)


def observation_batch(obs: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """One observation as the networks take it: {key: (1, frame_stack = 1, D)}."""
    return {OBSERVATION_KEY: torch.as_tensor(obs, dtype=torch.float32, device=device)[None, None]}


def evaluate(agent: Agent, env_name: str, episodes: int, seed: int, device: torch.device) -> list[float]:
    """Returns of `episodes` episodes without exploration noise, episode i reset with seed + i."""
    env = make_env(env_name)
    generator = torch.Generator(device=device).manual_seed(seed)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            action = agent.act(observation_batch(obs, device), explore=False, generator=generator)[0]
            obs, reward, terminated, truncated, _ = env.step(action.cpu().numpy())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def plot_returns(log: dict, path: Path) -> None:
    """Training episodes' returns and the evaluations' mean returns against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    episodes, evaluations = log["episodes"], log["evaluations"]
    axis.plot([e["env_steps"] for e in episodes], [e["return"] for e in episodes], ".", alpha=0.4,
              label="training episodes (with exploration)")
    if evaluations:
        axis.plot([e["env_steps"] for e in evaluations], [e["mean_return"] for e in evaluations], "o-",
                  label="evaluation mean")
    axis.set(xlabel="environment steps", ylabel="return", title=f"{log['algo']} on {log['env']}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_online(config: OnlineRunConfig, progress: bool = True) -> Path:
    """Trains `config.algo` in `config.env` for `config.online_steps` environment steps; returns the output directory."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads())
    try:
        return _run(config, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(config: OnlineRunConfig, progress: bool) -> Path:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    env = make_env(config.env)
    env.action_space.seed(config.seed)
    agent = build_agent(config, env, device)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    replay = TransitionReplay(obs_dim, action_dim, min(config.online_steps, config.replay_capacity))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    log = {"algo": config.algo, "env": config.env, "settings": dataclasses.asdict(config),
           "agent": dataclasses.asdict(agent.config), "episodes": [], "evaluations": []}
    metrics: dict[str, float] = {}
    update_seconds, updates, act_seconds = 0.0, 0, []
    obs, _ = env.reset(seed=config.seed)
    episode_return, episode_length = 0.0, 0
    bar = tqdm(range(config.online_steps), desc=f"{config.algo} {config.env}", unit="env step", disable=not progress)
    for step in bar:
        if step < config.learning_starts:
            action = env.action_space.sample()
        else:
            started = time.perf_counter()
            action = agent.act(observation_batch(obs, device), explore=True, generator=generator)[0].cpu().numpy()
            act_seconds.append(time.perf_counter() - started)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, action, float(reward), next_obs, terminated)
        episode_return, episode_length = episode_return + float(reward), episode_length + 1
        obs = next_obs
        if terminated or truncated:
            log["episodes"].append({"env_steps": step + 1, "return": episode_return, "length": episode_length})
            bar.set_postfix(episode_return=f"{episode_return:.1f}")
            obs, _ = env.reset()
            episode_return, episode_length = 0.0, 0
        if step + 1 > config.learning_starts:
            started = time.perf_counter()
            metrics = agent.update(replay.sample(config.batch_size, rng, device), generator)
            update_seconds += time.perf_counter() - started
            updates += 1
            if not all(np.isfinite(value) for value in metrics.values()):
                raise RuntimeError(f"{config.algo} on {config.env}: a loss became non-finite at environment step "
                                   f"{step + 1}: {metrics}")
        if config.eval_every and (step + 1) % config.eval_every == 0:
            returns = evaluate(agent, config.env, config.eval_episodes, config.eval_seed, device)
            log["evaluations"].append({"env_steps": step + 1, "mean_return": float(np.mean(returns)), "returns": returns})
        if config.eval_every and (step + 1) % config.eval_every == 0 or step + 1 == config.online_steps:
            log |= {"env_steps": step + 1, "updates": updates, "update_seconds": update_seconds,
                    "updates_per_second": updates / update_seconds if update_seconds else None,
                    "act_ms_p50": float(np.percentile(act_seconds, 50) * 1e3) if act_seconds else None,
                    "act_ms_p99": float(np.percentile(act_seconds, 99) * 1e3) if act_seconds else None,
                    "last_metrics": metrics}
            save_run(agent, out, log)
    env.close()
    return out


def save_run(agent: Agent, out: Path, log: dict) -> None:
    """The checkpoint, online_log.json and returns.png as of `log["env_steps"]` (after every evaluation and at the end)."""
    agent.save(out, training={"algo": log["algo"], "env": log["env"], "env_steps": log["env_steps"],
                              "settings": log["settings"], "agent": log["agent"]})
    (out / LOG_JSON).write_text(json.dumps(log, indent=2))
    plot_returns(log, out / PLOT_FILE)


def run_command(args: argparse.Namespace) -> int:
    """`mvp train` with --algo fpmd, mfpo or sac (mvp_ros.training.command routes here)."""
    if not args.env:
        raise ConfigError(f"--algo {args.algo} trains online in a Gymnasium task: give it with --env, e.g. Hopper-v5")
    if args.resume or args.dataset:
        raise ConfigError(f"--algo {args.algo} trains from scratch online: --resume and --dataset do not apply")
    ignored = [flag for flag, name in DATASET_FLAGS.items() if getattr(args, name) is not None]
    if ignored:
        raise ConfigError(f"{', '.join(ignored)}: not settings of --algo {args.algo} (docs/rl_online.md lists its flags)")
    if args.algo != "fpmd" and args.head:
        raise ConfigError(f"--head: {args.algo.upper()}'s actor is fixed; --head picks FPMD's (mvp: FPMD-M, flow: FPMD-R)")
    settings = {name: getattr(args, name) for name in ("head", "seed", "batch_size", "eval_every", "eval_episodes",
                                                       "device", "threads") if getattr(args, name) is not None}
    config = OnlineRunConfig(algo=args.algo, env=args.env, online_steps=args.online_steps or 0, out=args.out or "",
                             **settings)
    print(f"saved checkpoint to {run_online(config, progress=not args.no_progress)}")
    return 0
