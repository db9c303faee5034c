"""Training windows over episodes stored back to back: observation frame stacks and action chunks.

Window k of an episode holds observation frames k-F+1..k and actions k..k+H-1, padded at the
episode ends by repeating the first frame and the last action. This is what robomimic's
SequenceDataset(frame_stack=F, seq_length=H, pad_frame_stack=True, pad_seq_length=True) yields,
so there is one window per step and window i is the i-th step of the concatenated episodes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class WindowIndex:
    """Maps window numbers to step indices into the concatenation of the episodes."""

    def __init__(self, episode_lengths: Sequence[int], frame_stack: int = 1, action_horizon: int = 1):
        if frame_stack < 1 or action_horizon < 1:
            raise ValueError(
                f"frame_stack and action_horizon must be >= 1, got {frame_stack} and {action_horizon}"
            )
        lengths = np.asarray(episode_lengths, dtype=np.int64)
        if lengths.size == 0 or (lengths < 1).any():
            raise ValueError(f"every episode needs at least one step, got lengths {lengths.tolist()}")
        self.frame_stack = frame_stack
        self.action_horizon = action_horizon
        self.episode_lengths = lengths
        self.episode_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.step_episode = np.repeat(np.arange(len(lengths)), lengths)
        self.step_first = self.episode_starts[self.step_episode]
        self.step_last = self.step_first + lengths[self.step_episode] - 1
        self._obs_offsets = np.arange(1 - frame_stack, 1)
        self._action_offsets = np.arange(action_horizon)

    def __len__(self) -> int:
        return len(self.step_episode)

    def check(self, windows: np.ndarray) -> np.ndarray:
        """Windows as an int64 array; IndexError for any outside [-len, len)."""
        windows = np.asarray(windows, dtype=np.int64)
        if windows.size == 0:
            raise IndexError("empty batch: no window indices given")
        count = len(self)
        if (windows.min() < -count or windows.max() >= count):
            raise IndexError(f"window index out of range for {count} windows")
        return np.where(windows < 0, windows + count, windows)

    def _steps(self, windows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        steps = windows[:, None] + offsets[None, :]
        return np.clip(steps, self.step_first[windows][:, None], self.step_last[windows][:, None])

    def obs_steps(self, windows: np.ndarray) -> np.ndarray:
        """(B, frame_stack) global steps of each window's observation frames."""
        return self._steps(windows, self._obs_offsets)

    def action_steps(self, windows: np.ndarray) -> np.ndarray:
        """(B, action_horizon) global steps of each window's actions."""
        return self._steps(windows, self._action_offsets)
