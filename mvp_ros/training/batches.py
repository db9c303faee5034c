"""The training batches of `mvp train --algo bc`, gathered in the loop or ahead of it by a background
thread (`prefetch`), the same batches in the same order either way.

Each batch is a window index per row drawn from the run's numpy generator, gathered from the dataset
and made tensors. With `prefetch` N > 0, a thread draws and gathers up to N batches ahead (into
page-locked memory when training on a GPU) while the model steps on the current one; it draws from
its own copy of the generator, and every batch carries the generator's state after its draw, which
the run's generator takes when the batch is handed out. So the run's generator, which checkpoints
save for `--resume`, always stands after the last batch trained on, as without prefetching.
"""
from __future__ import annotations

import copy
import queue
import threading

import numpy as np
import torch

from ..data.robomimic import RobomimicDataset
from .workspace import to_tensors

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]  # (obs, actions), as to_tensors gives them


class Batches:
    """`next()`: the next training batch on `device`. Close it when done (it stops the thread)."""

    def __init__(self, dataset: RobomimicDataset, batch_size: int, rng: np.random.Generator, device: torch.device,
                 prefetch: int = 0):
        self.dataset, self.batch_size, self.rng, self.device = dataset, batch_size, rng, device
        self.ready: queue.Queue | None = None
        if prefetch:
            self.ready = queue.Queue(maxsize=prefetch)
            self.stopping = threading.Event()
            self.thread = threading.Thread(target=self._gather_ahead, args=(copy.deepcopy(rng),),
                                           name="mvp-train-batches", daemon=True)
            self.thread.start()

    def _draw(self, rng: np.random.Generator, device: torch.device, pin: bool = False) -> Batch:
        return to_tensors(self.dataset.get_batch(rng.integers(len(self.dataset), size=self.batch_size)), device, pin)

    def _gather_ahead(self, rng: np.random.Generator) -> None:
        pin = self.device.type == "cuda"
        try:
            while not self.stopping.is_set():
                item: object = (self._draw(rng, torch.device("cpu"), pin), rng.bit_generator.state)
                self._put(item)
        except Exception as error:  # handed to the loop, which raises it where the batch was due
            self._put(error)

    def _put(self, item: object) -> None:
        while not self.stopping.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __next__(self) -> Batch:
        if self.ready is None:
            return self._draw(self.rng, self.device)
        item = self.ready.get()
        if isinstance(item, Exception):
            raise item
        (obs, actions), state = item
        self.rng.bit_generator.state = state
        return {key: value.to(self.device, non_blocking=True) for key, value in obs.items()}, \
            actions.to(self.device, non_blocking=True)

    def close(self) -> None:
        if self.ready is not None:
            self.stopping.set()
            self.thread.join()
