"""What both training loops (behaviour cloning and mvp-rl) share: the settings, the data, the model, the
checkpoint directory.

`TrainConfig` and `load_train_config` (dataclass defaults, then an optional YAML `--config`, then
command-line flags; the merged settings are stored in the checkpoint so a run can be repeated);
`Workspace`, a run as both loops start it (its directory, device, seeded random state, data,
contract and freshly built model), resume it, log it and save it; and the parts it is made of: the
datasets and the contract they were made with; the model and its normalization built from the data;
batches as tensors; the validation loss; the resume state; the loss log and its plot.

A training run's output directory holds the checkpoint (`model.safetensors` with the EMA weights +
`config.json`), `train_log.csv`, `loss.png`, and `training_state.safetensors` +
`training_state.json` (raw weights, optimizer moments, step, random states) for `--resume`.
config.json carries the contract the dataset was made with (its file attr `contract`), which the
policy node compares with the contract it is deployed with.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from ..data.contract import Contract
from ..data.robomimic import RobomimicDataset, open_hdf5, read_file_attrs
from ..policy.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info, save_checkpoint
from ..policy.config import ConfigError, PolicyConfig
from ..policy.model import ChunkPolicyModel
from ..policy.normalizer import Normalization
from . import distributed
from .distributed import Ranks

ALGOS = ("bc", "mvp-rl")  # behaviour cloning; offline (-to-online) RL with best-of-N (mvp_ros.rl)
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 on a CUDA device that supports it, else fp32

STATE_WEIGHTS = "training_state.safetensors"
STATE_JSON = "training_state.json"
LOG_FILE = "train_log.csv"
PLOT_FILE = "loss.png"


@dataclass
class TrainConfig:
    dataset: str = ""
    out: str = ""
    obs_keys: list[str] = field(default_factory=list)
    head: str = "mvp"
    steps: int = 5000
    horizon: int = 5
    frame_stack: int = 1
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0: OMP_NUM_THREADS if set, else one per core
    seed: int = 0
    log_every: int = 100
    validate_every: int = 500
    checkpoint_every: int = 1000
    policy: dict = field(default_factory=dict)  # PolicyConfig fields, e.g. {hidden_dim: 256, ivc_weight: 0.5}
    algo: str = "bc"
    rl: dict = field(default_factory=dict)  # mvp_ros.rl.config.RLConfig fields, e.g. {num_candidates: 32}
    online_steps: int = 0  # mvp-rl: environment steps of online fine-tuning after the offline steps
    filter_key: str = ""  # mask/<key> of the demos to train on; "": mask/train if the file has one, else all
    valid_filter_key: str = ""  # mask/<key> of the validation demos; "": mask/valid if the file has one
    eval_every: int = 0  # steps between success evaluations in the dataset's simulated task; 0: none
    eval_episodes: int = 10
    eval_seed: int = 100000  # evaluation episode i uses seed eval_seed + i, at every evaluation of the run
    eval_max_steps: int = 0  # steps per evaluation episode; 0: the task's horizon
    precision: str = "auto"  # of the forward pass and loss (autocast); weights, optimizer and EMA stay fp32
    prefetch: int = 0  # batches gathered ahead by a background thread while the model steps; 0: in the loop

    def validate(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset: no dataset given (--dataset FILE or `dataset:` in the config)")
        if not self.out:
            raise ConfigError("out: no output directory given (--out DIR or `out:` in the config)")
        if not self.obs_keys:
            raise ConfigError("obs_keys: no observation keys given (--obs-keys k1,k2 or `obs_keys:` in the config)")
        for name in ("steps", "horizon", "frame_stack", "batch_size", "log_every", "validate_every",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ConfigError(f"threads: must be >= 0 (0: OMP_NUM_THREADS if set, else one per core), got {self.threads}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")
        for name in ("eval_every", "eval_seed", "eval_max_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.eval_episodes < 1:
            raise ConfigError(f"eval_episodes: must be >= 1, got {self.eval_episodes}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.prefetch < 0:
            raise ConfigError(f"prefetch: must be >= 0 (0: batches gathered in the loop), got {self.prefetch}")
        if self.algo not in ALGOS:
            raise ConfigError(f"algo: unknown algorithm {self.algo!r}; choose one of {', '.join(ALGOS)}")
        if self.online_steps < 0 or (self.online_steps and self.algo != "mvp-rl"):
            raise ConfigError(f"online_steps: {self.online_steps} needs algo mvp-rl and a value >= 0")
        if self.algo == "mvp-rl":
            from ..rl.config import RLConfig

            if self.head not in ("mvp", "flow"):
                raise ConfigError(f"head: algo mvp-rl trains the MVP head, or the flow head as Q-chunking's "
                                  f"best-of-N, not {self.head!r}")
            if self.precision == "bf16" or self.prefetch:
                raise ConfigError("precision bf16 and prefetch are settings of algo bc; algo mvp-rl trains in fp32 "
                                  "and draws its batches in the loop")
            RLConfig.from_dict(self.rl)


def read_config_file(path: str | Path) -> dict:
    """The settings of a training config file (YAML)."""
    loaded = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a training config must be a YAML mapping")
    return loaded


def load_train_config(path: str | Path | None, overrides: dict, base: dict | None = None) -> TrainConfig:
    """Defaults < base (a resumed run's settings) < YAML file < overrides (None entries are ignored)."""
    values: dict = dict(base or {})
    if path is not None:
        values.update(read_config_file(path))
    values.update({key: value for key, value in overrides.items() if value is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if isinstance(values.get("obs_keys"), str):
        values["obs_keys"] = [key.strip() for key in values["obs_keys"].split(",") if key.strip()]
    config = TrainConfig(**values)
    config.validate()
    return config


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on a CUDA device with bf16 support, fp32 elsewhere; fp32 and bf16 as given."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass and loss in `precision` (resolved): bf16 autocast, or nothing for fp32. The
    MVP target's forward-mode JVP runs inside it too: autocast casts its tangents as it casts the
    inputs, and its error stays below the bf16 rounding of the prediction it is compared with
    (benchmarks/image_step_ablation.py records both)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_tensors(batch: dict, device: torch.device, pin: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Numpy batch from the dataset -> (obs, actions) tensors on `device`; low-dim as float32, images
    stay uint8 (a quarter of the bytes to copy; the encoder converts them on the device). `pin`: in
    page-locked memory first, so the copy to a GPU runs asynchronously."""

    def tensor(values: np.ndarray) -> torch.Tensor:
        result = torch.from_numpy(np.ascontiguousarray(values))
        result = result if result.dtype == torch.uint8 else result.float()
        return (result.pin_memory() if pin else result).to(device, non_blocking=True)

    return {key: tensor(values) for key, values in batch["obs"].items()}, tensor(batch["actions"])


def load_datasets(config: TrainConfig, progress: bool = True) -> tuple[RobomimicDataset, RobomimicDataset | None]:
    """Training windows from mask/<filter_key> (default mask/train, all demos if there is none) and validation
    from mask/<valid_filter_key> (default mask/valid if it lists any); `progress`: a bar while loading."""
    with open_hdf5(config.dataset) as file:
        masks = {name for name, demos in file["mask"].items() if len(demos)} if "mask" in file else set()
    options = dict(obs_keys=config.obs_keys, action_horizon=config.horizon, frame_stack=config.frame_stack,
                   progress=progress)
    train_key = config.filter_key or ("train" if "train" in masks else None)
    valid_key = config.valid_filter_key or ("valid" if "valid" in masks else None)
    train_set = RobomimicDataset(config.dataset, filter_key=train_key, **options)
    valid_set = RobomimicDataset(config.dataset, filter_key=valid_key, **options) if valid_key else None
    return train_set, valid_set


def dataset_contract(dataset: str) -> dict | None:
    """The contract the dataset was made with (file attr `contract`, written by `mvp bag2hdf5` and
    `mvp demos`), validated, for the checkpoint to carry; None, with a warning, if it has none."""
    stored = read_file_attrs(dataset).get("contract")
    if stored is None:
        print(f"mvp train: warning: {dataset} records no contract (file attr 'contract'), so the checkpoint carries"
              " none: the policy node runs it only with the parameter allow_checkpoint_without_contract:=true",
              file=sys.stderr)
        return None
    return Contract.from_dict(stored, source=f"{dataset} file attr 'contract'").to_dict()


def build_model(config: TrainConfig, dataset: RobomimicDataset) -> tuple[ChunkPolicyModel, Normalization]:
    policy_config = PolicyConfig(head=config.head, action_dim=dataset.action_dim, horizon=config.horizon,
                                 obs_shapes=dataset.obs_shapes, frame_stack=config.frame_stack, **config.policy)
    normalization = Normalization.from_data(
        dataset.all_actions(), {key: dataset.all_obs(key) for key in policy_config.lowdim_keys})
    return ChunkPolicyModel(policy_config, normalization), normalization


@torch.no_grad()
def validation_loss(model: ChunkPolicyModel, dataset: RobomimicDataset, device: torch.device,
                    batch_size: int, seed: int, max_batches: int = 8) -> float:
    """Mean loss over fixed windows with fixed noise, so successive values are comparable."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device)
    losses = []
    for index in range(max_batches):
        generator.manual_seed(seed + index)
        obs, actions = to_tensors(dataset.get_batch(rng.integers(len(dataset), size=batch_size)), device)
        with torch.enable_grad():  # the MVP target needs a JVP, which runs under autograd
            loss, _ = model.loss(obs, actions, generator)
        losses.append(loss.item())
    return float(np.mean(losses))


Optimizers = dict[str, tuple[torch.optim.Optimizer, torch.nn.Module]]  # name -> (optimizer, the module it steps)


RandomState = tuple[dict, torch.Tensor]  # a numpy bit generator's state, a torch generator's state


def random_state(rng: np.random.Generator, generator: torch.Generator) -> RandomState:
    return rng.bit_generator.state, generator.get_state()


def save_training_state(out: Path, step: int, modules: dict[str, torch.nn.Module], optimizers: Optimizers,
                        random_states: list[RandomState], extra: dict | None = None) -> None:
    """Raw weights, optimizer moments and random states (one per rank, rank 0's first), so `--resume`
    continues as if never stopped."""
    tensors = {}
    for prefix, module in modules.items():
        tensors |= {f"{prefix}.{name}": tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    for prefix, (optimizer, module) in optimizers.items():
        names = {id(parameter): name for name, parameter in module.named_parameters()}
        for parameter, state in optimizer.state.items():
            for key, value in state.items():
                tensors[f"{prefix}.{names[id(parameter)]}.{key}"] = value.detach().cpu().reshape(value.shape).contiguous()
    numpy_states = {}
    for rank, (numpy_state, generator_state) in enumerate(random_states):
        tensors[_rank_key("generator_state", rank)] = generator_state
        numpy_states[_rank_key("numpy_rng", rank)] = numpy_state
    save_file(tensors, str(out / STATE_WEIGHTS))
    (out / STATE_JSON).write_text(json.dumps({"step": step, **numpy_states, **(extra or {})}, indent=2))


def _rank_key(name: str, rank: int) -> str:
    """Rank 0's random states keep the names a single process saves them under."""
    return name if rank == 0 else f"{name}.rank{rank}"


def restore_training_state(out: Path, modules: dict[str, torch.nn.Module], optimizers: Optimizers,
                           rng: np.random.Generator, generator: torch.Generator, rank: int = 0) -> dict:
    """The inverse of `save_training_state`, restoring `rank`'s random states (a rank the run did not
    have keeps the fresh ones it was seeded with); returns its JSON document (step, ...)."""
    for name in (STATE_WEIGHTS, STATE_JSON):
        if not (out / name).is_file():
            raise CheckpointError(f"cannot resume: {out / name} is missing (was the run saved with this mvp_ros?)")
    try:
        tensors = load_file(str(out / STATE_WEIGHTS))
        document = json.loads((out / STATE_JSON).read_text())
        for prefix, module in modules.items():
            module.load_state_dict({name[len(prefix) + 1:]: tensor for name, tensor in tensors.items()
                                    if name.startswith(f"{prefix}.")})
    except Exception as error:  # safetensors, json and load_state_dict raise several types for a damaged state
        raise CheckpointError(f"cannot resume from {out}: training state unreadable ({error})") from None
    for prefix, (optimizer, module) in optimizers.items():
        for name, parameter in module.named_parameters():
            state = {key[len(f"{prefix}.{name}."):]: value for key, value in tensors.items()
                     if key.startswith(f"{prefix}.{name}.")}
            if state:
                optimizer.state[parameter] = {key: value.to(parameter.device) for key, value in state.items()}
    if _rank_key("generator_state", rank) in tensors:
        generator.set_state(tensors[_rank_key("generator_state", rank)])
        rng.bit_generator.state = document[_rank_key("numpy_rng", rank)]
    return document


def check_resumable(out: Path, config: TrainConfig) -> None:
    """A resumed run must train the same thing on the same data."""
    saved = read_checkpoint_info(out).training.get("settings", {})
    for name in ("dataset", "obs_keys", "head", "horizon", "frame_stack", "algo", "filter_key"):
        if name in saved and saved[name] != getattr(config, name):
            raise ConfigError(f"cannot resume {out}: {name} was {saved[name]!r}, now {getattr(config, name)!r}")


def plot_losses(log_path: Path, plot_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_path.open() as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return
    figure, axis = plt.subplots(figsize=(7, 4))
    steps = [int(row["step"]) for row in rows]
    for column in [name for name in rows[0] if name.startswith("loss") or name == "valid_loss"]:
        points = [(step, float(row[column])) for step, row in zip(steps, rows) if row[column] not in ("", None)]
        if points:
            axis.plot(*zip(*points), label=column, marker="o" if column == "valid_loss" else None)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    lines, labels = axis.get_legend_handles_labels()
    success = sorted((int(row["eval_step"]), float(row["eval_success_rate"])) for row in rows
                     if row.get("eval_success_rate") not in ("", None))
    if success:
        success_axis = axis.twinx()  # success rate of the EMA policy at the step it was evaluated
        success_axis.plot(*zip(*success), color="black", marker="s", label="success rate")
        success_axis.set_ylabel("success rate")
        success_axis.set_ylim(-0.05, 1.05)
        lines += success_axis.get_legend_handles_labels()[0]
        labels.append("success rate")
    axis.legend(lines, labels)
    axis.set_title(log_path.parent.name)
    figure.tight_layout()
    figure.savefig(plot_path, dpi=100)
    plt.close(figure)


def _log_up_to(log_path: Path, columns: list[str], step: int) -> float:
    """Keeps the rows of a resumed run's log up to `step`, the one it resumes from (rows after it were
    written by steps that run again), under the header of `columns` (a log from before a column was
    added, e.g. eval_step, gains it); returns the seconds of its last kept row."""
    with log_path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
    kept = [row for row in rows if int(row["step"]) <= step]
    if reader.fieldnames != columns or len(kept) != len(rows):
        with log_path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
    return float(kept[-1]["seconds"]) if kept else 0.0


@dataclass
class Workspace:
    """A run as both loops start it: its directory, its device, its random state (numpy's for the
    batches, a torch generator for the noise; torch's global one seeded before the weights are drawn),
    the data, the contract the data was made with, and the model built on the data. Under torchrun
    (mvp_ros.training.distributed) it is one rank's: its device, random state seeded with seed + rank,
    and only rank 0 writes."""

    config: TrainConfig
    out: Path
    ranks: Ranks
    device: torch.device
    rng: np.random.Generator
    generator: torch.Generator
    train_set: RobomimicDataset
    valid_set: RobomimicDataset | None
    contract: dict | None
    model: ChunkPolicyModel
    normalization: Normalization

    @classmethod
    def open(cls, config: TrainConfig, resume: bool, progress: bool = True) -> Workspace:
        """A new run, refusing a directory that holds a checkpoint; with `resume`, the run in it, which
        must train the same thing on the same data (its state is restored by `resume`). `progress`: bars
        while loading the data, on the main rank."""
        out = Path(config.out)
        if resume:
            check_resumable(out, config)
        elif (out / "config.json").exists():
            raise ConfigError(f"{out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
        ranks, device = distributed.join(config.device)
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed + ranks.rank)
        generator = torch.Generator(device=device).manual_seed(config.seed + ranks.rank)
        train_set, valid_set = load_datasets(config, progress=progress and ranks.is_main)
        contract = dataset_contract(config.dataset) if ranks.is_main else None
        model, normalization = build_model(config, train_set)
        return cls(config, out, ranks, device, rng, generator, train_set, valid_set, contract, model, normalization)

    def resume(self, modules: dict[str, torch.nn.Module], optimizers: Optimizers, ema: torch.nn.Module,
               total_steps: int) -> dict:
        """Restores what `save` saved (`modules`, `optimizers`, the random state, and the EMA weights
        from the checkpoint); returns the training state's JSON document (step, ...)."""
        document = restore_training_state(self.out, modules, optimizers, self.rng, self.generator, self.ranks.rank)
        if document["step"] >= total_steps:
            raise ConfigError(f"{self.out} is already trained to step {document['step']}; pass a larger --steps "
                              "to continue")
        ema.load_state_dict(load_checkpoint(self.out, self.device)[0].state_dict())
        return document

    @contextlib.contextmanager
    def log(self, columns: list[str], resumed_step: int | None) -> Iterator[Callable[[int, dict], None]]:
        """`write(step, values)`: a row of train_log.csv (appended to the log of a run resumed from
        `resumed_step`; None for a new run), with the seconds of training so far (a resumed run's
        continue from that step's), flushed at once; values outside `columns` are left out. Only rank 0
        writes: on the other ranks `write` does nothing."""
        if not self.ranks.is_main:
            yield lambda step, values: None
            return
        path = self.out / LOG_FILE
        append = resumed_step is not None and path.exists()
        earlier_seconds = 0.0
        if append:
            earlier_seconds = _log_up_to(path, columns, resumed_step)
        started = time.perf_counter() - earlier_seconds
        with path.open("a" if append else "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
            if not append:
                writer.writeheader()

            def write(step: int, values: dict) -> None:
                writer.writerow({"step": step, "seconds": round(time.perf_counter() - started, 3), **values})
                stream.flush()

            yield write

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizers: Optimizers, ema: torch.nn.Module,
             training: dict, extra: dict | None = None) -> Path:
        """The training state (for `--resume`), the checkpoint of the EMA weights with `training` as its
        record, and the loss plot; returns the checkpoint directory. All ranks call it together (each
        hands rank 0 its random state); rank 0 writes."""
        random_states = distributed.gather(random_state(self.rng, self.generator), self.ranks)
        if not self.ranks.is_main:
            return self.out
        save_training_state(self.out, step, modules, optimizers, random_states,
                            {"world_size": self.ranks.world_size, **(extra or {})})
        path = save_checkpoint(self.out, ema, self.normalization, env_args=self.train_set.env_args,
                               contract=self.contract, training=training)
        plot_losses(self.out / LOG_FILE, self.out / PLOT_FILE)
        return path
