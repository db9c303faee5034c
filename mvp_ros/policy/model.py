"""`ChunkPolicyModel`: observation encoder + shared backbone + one head (mvp, flow, diffusion, mlp);
`update_ema`, the step of the exponential moving average of its weights that training keeps and
checkpoints store."""
from __future__ import annotations

import torch
from torch import nn

from . import baselines
from .config import PolicyConfig
from .mvp import mvp_loss, mvp_sample
from .networks import ChunkBackbone, ObservationEncoder
from .normalizer import ActionScaler, Normalization


class ChunkPolicyModel(nn.Module):
    """Works on batches of raw observations, each key shaped (B, frame_stack, *per_frame_shape).

    Actions are normalized chunks flattened to (B, horizon * action_dim); `unnormalize_chunk`
    turns samples back into (B, horizon, action_dim) in the data's units.
    """

    def __init__(self, config: PolicyConfig, normalization: Normalization):
        super().__init__()
        self.config = config
        self.obs_encoder = ObservationEncoder(config, normalization.obs_mean, normalization.obs_std)
        self.backbone = ChunkBackbone(config.chunk_dim, self.obs_encoder.output_dim, config)
        self.action_scaler = ActionScaler(normalization.action_min, normalization.action_max)
        if config.head == "diffusion":
            self.register_buffer("alpha_bars", baselines.cosine_alpha_bars(config.diffusion_train_steps),
                                 persistent=False)
            # a fixed list, so that tracing the sampler (torch.export, execution.py) sees constants
            self.diffusion_steps = baselines.diffusion_steps(config.diffusion_train_steps, config.diffusion_sampler,
                                                             config.ddim_steps)

    def loss(self, obs: dict[str, torch.Tensor], actions: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """actions: (B, horizon, action_dim) in data units."""
        target = self.action_scaler.normalize(actions).flatten(1)
        cond = self.obs_encoder(obs, generator)
        net, head = self.backbone, self.config.head
        if head == "mvp":
            return mvp_loss(net, cond, target, self.config, generator)
        if head == "flow":
            return baselines.flow_loss(net, cond, target, self.config, generator)
        if head == "diffusion":
            return baselines.diffusion_loss(net, cond, target, self.alpha_bars, generator)
        return baselines.regression_loss(net, cond, target)

    def sample_normalized(self, cond: torch.Tensor, noise: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """One chunk per row of `noise` (B, D), conditioned on encoded observations `cond` (B, C)."""
        net, config = self.backbone, self.config
        if config.head == "mvp":
            sample = mvp_sample(net, cond, noise, config.mvp_steps)
        elif config.head == "flow":
            sample = baselines.flow_sample(net, cond, noise, config.flow_steps)
        elif config.head == "diffusion":
            sample = baselines.diffusion_sample(net, cond, noise, self.alpha_bars, config.diffusion_sampler,
                                                self.diffusion_steps, generator)
        else:
            sample = baselines.regression_sample(net, cond, noise)
        return sample.clamp(-1.0, 1.0)

    def sample(self, obs: dict[str, torch.Tensor], num_candidates: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, num_candidates, horizon, action_dim) chunks in data units, all candidates in one batched call."""
        batch = next(iter(obs.values())).shape[0]
        device = next(iter(obs.values())).device
        noise = torch.randn(batch * num_candidates, self.config.chunk_dim, generator=generator, device=device)
        return self.sample_with_noise(obs, noise, num_candidates, generator)

    def sample_with_noise(self, obs: dict[str, torch.Tensor], noise: torch.Tensor, num_candidates: int = 1,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """`sample` from given starting noise (B * num_candidates, chunk_dim): a fixed-shape call that
        torch.compile and CUDA graphs can take whole (`generator` only for DDPM's per-step noise)."""
        cond = self.obs_encoder(obs)
        batch = cond.shape[0]
        if num_candidates > 1:
            cond = cond.repeat_interleave(num_candidates, dim=0)
        chunks = self.sample_normalized(cond, noise, generator)
        chunks = self.action_scaler.unnormalize(chunks.view(-1, self.config.horizon, self.config.action_dim))
        return chunks.view(batch, num_candidates, self.config.horizon, self.config.action_dim)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_parameter, parameter in zip(ema.parameters(), model.parameters()):
        ema_parameter.lerp_(parameter, 1.0 - decay)
