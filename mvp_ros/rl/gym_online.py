"""`mvp train --algo fpmd|mfpo|sac --env TASK --online-steps N`: online RL in a Gymnasium MuJoCo task
(Hopper-v5, HalfCheetah-v5, ...) or a robosuite task with dense reward (Lift, PickPlaceCan,
NutAssemblySquare: RobosuiteTask) with FPMD (mvp_ros.rl.fpmd; `--head mvp` FPMD-M, `--head flow`
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
while training (the agent's acting rule, FPMD's best-of-N included), each in wall-clock time and in
the thread's CPU time (which a busy machine inflates less); `returns.png` plots the returns.

Beside them, `online_state.safetensors` + `online_state.json` hold what `--resume` needs to continue
as if never stopped: the agent's networks, optimizers, temperature and counters, the replay buffer,
the episode in progress (observation, return, length, the MuJoCo state, the time limit's count), the
random states (numpy, torch, the task's) and the timings. A run resumed with a larger
`--online-steps` continues from the saved step with the saved settings; it equals one run to the
larger total where nothing depends on the total (SAC, MFPO; FPMD when `actor_lr_decay_updates` fixes
its learning-rate decay, which otherwise stretches to the new end).
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
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..policy.checkpoint import CheckpointError
from ..policy.config import ConfigError, PolicyConfig
from ..policy.normalizer import Normalization
from ..policy.runtime import resolve_device
from ..policy.threads import default_threads
from .fpmd import FpmdAgent, FpmdConfig
from .mfpo import MfpoAgent, MfpoConfig
from .replay import ChunkBatch
from .sac import ActorCriticConfig, AgentState, SacAgent

GYM_ALGOS = ("fpmd", "mfpo", "sac")
# `mvp train`'s flags for training on a dataset, which these runs refuse rather than ignore: flag -> argument
DATASET_FLAGS = {"--config": "config", "--obs-keys": "obs_keys", "--filter-key": "filter_key",
                 "--valid-filter-key": "valid_filter_key", "--steps": "steps", "--horizon": "horizon",
                 "--frame-stack": "frame_stack", "--lr": "lr", "--precision": "precision", "--prefetch": "prefetch",
                 "--eval-max-steps": "eval_max_steps"}
OBSERVATION_KEY = "observation"
LOG_JSON = "online_log.json"
PLOT_FILE = "returns.png"
STATE_WEIGHTS = "online_state.safetensors"
STATE_JSON = "online_state.json"
# the settings a resumed run takes from the saved one; the others (total steps, evaluation schedule,
# device, threads) may change
FIXED_SETTINGS = ("algo", "env", "head", "seed", "batch_size", "learning_starts", "replay_capacity", "eval_seed", "agent")
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

    def arrays(self) -> dict[str, np.ndarray]:
        """The kept transitions, oldest first."""
        order = np.arange(self.size) if self.size < self.capacity else np.roll(np.arange(self.capacity), -self.next_row)
        return {name: getattr(self, name)[order] for name in ("obs", "actions", "rewards", "next_obs", "terminated")}

    def extend(self, arrays: dict[str, np.ndarray]) -> None:
        """Adds the transitions of `arrays()`, oldest first."""
        for row in range(len(arrays["rewards"])):
            self.add(arrays["obs"][row], arrays["actions"][row], float(arrays["rewards"][row]), arrays["next_obs"][row],
                     bool(arrays["terminated"][row]))

    def sample(self, batch_size: int, rng: np.random.Generator, device: torch.device) -> ChunkBatch:
        rows = rng.integers(self.size, size=batch_size)
        return ChunkBatch(obs={OBSERVATION_KEY: self.obs[rows][:, None]}, actions=self.actions[rows][:, None],
                          rewards=self.rewards[rows][:, None], step_mask=np.ones((batch_size, 1), np.float32),
                          bootstrap=1.0 - self.terminated[rows],
                          next_obs={OBSERVATION_KEY: self.next_obs[rows][:, None]}).to(device)


# robosuite tasks by the `mvp` commands' names and by robosuite's: name -> the task of mvp_ros.sim.envs
ROBOSUITE_TASKS = {"lift": "lift", "Lift": "lift", "can": "can", "PickPlaceCan": "can", "square": "square",
                   "NutAssemblySquare": "square"}
ROBOSUITE_OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")


class RobosuiteTask:
    """A robosuite task of mvp_ros.sim.envs (its SimEnv, its env_args) with dense reward
    (`reward_shaping`), as a Gymnasium task: the observation is the low-dim keys ROBOSUITE_OBS_KEYS
    concatenated in that order, an episode is the task's horizon and never terminates (success does not
    end it, so a shaped reward does not make success worse than hovering near it), and `unwrapped.np_random`
    is the generator robosuite places its objects with. No MuJoCo state is saved for `--resume`: a
    resumed run starts a new episode."""

    def __init__(self, task: str):
        import gymnasium

        from ..sim.envs import env_args_for
        from ..sim.envs import make_env as make_sim_env

        env_args = env_args_for(task, images=False)
        env_args["env_kwargs"]["reward_shaping"] = True
        self.sim = make_sim_env(env_args)
        obs_dim = self.vector(self.sim.reset(seed=0)).shape[0]
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
        self.action_space = gymnasium.spaces.Box(self.sim.action_low.astype(np.float32),
                                                 self.sim.action_high.astype(np.float32))
        self.unwrapped = self

    @property
    def np_random(self) -> np.random.Generator:
        return self.sim.unwrapped.rng

    @staticmethod
    def vector(observation: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(observation[key], np.float64).ravel() for key in ROBOSUITE_OBS_KEYS])

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        return self.vector(self.sim.reset(seed=seed)), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        observation, reward, _, info = self.sim.step(action)
        return self.vector(observation), reward, False, self.sim.unwrapped.timestep >= self.sim.horizon, info

    def close(self) -> None:
        self.sim.close()


def make_env(name: str):
    """The Gymnasium task `name`, or the robosuite task (RobosuiteTask), checked to have a vector
    observation and bounded vector actions."""
    import gymnasium

    if name in ROBOSUITE_TASKS:
        return RobosuiteTask(ROBOSUITE_TASKS[name])
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


def run_online(config: OnlineRunConfig, progress: bool = True, resume: bool = False) -> Path:
    """Trains `config.algo` in `config.env` for `config.online_steps` environment steps; returns the output
    directory. `resume`: continues the run saved in `config.out` (made with `resume_config`)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads())
    try:
        return _run(config, progress, resume)
    finally:
        torch.set_num_threads(previous_threads)


@dataclass
class LoopState:
    """The training loop between two environment steps."""

    step: int = 0  # environment steps taken
    obs: np.ndarray | None = None
    episode_return: float = 0.0
    episode_length: int = 0
    updates: int = 0
    update_seconds: float = 0.0
    update_cpu_seconds: float = 0.0  # the thread's CPU time: on a shared machine, what the work itself cost
    act_seconds: list[float] = field(default_factory=list)
    act_cpu_seconds: list[float] = field(default_factory=list)


def _run(config: OnlineRunConfig, progress: bool, resume: bool) -> Path:
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
    loop = LoopState(obs=env.reset(seed=config.seed)[0])
    log = {"algo": config.algo, "env": config.env, "settings": dataclasses.asdict(config),
           "agent": dataclasses.asdict(agent.config), "episodes": [], "evaluations": []}
    metrics: dict[str, float] = {}
    if resume:
        log = json.loads((out / LOG_JSON).read_text()) | {"settings": dataclasses.asdict(config)}
        loop = restore_state(out, agent, replay, env, rng, generator)
        log.setdefault("resumed_at", []).append(loop.step)
        metrics = log["last_metrics"]
    bar = tqdm(range(loop.step, config.online_steps), desc=f"{config.algo} {config.env}", unit="env step",
               initial=loop.step, total=config.online_steps, disable=not progress)
    for step in bar:
        if step < config.learning_starts:
            action = env.action_space.sample()
        else:
            started, cpu_started = time.perf_counter(), time.thread_time()
            action = agent.act(observation_batch(loop.obs, device), explore=True, generator=generator)[0].cpu().numpy()
            loop.act_seconds.append(time.perf_counter() - started)
            loop.act_cpu_seconds.append(time.thread_time() - cpu_started)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(loop.obs, action, float(reward), next_obs, terminated)
        loop.episode_return, loop.episode_length = loop.episode_return + float(reward), loop.episode_length + 1
        loop.obs, loop.step = next_obs, step + 1
        if terminated or truncated:
            log["episodes"].append({"env_steps": step + 1, "return": loop.episode_return, "length": loop.episode_length})
            bar.set_postfix(episode_return=f"{loop.episode_return:.1f}")
            loop.obs, loop.episode_return, loop.episode_length = env.reset()[0], 0.0, 0
        if step + 1 > config.learning_starts:
            started, cpu_started = time.perf_counter(), time.thread_time()
            metrics = agent.update(replay.sample(config.batch_size, rng, device), generator)
            loop.update_seconds += time.perf_counter() - started
            loop.update_cpu_seconds += time.thread_time() - cpu_started
            loop.updates += 1
            if not all(np.isfinite(value) for value in metrics.values()):
                raise RuntimeError(f"{config.algo} on {config.env}: a loss became non-finite at environment step "
                                   f"{step + 1}: {metrics}")
        if config.eval_every and (step + 1) % config.eval_every == 0:
            returns = evaluate(agent, config.env, config.eval_episodes, config.eval_seed, device)
            log["evaluations"].append({"env_steps": step + 1, "mean_return": float(np.mean(returns)), "returns": returns})
        if config.eval_every and (step + 1) % config.eval_every == 0 or step + 1 == config.online_steps:
            log |= {"env_steps": step + 1, "updates": loop.updates, "update_seconds": loop.update_seconds,
                    "updates_per_second": loop.updates / loop.update_seconds if loop.update_seconds else None,
                    "act_ms_p50": float(np.percentile(loop.act_seconds, 50) * 1e3) if loop.act_seconds else None,
                    "act_ms_p99": float(np.percentile(loop.act_seconds, 99) * 1e3) if loop.act_seconds else None,
                    "update_cpu_seconds": loop.update_cpu_seconds,
                    "updates_per_cpu_second": loop.updates / loop.update_cpu_seconds if loop.update_cpu_seconds else None,
                    "act_cpu_ms_p50": float(np.percentile(loop.act_cpu_seconds, 50) * 1e3) if loop.act_cpu_seconds else None,
                    "last_metrics": metrics}
            save_run(agent, out, log)
            save_state(out, agent, replay, env, loop, rng, generator)
    env.close()
    return out


def save_run(agent: Agent, out: Path, log: dict) -> None:
    """The checkpoint, online_log.json and returns.png as of `log["env_steps"]` (after every evaluation and at the end)."""
    agent.save(out, training={"algo": log["algo"], "env": log["env"], "env_steps": log["env_steps"],
                              "settings": log["settings"], "agent": log["agent"]})
    (out / LOG_JSON).write_text(json.dumps(log, indent=2))
    plot_returns(log, out / PLOT_FILE)


def _mujoco(env):
    """(model, data) of a MuJoCo task, None for another."""
    unwrapped = env.unwrapped
    return (unwrapped.model, unwrapped.data) if hasattr(unwrapped, "model") and hasattr(unwrapped, "data") else None


def _time_limit(env):
    while not hasattr(env, "_elapsed_steps") and hasattr(env, "env"):
        env = env.env
    return env if hasattr(env, "_elapsed_steps") else None


def save_state(out: Path, agent: Agent, replay: TransitionReplay, env, loop: LoopState, rng: np.random.Generator,
               generator: torch.Generator) -> None:
    """online_state.safetensors + online_state.json (module doc)."""
    import mujoco

    state: AgentState = agent.state()
    tensors = {f"module.{name}.{key}": value.detach().cpu().contiguous()
               for name, module in state.modules.items() for key, value in module.state_dict().items()}
    tensors |= {f"tensor.{name}": value.detach().cpu().contiguous() for name, value in state.tensors.items()}
    param_groups = {}
    for name, optimizer in state.optimizers.items():
        optimizer_state = optimizer.state_dict()
        param_groups[name] = optimizer_state["param_groups"]
        tensors |= {f"optimizer.{name}.{index}.{key}": torch.as_tensor(value).cpu().contiguous()
                    for index, values in optimizer_state["state"].items() for key, value in values.items()}
    tensors |= {f"replay.{name}": torch.from_numpy(np.ascontiguousarray(values))
                for name, values in replay.arrays().items()}
    tensors |= {"loop.obs": torch.from_numpy(np.asarray(loop.obs, np.float64)),
                "loop.act_seconds": torch.tensor(loop.act_seconds, dtype=torch.float64),
                "loop.act_cpu_seconds": torch.tensor(loop.act_cpu_seconds, dtype=torch.float64),
                "random.generator": generator.get_state(), "random.torch": torch.get_rng_state()}
    physics = _mujoco(env)
    if physics is not None:
        model, data = physics
        mujoco_state = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(model, data, mujoco_state, mujoco.mjtState.mjSTATE_INTEGRATION)
        tensors["env.mujoco_state"] = torch.from_numpy(mujoco_state)
    time_limit = _time_limit(env)
    document = {"env_steps": loop.step, "episode_return": loop.episode_return, "episode_length": loop.episode_length,
                "updates": loop.updates, "update_seconds": loop.update_seconds,
                "update_cpu_seconds": loop.update_cpu_seconds, "counters": state.counters,
                "optimizer_param_groups": param_groups, "numpy_rng": rng.bit_generator.state,
                "env_rng": env.unwrapped.np_random.bit_generator.state,
                "action_space_rng": env.action_space.np_random.bit_generator.state,
                "elapsed_steps": time_limit._elapsed_steps if time_limit is not None else None}
    save_file(tensors, str(out / STATE_WEIGHTS))
    (out / STATE_JSON).write_text(json.dumps(document, indent=2))


def restore_state(out: Path, agent: Agent, replay: TransitionReplay, env, rng: np.random.Generator,
                  generator: torch.Generator) -> LoopState:
    """The inverse of `save_state`, into a freshly built agent, buffer and environment (reset with the run's
    seed); returns the loop's state. A task that is not MuJoCo starts a new episode instead."""
    import mujoco

    for name in (STATE_WEIGHTS, STATE_JSON, LOG_JSON):
        if not (out / name).is_file():
            raise CheckpointError(f"cannot resume: {out / name} is missing (was the run made with this mvp_ros?)")
    try:
        tensors = load_file(str(out / STATE_WEIGHTS))
        document = json.loads((out / STATE_JSON).read_text())
        state: AgentState = agent.state()
        for name, module in state.modules.items():
            prefix = f"module.{name}."
            module.load_state_dict({key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)})
        with torch.no_grad():
            for name, tensor in state.tensors.items():
                tensor.copy_(tensors[f"tensor.{name}"])
        for name, optimizer in state.optimizers.items():
            prefix = f"optimizer.{name}."
            values: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith(prefix):
                    index, field_name = key[len(prefix):].split(".", 1)
                    values.setdefault(int(index), {})[field_name] = value
            optimizer.load_state_dict({"state": values, "param_groups": document["optimizer_param_groups"][name]})
        agent.restore_counters(document["counters"])
    except (KeyError, ValueError, RuntimeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot resume from {out}: its training state does not fit this run ({error!r})") from None
    replay.extend({name: tensors[f"replay.{name}"].numpy() for name in ("obs", "actions", "rewards", "next_obs",
                                                                          "terminated")})
    rng.bit_generator.state = document["numpy_rng"]
    generator.set_state(tensors["random.generator"])
    torch.set_rng_state(tensors["random.torch"])
    env.action_space.np_random.bit_generator.state = document["action_space_rng"]
    loop = LoopState(step=document["env_steps"], updates=document["updates"], update_seconds=document["update_seconds"],
                     update_cpu_seconds=document["update_cpu_seconds"], act_seconds=tensors["loop.act_seconds"].tolist(),
                     act_cpu_seconds=tensors["loop.act_cpu_seconds"].tolist())
    physics = _mujoco(env)
    if physics is not None and "env.mujoco_state" in tensors:
        model, data = physics
        mujoco.mj_setState(model, data, tensors["env.mujoco_state"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
        env.unwrapped.np_random.bit_generator.state = document["env_rng"]
        if _time_limit(env) is not None:
            _time_limit(env)._elapsed_steps = document["elapsed_steps"]
        loop.obs = tensors["loop.obs"].numpy()
        loop.episode_return, loop.episode_length = document["episode_return"], document["episode_length"]
    else:
        env.unwrapped.np_random.bit_generator.state = document["env_rng"]
        loop.obs = env.reset()[0]
    return loop


def resume_config(out: str | Path, online_steps: int, **changes) -> OnlineRunConfig:
    """The settings of the run saved in `out`, with a larger total and `changes` to the settings a resumed
    run may change (FIXED_SETTINGS may not)."""
    log_path = Path(out) / LOG_JSON
    if not log_path.is_file():
        raise ConfigError(f"--resume: {log_path} is missing: {out} holds no online run to continue")
    saved = json.loads(log_path.read_text())
    settings = saved["settings"]
    for name, value in changes.items():
        if name in FIXED_SETTINGS and value != settings[name]:
            raise ConfigError(f"--resume: {name} was {settings[name]!r} in {out}, now {value!r}; a resumed run keeps it")
    if online_steps <= saved["env_steps"]:
        raise ConfigError(f"--online-steps: {out} already took {saved['env_steps']} environment steps; "
                          f"--resume needs a larger total, got {online_steps}")
    return OnlineRunConfig(**(settings | changes | {"online_steps": online_steps, "out": str(out)}))


def run_command(args: argparse.Namespace) -> int:
    """`mvp train` with --algo fpmd, mfpo or sac (mvp_ros.training.command routes here)."""
    if not args.env:
        raise ConfigError(f"--algo {args.algo} trains online in a Gymnasium task: give it with --env, e.g. Hopper-v5")
    if args.dataset:
        raise ConfigError(f"--algo {args.algo} trains online: --dataset does not apply")
    ignored = [flag for flag, name in DATASET_FLAGS.items() if getattr(args, name) is not None]
    if ignored:
        raise ConfigError(f"{', '.join(ignored)}: not settings of --algo {args.algo} (docs/rl_online.md lists its flags)")
    if args.algo != "fpmd" and args.head:
        raise ConfigError(f"--head: {args.algo.upper()}'s actor is fixed; --head picks FPMD's (mvp: FPMD-M, flow: FPMD-R)")
    settings = {name: getattr(args, name) for name in ("head", "seed", "batch_size", "eval_every", "eval_episodes",
                                                       "device", "threads") if getattr(args, name) is not None}
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out, the directory of the run to continue")
        config = resume_config(args.out, args.online_steps or 0, algo=args.algo, env=args.env, **settings)
    else:
        config = OnlineRunConfig(algo=args.algo, env=args.env, online_steps=args.online_steps or 0,
                                 out=args.out or "", **settings)
    print(f"saved checkpoint to {run_online(config, progress=not args.no_progress, resume=args.resume)}")
    return 0
