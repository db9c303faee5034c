"""Normalization statistics computed from data and stored in the checkpoint's config.json.

Actions are scaled per dimension to [-1, 1] by the dataset's min/max; low-dim observations are
standardized by mean/std. Images are scaled to [0, 1] inside the image encoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# A dimension that barely varies in the data (a fixed gripper axis, say) would otherwise turn
# tiny live deviations into huge network inputs.
MIN_OBS_STD = 1e-2
MIN_ACTION_RANGE = 1e-4


@dataclass
class Normalization:
    action_min: list[float]
    action_max: list[float]
    obs_mean: dict[str, list[float]]
    obs_std: dict[str, list[float]]

    @classmethod
    def from_data(cls, actions: np.ndarray, lowdim_obs: dict[str, np.ndarray]) -> "Normalization":
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, actions.shape[-1])
        return cls(
            action_min=actions.min(axis=0).tolist(),
            action_max=actions.max(axis=0).tolist(),
            obs_mean={key: np.asarray(values, np.float64).mean(axis=0).tolist() for key, values in lowdim_obs.items()},
            obs_std={key: np.maximum(np.asarray(values, np.float64).std(axis=0), MIN_OBS_STD).tolist()
                     for key, values in lowdim_obs.items()},
        )

    def to_dict(self) -> dict:
        return {"action_min": self.action_min, "action_max": self.action_max,
                "obs_mean": self.obs_mean, "obs_std": self.obs_std}

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        return cls(action_min=list(data["action_min"]), action_max=list(data["action_max"]),
                   obs_mean={k: list(v) for k, v in data["obs_mean"].items()},
                   obs_std={k: list(v) for k, v in data["obs_std"].items()})


class ActionScaler(nn.Module):
    """Maps actions to [-1, 1] and back; the statistics live in config.json, not in the weights."""

    def __init__(self, action_min: list[float], action_max: list[float]):
        super().__init__()
        low = torch.tensor(action_min, dtype=torch.float32)
        high = torch.tensor(action_max, dtype=torch.float32)
        center = (high + low) / 2
        half_range = torch.clamp((high - low) / 2, min=MIN_ACTION_RANGE / 2)
        self.register_buffer("center", center, persistent=False)
        self.register_buffer("half_range", half_range, persistent=False)

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.center) / self.half_range

    def unnormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        return normalized * self.half_range + self.center
