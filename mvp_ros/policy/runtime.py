"""`Policy`: the small stable API that training, evaluation and the ROS node share.

    policy = Policy.load("models/lift_lowdim", device="auto")
    policy.reset(seed=0)
    chunk = policy.act({"robot0_eef_pos": ..., "object": ...})   # (horizon, action_dim), data units

`act` takes one frame per key (low-dim (D,) float, images (H, W, C) uint8) and keeps the frame
stack itself, in input tensors allocated once and refilled in place; after `reset` the first frame
is repeated, as in training. `execution` picks how the sampling call runs (execution.py): `auto`
replays a captured CUDA graph on a GPU and runs eagerly on a CPU; `aot` is the fastest on a CPU
but compiles for seconds first.

`best_of=N` (N > 1) acts by generate-and-select, as MVP's reinforcement learning trains it to: N
one-step candidates, scored by the critic saved beside the checkpoint (`mvp train --algo mvp-rl`),
the best executed; the whole select step is the one call that `execution` runs.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointInfo, load_checkpoint
from .config import PolicyConfig
from .critic import BestOfN, ChunkCritic, load_critic
from .execution import Sampler, make_sampler, resolve_mode, use_inference_layout
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
                 device: str | torch.device = "cpu", seed: int | None = 0, execution: str = "auto",
                 critic: ChunkCritic | None = None, best_of: int = 1):
        self.device = resolve_device(device)
        self.model = use_inference_layout(model.to(self.device).eval())
        self.info = info
        if best_of < 1:
            raise ValueError(f"best_of: the number of candidates must be at least 1, got {best_of}")
        if best_of > 1 and critic is None:
            raise ValueError(f"best_of {best_of} needs a critic to select with; this policy has none")
        self.best_of = best_of
        self._selection = BestOfN(self.model, use_inference_layout(critic.to(self.device).eval())) if best_of > 1 else None
        self.execution = resolve_mode(execution, model.config, self.device)
        self._generator = torch.Generator(device=self.device)
        config = model.config
        # The model's inputs, (1, frame_stack, *frame_shape) per key, refilled in place every call. The
        # low-dim keys are views into one (1, frame_stack, total) tensor: a tick checks and copies all
        # of them at once (at batch 1, each tensor operation's fixed cost is most of the work).
        sizes = [config.obs_shapes[key][0] for key in config.lowdim_keys]
        self._lowdim_keys = config.lowdim_keys
        self._lowdim_shapes = [(size,) for size in sizes]
        self._lowdim = torch.zeros((1, config.frame_stack, sum(sizes)), device=self.device)
        views = {key: self._lowdim[..., end - size:end]
                 for key, end, size in zip(config.lowdim_keys, itertools.accumulate(sizes), sizes)}
        self._inputs = {
            key: views[key] if key in views else
            torch.zeros((1, config.frame_stack, *shape), device=self.device, dtype=torch.uint8)
            for key, shape in config.obs_shapes.items()
        }
        self._samplers: dict[tuple[int, bool], Sampler] = {}  # by (candidates, selected), built on first use
        self._history_empty = True
        self.reset(seed)

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto", seed: int | None = 0,
             execution: str = "auto", best_of: int = 1) -> "Policy":
        """`best_of` > 1 also loads the critic beside the checkpoint; a checkpoint without one is refused."""
        resolved = resolve_device(device)
        model, info = load_checkpoint(directory, resolved)
        critic = load_critic(directory, resolved) if best_of > 1 else None
        return cls(model, info, resolved, seed, execution, critic, best_of)

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
        self._history_empty = True
        if seed is not None:
            self._generator.manual_seed(int(seed))

    def _check(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The observation's low-dim frame (all low-dim keys concatenated), or a clear error."""
        if obs.keys() != self._inputs.keys():
            missing = [key for key in self.obs_keys if key not in obs]
            unexpected = [key for key in obs if key not in self.config.obs_shapes]
            raise ObservationError(f"observation keys do not match the policy: missing {missing}, "
                                   f"unexpected {unexpected}; the policy expects {self.obs_keys}")
        lowdim = [obs[key] for key in self._lowdim_keys]
        if [np.shape(value) for value in lowdim] != self._lowdim_shapes:
            self._check_shapes(obs, self._lowdim_keys)
        for key in self.config.image_keys:
            self._check_shapes(obs, [key])
            if (dtype := np.asarray(obs[key]).dtype) != np.uint8:
                raise ObservationError(f"image observation {key!r} has dtype {dtype}, expected uint8")
        frame = np.concatenate(lowdim) if lowdim else np.zeros(0)
        if not np.isfinite(frame).all():
            key = next(key for key, value in zip(self._lowdim_keys, lowdim) if not np.isfinite(value).all())
            raise ObservationError(f"observation {key!r} contains NaN or infinite values: {obs[key]}")
        return frame

    def _check_shapes(self, obs: dict[str, np.ndarray], keys: list[str]) -> None:
        for key in keys:
            shape, expected = np.shape(obs[key]), self.config.obs_shapes[key]
            if shape != expected:
                raise ObservationError(f"observation {key!r} has shape {shape}, the policy expects {expected}")

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """One action chunk (horizon, action_dim) in the data's units: from one network evaluation for
        MVP, or the critic's best of `best_of` candidates from one batched call."""
        return self._call(obs, self.best_of, selected=self.best_of > 1)[0]

    def sample(self, obs: dict[str, np.ndarray], num_candidates: int) -> np.ndarray:
        """`num_candidates` chunks (N, horizon, action_dim) for the same observation, in one batched call."""
        return self._call(obs, num_candidates, selected=False)

    @torch.inference_mode()
    def _call(self, obs: dict[str, np.ndarray], num_candidates: int, selected: bool) -> np.ndarray:
        self._push_frames(self._check(obs), obs)
        sampler = self._samplers.get((num_candidates, selected))
        if sampler is None:
            sampler = self._samplers[num_candidates, selected] = make_sampler(
                self._selection if selected else self.model, self._inputs, num_candidates, self.execution,
                self._generator)
        noise = torch.randn(num_candidates, self.config.chunk_dim, generator=self._generator, device=self.device)
        return sampler(noise)[0].cpu().numpy()  # a copy on a GPU; on a CPU a fresh tensor every call

    def _push_frames(self, lowdim: np.ndarray, obs: dict[str, np.ndarray]) -> None:
        """Copy the new frames into the input tensors (the caller may refill its own arrays afterwards)."""
        stacks = [(self._lowdim, torch.from_numpy(lowdim))] if self._lowdim_keys else []
        stacks += [(self._inputs[key], torch.from_numpy(np.ascontiguousarray(obs[key]))) for key in self.config.image_keys]
        for stack, frame in stacks:
            if self._history_empty:
                stack[0].copy_(frame.expand_as(stack[0]))
            else:
                if stack.shape[1] > 1:
                    stack[0, :-1] = stack[0, 1:].clone()
                stack[0, -1].copy_(frame)
        self._history_empty = False
