"""How a policy's fixed-shape sampling call runs: eagerly, compiled, or replayed as a CUDA graph.

A deployed policy samples the same shapes every tick: one observation, one (or N) chunks. Its
inputs live in tensors allocated once and refilled in place, so the whole call can be compiled
just in time (`compile`: torch.compile, which still runs Python guards and wrappers every call),
ahead of time into a shared library that is called without Python in between (`aot`:
torch.export + AOTInductor, on a CPU), or, on a GPU, recorded once and replayed with a single
launch (`cuda_graph`). Every mode returns the same chunks for the same noise.

    sampler = make_sampler(model, inputs, num_candidates=1, mode="cuda_graph")
    chunks = sampler(noise)   # (1, 1, horizon, action_dim); a cuda_graph sampler reuses its output buffer

The call is `sample_with_noise` of a ChunkPolicyModel, or of critic.BestOfN, whose call samples N
candidates and returns the critic's choice: generate-and-select runs in every mode alike.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

from .config import PolicyConfig
from .critic import BestOfN, ChunkCritic
from .model import ChunkPolicyModel

MODES = ("eager", "compile", "aot", "cuda_graph")
DEVICE_OF_MODE = {"aot": "cpu", "cuda_graph": "cuda"}  # the modes that run on one kind of device only
CAPTURING_MODES = ("aot", "cuda_graph")  # the whole call captured with fixed inputs: no generator inside
Sampler = Callable[[torch.Tensor], torch.Tensor]
WithEncoder = TypeVar("WithEncoder", ChunkPolicyModel, ChunkCritic)  # a network with an observation encoder


def graph_capturable(config: PolicyConfig) -> bool:
    """DDPM draws fresh noise at every step from its generator, so only its first noise is an input:
    neither a CUDA graph nor an exported program can hold that generator."""
    return not (config.head == "diffusion" and config.diffusion_sampler == "ddpm")


def resolve_mode(mode: str, config: PolicyConfig, device: torch.device) -> str:
    """`auto`: a CUDA graph where one can be captured, eager otherwise (compiling takes seconds to minutes)."""
    if mode == "auto":
        return "cuda_graph" if device.type == "cuda" and graph_capturable(config) else "eager"
    if mode not in MODES:
        raise ValueError(f"execution mode {mode!r} is not one of auto, {', '.join(MODES)}")
    if DEVICE_OF_MODE.get(mode, device.type) != device.type:
        if mode == "cuda_graph":
            raise ValueError(f"execution mode cuda_graph needs a CUDA device; the policy runs on {device}")
        raise ValueError(f"execution mode aot compiles for a CPU; the policy runs on {device}, where cuda_graph "
                         "replays the call with one launch")
    if mode in CAPTURING_MODES and not graph_capturable(config):
        raise ValueError(f"execution mode {mode} cannot capture DDPM sampling (it draws noise at every step); "
                         "use eager or compile")
    return mode


def use_inference_layout(model: WithEncoder) -> WithEncoder:
    """The image encoders' weights in NHWC (channels-last) order, in place: camera frames arrive as
    HWC already, and oneDNN runs these convolutions about 15% faster so (two 84x84 cameras, one CPU
    thread). The same network numerically; checkpoints still save contiguous weights."""
    model.obs_encoder.image_encoders.to(memory_format=torch.channels_last)
    return model


def make_sampler(model: ChunkPolicyModel | BestOfN, inputs: dict[str, torch.Tensor], num_candidates: int, mode: str,
                 generator: torch.Generator | None = None) -> Sampler:
    """noise (B * num_candidates, chunk_dim) -> chunks (B, num_candidates, horizon, action_dim) for the
    observations in `inputs`, which the caller refills in place between calls."""
    if mode == "eager":
        return lambda noise: model.sample_with_noise(inputs, noise, num_candidates, generator)
    if mode == "compile":
        # On a CPU the generated code is called from a C++ wrapper rather than a Python one: at batch 1
        # the per-call overhead is most of the time (about 8% less per low-dim call on one thread)
        on_cpu = next(iter(inputs.values())).device.type == "cpu"
        compiled = torch.compile(model.sample_with_noise, dynamic=False, options={"cpp_wrapper": on_cpu})
        return lambda noise: compiled(inputs, noise, num_candidates, generator)
    if mode == "aot":
        return AheadOfTimeSampler(model, inputs, num_candidates)
    if mode == "cuda_graph":
        return CudaGraphSampler(model, inputs, num_candidates)
    raise ValueError(f"execution mode {mode!r} is not one of {', '.join(MODES)}")


class CudaGraphSampler:
    """The sampling call recorded once as a CUDA graph; each call copies the noise in and replays it.

    The returned chunks are the graph's own output buffer: read or copy them before the next call.
    """

    def __init__(self, model: ChunkPolicyModel | BestOfN, inputs: dict[str, torch.Tensor], num_candidates: int,
                 warmup: int = 3):
        batch = next(iter(inputs.values())).shape[0]
        device = next(iter(inputs.values())).device
        self.noise = torch.zeros(batch * num_candidates, model.config.chunk_dim, device=device)
        # Warm-up on a side stream (lazy library set-up must not happen during capture), then capture
        # on that same stream, whose cuBLAS state the warm-up created.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                model.sample_with_noise(inputs, self.noise, num_candidates)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side):
            self.output = model.sample_with_noise(inputs, self.noise, num_candidates)

    def __call__(self, noise: torch.Tensor) -> torch.Tensor:
        self.noise.copy_(noise)
        self.graph.replay()
        return self.output


class _SamplingCall(nn.Module):
    """`sample_with_noise` with the observations as positional tensors, the form torch.export takes."""

    def __init__(self, model: ChunkPolicyModel | BestOfN, keys: list[str], num_candidates: int):
        super().__init__()
        self.model, self.keys, self.num_candidates = model, keys, num_candidates

    def forward(self, noise: torch.Tensor, *observations: torch.Tensor) -> torch.Tensor:
        return self.model.sample_with_noise(dict(zip(self.keys, observations)), noise, self.num_candidates)


class AheadOfTimeSampler:
    """The sampling call exported once (torch.export) and compiled by AOTInductor into a shared library
    built here, from the weights in memory; each call passes the same input tensors to it.

    At batch 1 most of a call's time is overhead around small kernels: torch.compile still runs
    Python guards and wrappers every call, this runs none. The library is never read from a checkpoint
    (a checkpoint stays weights and JSON); it lives in a temporary directory for this object's lifetime.
    """

    def __init__(self, model: ChunkPolicyModel | BestOfN, inputs: dict[str, torch.Tensor], num_candidates: int):
        batch = next(iter(inputs.values())).shape[0]
        self.observations = tuple(inputs.values())
        noise = torch.zeros(batch * num_candidates, model.config.chunk_dim)
        self._directory = tempfile.TemporaryDirectory(prefix="mvp_aot_")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
                program = torch.export.export(_SamplingCall(model, list(inputs), num_candidates).eval(),
                                              (noise, *self.observations))
                package = torch._inductor.aoti_compile_and_package(
                    program, package_path=str(Path(self._directory.name) / "sampler.pt2"))
                self._compiled = torch._inductor.aoti_load_package(package)
        except Exception as error:
            raise RuntimeError(f"execution mode aot could not compile the sampling call (AOTInductor needs a C++ "
                               f"compiler; eager needs none): {type(error).__name__}: {error}") from error

    def __call__(self, noise: torch.Tensor) -> torch.Tensor:
        return self._compiled(noise, *self.observations)
