"""`mvp demos`: scripted-expert demonstrations in robosuite, written to a Robomimic-format HDF5 file.

The experts (mvp_ros.sim.experts) run until the requested number of episodes have succeeded; only
successful episodes are written, in Robomimic format, with the `env_args` that rebuild the
environment and, as the file attr `contract`, the simulated Panda's contract
(config/panda_sim_contract.yaml, with the task's object size and the cameras written) that
`mvp train` stores in the checkpoint; each demo's attrs hold its `model_file`, `seed` and
`strategy`. Like Robomimic's datasets, the file holds Robomimic's full low-dim key set (plus the
cameras with `--images`), the observations after each step under `next_obs`, rewards (robosuite's
sparse reward, 1 at success), integer `dones` (1 at the first success, where the episode ends) and
the masks `train`/`valid` and `20_percent`/`50_percent` with their own train/valid splits.

With `--quality mixed`, like Robomimic's multi-human datasets, `--episodes` episodes are recorded by
operators of three skill levels (mvp_ros.sim.experts.OPERATORS: `better`, `okay`, `worse`, about a
third each, assigned from the seed) and all are written, failed and slow ones included; the masks
`better`/`okay`/`worse` name each level's episodes, each demo's `operator` attr its own, and the file
attr `quality` the mode.

    mvp demos --task lift --episodes 200 --out lift.hdf5 [--images] [--seed S] [--max-attempts M]
    mvp demos --task lift --episodes 300 --out lift_mh.hdf5 --quality mixed
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from mvp_ros.data.contract import Contract, load_contract
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.resources import package_file
from mvp_ros.sim.envs import env_args_for, make_env
from mvp_ros.sim.experts import (
    OPERATORS,
    PLANNERS,
    DemoError,
    DemoStats,
    assign_operators,
    mixed_quality_demos,
    successful_demos,
)

# Robomimic's low-dim key set (that of its v1.4.1 datasets).
LOW_DIM_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_eef_vel_ang", "robot0_eef_vel_lin",
                "robot0_gripper_qpos", "robot0_gripper_qvel", "robot0_joint_pos", "robot0_joint_pos_cos",
                "robot0_joint_pos_sin", "robot0_joint_vel")
IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")
PERCENT_MASKS = (20, 50)  # Robomimic's data-size subsets


def demos_contract(episode: Episode) -> dict:
    """The simulated Panda's contract, fitted to the episodes of a run (like `episode`): the task's
    `object` size, and each camera written as an rgb8 sensor_msgs/Image on /<camera>/image_raw."""
    contract = load_contract(package_file("config", "panda_sim_contract.yaml")).to_dict()
    observations = contract["observations"]
    observations["object"]["size"] = episode.obs["object"].shape[1]
    for key in IMAGE_KEYS:
        if key in episode.obs:
            height, width = episode.obs[key].shape[1:3]
            observations[key] = {"type": "sensor_msgs/msg/Image", "topic": f"/{key.removesuffix('_image')}/image_raw",
                                 "image": {"width": width, "height": height, "encoding": "rgb8"}}
    return Contract.from_dict(contract, source="the mvp demos contract").to_dict()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=sorted(PLANNERS), help="robosuite task")
    parser.add_argument("--episodes", type=int, required=True,
                        help="successful demonstrations to write (with --quality mixed: episodes, failed or not)")
    parser.add_argument("--quality", choices=("proficient", "mixed"), default="proficient",
                        help="proficient: the expert's successes only (default); mixed: every episode of operators "
                             f"of three skill levels ({', '.join(OPERATORS)}), with a mask for each")
    parser.add_argument("--out", type=Path, required=True, help="output Robomimic-format HDF5 file")
    parser.add_argument("--images", action="store_true", help=f"also store {' and '.join(IMAGE_KEYS)}")
    parser.add_argument("--image-size", type=int, default=84, help="image height and width (default 84)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    parser.add_argument(
        "--max-attempts", type=int, default=None, help="give up after this many episodes (default 2 x episodes + 20)"
    )


def run(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise SystemExit(f"mvp demos: --episodes must be at least 1, got {args.episodes}")
    max_attempts = args.max_attempts if args.max_attempts is not None else 2 * args.episodes + 20
    if max_attempts < args.episodes:
        raise SystemExit(f"mvp demos: --max-attempts ({max_attempts}) is less than --episodes ({args.episodes})")
    if args.quality == "mixed" and args.max_attempts is not None:
        raise SystemExit("mvp demos: --max-attempts does not apply to --quality mixed, which writes every episode")
    if args.image_size < 1:
        raise SystemExit(f"mvp demos: --image-size must be positive, got {args.image_size}")
    if not args.out.parent.is_dir():
        raise SystemExit(f"mvp demos: output directory {args.out.parent} does not exist")
    env_args = env_args_for(args.task, images=args.images, image_size=args.image_size)
    env = make_env(env_args)
    obs_keys = LOW_DIM_KEYS + (IMAGE_KEYS if args.images else ())
    stats = DemoStats()
    provenance = {
        "source": "mvp demos (scripted experts, mvp_ros.sim.experts)",
        "task": args.task,
        "seed": args.seed,
        "images": bool(args.images),
        "max_attempts": max_attempts,
    }
    named_masks = None
    if args.quality == "mixed":
        operators = assign_operators(args.episodes, args.seed)
        named_masks = {level: [index for index, operator in enumerate(operators) if operator == level]
                       for level in OPERATORS}
        provenance["quality"] = "mixed"
        del provenance["max_attempts"]  # every attempt is written
        demos = mixed_quality_demos(env, args.task, operators, args.seed, obs_keys, stats)
    else:
        demos = successful_demos(env, args.task, args.episodes, args.seed, max_attempts, obs_keys, stats)
    try:
        first = next(demos)
        provenance["contract"] = demos_contract(first)
        write_robomimic(args.out, itertools.chain([first], demos), env_args, seed=args.seed, attrs=provenance,
                        percent_masks=PERCENT_MASKS, named_masks=named_masks)
    except DemoError as error:
        print(f"mvp demos: {error}; nothing written", file=sys.stderr)
        return 1
    finally:
        env.close()
    seconds_per = (f"{stats.seconds / stats.attempts:.2f} s per episode" if args.quality == "mixed"
                   else f"{stats.seconds / stats.successes:.2f} s per demonstration")
    print(
        f"{args.task}: {stats.attempts} attempts, {stats.successes} successes, "
        f"success rate {stats.successes / stats.attempts:.3f}, {seconds_per} -> {args.out}"
    )
    return 0
