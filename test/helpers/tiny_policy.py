"""Small untrained policy checkpoints for the ROS node tests: real checkpoints written with the
package's own checkpoint code, loadable by `Policy.load`, in milliseconds instead of a training run.

Their actions are whatever a randomly initialised MVP network makes of the observation: enough to
show that commands flow, that limits and holds apply, and that the ROS loop computes exactly what
the offline loop computes. A node refuses a checkpoint whose stored contract differs in meaning from
the one it is given (or that stores none): pass the contract the node will run with, e.g.
PANDA_SIM_CONTRACT for config/panda_sim_contract.yaml.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mvp_ros.data.contract import load_contract
from mvp_ros.policy.checkpoint import save_checkpoint
from mvp_ros.policy.config import PolicyConfig
from mvp_ros.policy.model import ChunkPolicyModel
from mvp_ros.policy.normalizer import Normalization
from mvp_ros.resources import package_file
from mvp_ros.sim.envs import env_args_for

LIFT_LOWDIM_SHAPES = {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,), "object": (10,)}
HORIZON = 5
ACTION_DIM = 7
PANDA_SIM_CONTRACT = load_contract(package_file("config", "panda_sim_contract.yaml")).to_dict()


def write_tiny_checkpoint(
    directory: Path,
    obs_shapes: dict[str, tuple[int, ...]] = LIFT_LOWDIM_SHAPES,
    *,
    action_dim: int = ACTION_DIM,
    action_range: float = 0.5,
    horizon: int = HORIZON,
    poison: bool = False,
    contract: dict | None = None,
    hidden_dim: int = 64,
    depth: int = 2,
    seed: int = 0,
) -> Path:
    """An MVP checkpoint (2x64 unless told) with Lift env_args. Actions are scaled to +- action_range;
    `poison` sets every weight to NaN, so every chunk it produces is NaN; `contract` (a contract
    mapping, as a contract YAML holds it) is stored as the contract of its training data."""
    torch.manual_seed(seed)
    config = PolicyConfig(head="mvp", action_dim=action_dim, horizon=horizon, obs_shapes=obs_shapes,
                          hidden_dim=hidden_dim, depth=depth, image_feature_dim=16 if hidden_dim < 512 else 64)
    lowdim = {key: shape for key, shape in obs_shapes.items() if len(shape) == 1}
    normalization = Normalization(
        action_min=[-action_range] * action_dim,
        action_max=[action_range] * action_dim,
        obs_mean={key: [0.0] * shape[0] for key, shape in lowdim.items()},
        obs_std={key: [1.0] * shape[0] for key, shape in lowdim.items()},
    )
    model = ChunkPolicyModel(config, normalization)
    if poison:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(float("nan"))
    return save_checkpoint(directory, model, normalization, env_args=env_args_for("lift", images=False), contract=contract)
