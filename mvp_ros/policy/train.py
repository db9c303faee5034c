"""`mvp train`: behaviour cloning of any head on a Robomimic-format HDF5 dataset.

Settings come from dataclass defaults, then an optional YAML `--config`, then command-line
flags; the merged settings are stored in the checkpoint so a run can be repeated.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..data.robomimic import RobomimicDataset, open_hdf5
from .checkpoint import save_checkpoint
from .config import HEADS, ConfigError, PolicyConfig
from .model import ChunkPolicyModel
from .normalizer import Normalization
from .policy import resolve_device


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
    device: str = "auto"
    seed: int = 0
    log_every: int = 100
    policy: dict = field(default_factory=dict)  # PolicyConfig fields, e.g. {hidden_dim: 256, ivc_weight: 0.5}

    def validate(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset: no dataset given (--dataset FILE or `dataset:` in the config)")
        if not self.out:
            raise ConfigError("out: no output directory given (--out DIR or `out:` in the config)")
        if not self.obs_keys:
            raise ConfigError("obs_keys: no observation keys given (--obs-keys k1,k2 or `obs_keys:` in the config)")
        for name in ("steps", "horizon", "frame_stack", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")


def load_train_config(path: str | Path | None, overrides: dict) -> TrainConfig:
    """Defaults < YAML file < overrides (entries that are None are ignored)."""
    values: dict = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a training config must be a YAML mapping")
        values.update(loaded)
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


def to_tensors(batch: dict, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Numpy batch from the dataset -> (obs, actions) tensors; low-dim as float32, images stay uint8."""
    obs = {}
    for key, values in batch["obs"].items():
        tensor = torch.from_numpy(np.ascontiguousarray(values))
        obs[key] = (tensor if tensor.dtype == torch.uint8 else tensor.float()).to(device, non_blocking=True)
    actions = torch.from_numpy(np.ascontiguousarray(batch["actions"])).float().to(device, non_blocking=True)
    return obs, actions


def train(config: TrainConfig, progress: bool = True) -> Path:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    with open_hdf5(config.dataset) as file:
        filter_key = "train" if "mask" in file and "train" in file["mask"] else None
    dataset = RobomimicDataset(config.dataset, config.obs_keys, action_horizon=config.horizon,
                               frame_stack=config.frame_stack, filter_key=filter_key)
    policy_config = PolicyConfig(head=config.head, action_dim=dataset.action_dim, horizon=config.horizon,
                                 obs_shapes=dataset.obs_shapes, frame_stack=config.frame_stack, **config.policy)
    normalization = Normalization.from_data(
        dataset.all_actions(), {key: dataset.all_obs(key) for key in policy_config.lowdim_keys})
    model = ChunkPolicyModel(policy_config, normalization).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (out / "train_log.csv").open("w", newline="") as log_file:
        log = None
        bar = tqdm(range(1, config.steps + 1), desc=f"train {config.head}", disable=not progress, unit="step")
        for step in bar:
            obs, actions = to_tensors(dataset.get_batch(rng.integers(len(dataset), size=config.batch_size)), device)
            loss, metrics = model.loss(obs, actions, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % config.log_every == 0 or step == config.steps:
                row = {"step": step, "seconds": round(time.perf_counter() - started, 3), **metrics}
                if log is None:
                    log = csv.DictWriter(log_file, fieldnames=list(row))
                    log.writeheader()
                log.writerow(row)
                log_file.flush()
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
    seconds = time.perf_counter() - started
    training = {"settings": dataclasses.asdict(config), "dataset_demos": len(dataset.demo_names),
                "dataset_windows": len(dataset), "filter_key": filter_key, "seconds": round(seconds, 2),
                "final_loss": metrics["loss"], "device": str(device)}
    return save_checkpoint(out, model, normalization, env_args=dataset.env_args, training=training)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with training settings (flags override it)")
    parser.add_argument("--dataset", help="Robomimic-format HDF5 file")
    parser.add_argument("--out", help="checkpoint directory to write")
    parser.add_argument("--obs-keys", dest="obs_keys", help="comma-separated observation keys, e.g. robot0_eef_pos,object")
    parser.add_argument("--head", choices=HEADS)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--horizon", type=int, help="action chunk length")
    parser.add_argument("--frame-stack", dest="frame_stack", type=int)
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def run(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name) for name in
                 ("dataset", "out", "obs_keys", "head", "steps", "horizon", "frame_stack", "batch_size", "lr",
                  "device", "seed")}
    config = load_train_config(args.config, overrides)
    checkpoint = train(config, progress=not args.no_progress)
    print(f"saved checkpoint to {checkpoint}")
    return 0
