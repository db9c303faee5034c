"""`Policy`: the small stable API that training, evaluation and the ROS node share.

    policy = Policy.load("models/lift_lowdim", device="auto")
    policy.reset(seed=0)
    chunk = policy.act({"robot0_eef_pos": ..., "object": ...})   # (horizon, action_dim), data units

`act` takes one frame per key (low-dim (D,) float, images (H, W, C) uint8) and keeps the frame
stack itself; after `reset` the first frame is repeated, as in training.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointInfo, load_checkpoint
from .config import PolicyConfig, is_image_shape
from .model import ChunkPolicyModel


class ObservationError(ValueError):
    """An observation that does not match what the policy was trained on."""


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device 'cpu' or 'auto'")
    return device


class Policy:
    def __init__(self, model: ChunkPolicyModel, info: CheckpointInfo | None = None,
                 device: str | torch.device = "cpu", seed: int | None = 0):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.info = info
        self._generator = torch.Generator(device=self.device)
        self._frames: dict[str, deque[torch.Tensor]] = {}
        self.reset(seed)

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto", seed: int | None = 0) -> "Policy":
        resolved = resolve_device(device)
        model, info = load_checkpoint(directory, resolved)
        return cls(model, info, resolved, seed)

    @property
    def config(self) -> PolicyConfig:
        return self.model.config

    @property
    def obs_keys(self) -> list[str]:
        return list(self.config.obs_shapes)

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    def reset(self, seed: int | None = None) -> None:
        """Forget the frame history (start of an episode); reseed the sampling noise when a seed is given."""
        self._frames = {key: deque(maxlen=self.config.frame_stack) for key in self.obs_keys}
        if seed is not None:
            self._generator.manual_seed(int(seed))

    def _check(self, obs: dict[str, np.ndarray]) -> None:
        missing = [key for key in self.obs_keys if key not in obs]
        unexpected = [key for key in obs if key not in self.config.obs_shapes]
        if missing or unexpected:
            raise ObservationError(f"observation keys do not match the policy: missing {missing}, "
                                   f"unexpected {unexpected}; the policy expects {self.obs_keys}")
        for key, expected in self.config.obs_shapes.items():
            value = np.asarray(obs[key])
            if value.shape != expected:
                raise ObservationError(f"observation {key!r} has shape {value.shape}, the policy expects {expected}")
            if is_image_shape(expected):
                if value.dtype != np.uint8:
                    raise ObservationError(f"image observation {key!r} has dtype {value.dtype}, expected uint8")
            elif not np.all(np.isfinite(value)):
                raise ObservationError(f"observation {key!r} contains NaN or infinite values: {value}")

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """One action chunk (horizon, action_dim) in the data's units, from one network evaluation for MVP."""
        return self.sample(obs, num_candidates=1)[0]

    @torch.inference_mode()
    def sample(self, obs: dict[str, np.ndarray], num_candidates: int) -> np.ndarray:
        """`num_candidates` chunks (N, horizon, action_dim) for the same observation, in one batched call."""
        self._check(obs)
        batch = {}
        for key, frames in self._frames.items():
            frame = torch.tensor(np.asarray(obs[key]), device=self.device)  # a copy: callers may refill one buffer
            if not frames:
                frames.extend([frame] * self.config.frame_stack)
            else:
                frames.append(frame)
            batch[key] = torch.stack(tuple(frames))[None]
        chunks = self.model.sample(batch, num_candidates, self._generator)
        return chunks[0].cpu().numpy()
