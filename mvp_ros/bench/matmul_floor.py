"""The arithmetic floor of a training update: the matrix multiplications it runs (forward, JVP and
backward alike), recorded once as they are dispatched, then replayed back to back on tensors of the
same shapes, strides and dtype. An update can take no less than its floor; how close it comes says how
much of it is anything else (normalization, activations, copies, the optimizer, Python)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# out = beta * input + alpha * (a @ b): the operands that take part in the product
MATMULS = {aten.mm.default: (0, 1), aten.bmm.default: (0, 1), aten.addmm.default: (1, 2),
           aten.baddbmm.default: (1, 2)}


@dataclass(frozen=True)
class Operand:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple[object, tuple[Operand, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            self.calls.append((func, tuple(Operand(tuple(arg.shape), tuple(arg.stride()), arg.dtype)
                                           if isinstance(arg, torch.Tensor) else arg for arg in args)))
        return func(*args, **(kwargs or {}))


class MatmulFloor:
    """The matrix multiplications of one call of `update`, replayable back to back (`run`)."""

    def __init__(self, update: Callable[[], object], device: torch.device):
        recorder = _Recorder()
        with recorder:
            update()
        if not recorder.calls:
            raise ValueError("the update ran no matrix multiplication")
        generator = torch.Generator(device=device).manual_seed(0)
        self.calls = [(func, tuple(_tensor(arg, device, generator) if isinstance(arg, Operand) else arg
                                   for arg in args))
                      for func, args in recorder.calls]
        self.flops = sum(_flops(func, args) for func, args in self.calls)

    def run(self) -> None:
        with torch.no_grad():
            for func, args in self.calls:
                func(*args)


def _tensor(operand: Operand, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    span = 1 + sum((size - 1) * stride for size, stride in zip(operand.shape, operand.stride) if size)
    storage = torch.randn(span, generator=generator, device=device).to(operand.dtype)
    return storage.as_strided(operand.shape, operand.stride)


def _flops(func, args: tuple) -> int:
    first, second = (args[index] for index in MATMULS[func])
    *batch, rows, inner = first.shape
    count = 1
    for size in batch:
        count *= size
    return 2 * count * rows * inner * second.shape[-1]
