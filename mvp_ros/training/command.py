"""`mvp train`: behaviour cloning of any head (`--algo bc`, mvp_ros.training.behaviour_cloning) or
offline(-to-online) RL with best-of-N (`--algo mvp-rl`, mvp_ros.training.rl) on a Robomimic-format
HDF5 dataset. `train(config)` runs the configured loop; `add_arguments` and `run` are the command.
Under torchrun it is one of several processes (mvp_ros.training.distributed); docs/training.md is
the guide.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..policy.checkpoint import read_checkpoint_info
from ..policy.config import HEADS, ConfigError
from ..policy.threads import default_threads
from ..rl import gym_online
from . import distributed
from .behaviour_cloning import train_bc
from .rl import train_mvp_rl
from .workspace import ALGOS, PRECISIONS, TrainConfig, load_train_config, read_config_file


def train(config: TrainConfig, progress: bool = True, resume: bool = False) -> Path:
    """Runs `config.algo`'s loop on `config.threads` torch threads (default_threads() if 0), restoring
    the caller's count after."""
    world_size = distributed.ranks_from_environment().world_size
    if config.algo == "mvp-rl" and world_size > 1:
        raise ConfigError(f"algo mvp-rl trains in one process, but torchrun started {world_size} (WORLD_SIZE="
                          f"{world_size}): run `mvp train --algo mvp-rl` without torchrun, or train --algo bc")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads())
    try:
        loop = train_mvp_rl if config.algo == "mvp-rl" else train_bc
        return loop(config, progress=progress, resume=resume)
    finally:
        torch.set_num_threads(previous_threads)
        distributed.leave()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with training settings (flags override it)")
    parser.add_argument("--dataset", help="Robomimic-format HDF5 file")
    parser.add_argument("--out", help="checkpoint directory to write")
    parser.add_argument("--obs-keys", dest="obs_keys", help="comma-separated observation keys, e.g. robot0_eef_pos,object")
    parser.add_argument("--head", choices=HEADS)
    parser.add_argument("--algo", choices=ALGOS + gym_online.GYM_ALGOS,
                        help="bc (default) or mvp-rl: offline RL with a critic and best-of-N; fpmd (--head mvp or flow), "
                             "mfpo or sac: online RL in the Gymnasium task of --env")
    parser.add_argument("--online-steps", dest="online_steps", type=int,
                        help="mvp-rl: environment steps of online fine-tuning in the dataset's robosuite task; "
                             "fpmd, mfpo, sac: environment steps in --env")
    parser.add_argument("--env", help="fpmd, mfpo, sac: the Gymnasium MuJoCo task, e.g. Hopper-v5 or HalfCheetah-v5, "
                                      "or a robosuite task with dense reward: Lift, PickPlaceCan, NutAssemblySquare")
    parser.add_argument("--filter-key", dest="filter_key",
                        help="train on the demos of mask/FILTER_KEY, e.g. better or 20_percent (default: mask/train)")
    parser.add_argument("--valid-filter-key", dest="valid_filter_key",
                        help="validate on the demos of mask/KEY (default: mask/valid if the file has one)")
    parser.add_argument("--steps", type=int, help="total optimizer steps (with --resume: the new total)")
    parser.add_argument("--horizon", type=int, help="action chunk length")
    parser.add_argument("--frame-stack", dest="frame_stack", type=int)
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default 0: OMP_NUM_THREADS if set, else one per core)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="of the forward pass and loss: bf16 autocast (weights, optimizer and EMA stay fp32) "
                             "or fp32 (default auto: bf16 on a CUDA device that supports it, else fp32)")
    parser.add_argument("--prefetch", type=int,
                        help="batches a background thread gathers ahead while the model steps, the same batches in "
                             "the same order (default 0: gathered in the loop)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--eval-every", dest="eval_every", type=int,
                        help="steps between success evaluations of the EMA policy in the dataset's simulated task, "
                             "in a separate process (default 0: none)")
    parser.add_argument("--eval-episodes", dest="eval_episodes", type=int, help="episodes per evaluation (default 10)")
    parser.add_argument("--eval-max-steps", dest="eval_max_steps", type=int,
                        help="steps per evaluation episode (default 0: the task's horizon)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def run(args: argparse.Namespace) -> int:
    if args.algo in gym_online.GYM_ALGOS:
        return gym_online.run_command(args)
    if args.env:
        raise ConfigError(f"--env is the Gymnasium task of --algo {' or '.join(gym_online.GYM_ALGOS)}")
    overrides = {name: getattr(args, name) for name in
                 ("dataset", "out", "obs_keys", "head", "steps", "horizon", "frame_stack", "batch_size", "lr",
                  "device", "threads", "precision", "prefetch", "seed", "algo", "online_steps", "filter_key",
                  "valid_filter_key", "eval_every", "eval_episodes", "eval_max_steps")}
    base = None
    if args.resume:
        out = args.out or (read_config_file(args.config).get("out") if args.config else None)
        if not out:
            raise ConfigError("--resume needs the directory of the run to continue: --out DIR, or `out:` in --config")
        base = read_checkpoint_info(out).training.get("settings")
    config = load_train_config(args.config, overrides, base)
    checkpoint = train(config, progress=not args.no_progress, resume=args.resume)
    if distributed.ranks_from_environment().is_main:
        print(f"saved checkpoint to {checkpoint}")
    return 0
