"""Action-chunk execution: the convention `mvp eval`, the simulation and the policy node share.

A chunk policy predicts `horizon` (h) actions at once. `ChunkExecutor` turns chunks into one action
per control step:

- open loop: execute the first k of the h actions (`execute`, default h), then ask for a new chunk;
- temporal ensembling (ACT: "Learning Fine-Grained Bimanual Manipulation with Low-Cost Hardware",
  Zhao et al. 2023, arXiv 2304.13705): ask for a chunk every k steps (default 1) and execute, at each
  step, the weighted mean of every prediction made for that step by the chunks still covering it.
  Ordered from the oldest prediction (i = 0) to the newest, the weights are
  `w_i = exp(-decay * i) / sum_j exp(-decay * j)`, so older predictions weigh more; ACT uses
  decay 0.01.

The executor knows nothing of environments, ROS or torch:

    executor.reset()                      # start of an episode
    if executor.needs_chunk:
        executor.add_chunk(policy.act(obs))
    action = executor.next_action()       # one control step
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

ACT_ENSEMBLE_DECAY = 0.01


class ChunkExecutor:
    def __init__(self, horizon: int, execute: int | None = None, temporal_ensemble: bool = False,
                 ensemble_decay: float = ACT_ENSEMBLE_DECAY) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if execute is None:
            execute = 1 if temporal_ensemble else horizon
        if not 1 <= execute <= horizon:
            raise ValueError(f"execute must be between 1 and the chunk horizon {horizon}, got {execute}")
        if not 0 <= ensemble_decay < math.inf:
            raise ValueError(f"ensemble_decay must be a finite number >= 0, got {ensemble_decay}")
        self.horizon = horizon
        self.execute = execute
        self.temporal_ensemble = temporal_ensemble
        self.ensemble_decay = ensemble_decay
        self.reset()

    def reset(self) -> None:
        """Forget all chunks (start of an episode)."""
        self._step = 0
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (step it was planned at, chunk), oldest first

    @property
    def needs_chunk(self) -> bool:
        """True when the next action needs a new chunk first."""
        return not self._chunks or self._step - self._chunks[-1][0] >= self.execute

    def add_chunk(self, chunk: np.ndarray) -> None:
        """A chunk (horizon, action_dim) planned from the observation of the current step."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] != self.horizon:
            raise ValueError(f"a chunk must have shape (horizon={self.horizon}, action_dim), got {chunk.shape}")
        if not self.temporal_ensemble:
            self._chunks.clear()
        self._chunks.append((self._step, chunk))

    def next_action(self) -> np.ndarray:
        """The action for the current step; advances to the next step."""
        if self.needs_chunk:
            raise RuntimeError(f"step {self._step} needs a new chunk: call add_chunk first")
        while self._step - self._chunks[0][0] >= self.horizon:  # chunks that no longer cover this step
            self._chunks.popleft()
        action = self._mean_at(self._step)
        self._step += 1
        return action

    def planned(self) -> np.ndarray:
        """The actions the chunks hold for the steps after the last next_action, to the end of the newest
        chunk, each as next_action would give it if no chunk came: (steps, action_dim); advances nothing."""
        if not self._chunks:
            return np.zeros((0, 0))
        planned_at, newest = self._chunks[-1]
        steps = range(self._step, planned_at + self.horizon)
        return np.array([self._mean_at(step) for step in steps]).reshape(len(steps), newest.shape[1])

    def _mean_at(self, step: int) -> np.ndarray:
        predictions = np.stack([chunk[step - at] for at, chunk in self._chunks if 0 <= step - at < self.horizon])
        weights = np.exp(-self.ensemble_decay * np.arange(len(predictions)))
        return weights @ predictions / weights.sum()
