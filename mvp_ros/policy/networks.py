"""Networks shared by every head: observation encoders and the conditional chunk backbone.

The backbone maps (x, cond, t, r) -> a vector the size of a flattened action chunk. Each head
gives x, t and r its own meaning (MVP: the mean velocity from t to r; flow: the instantaneous
velocity, r = t; diffusion: the noise at step t; MLP regression: x = 0, t = r = 0), so all four
heads are compared on exactly the same network.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .augment import augment_images, inference_images
from .config import PolicyConfig


class TimeEmbedding(nn.Module):
    """Sinusoidal features of a scalar time in [0, 1], smooth so the JVP through t is well defined."""

    def __init__(self, dim: int, max_frequency: float = 4.0):
        super().__init__()
        half = dim // 2
        frequencies = torch.exp(math.log(max_frequency) * torch.arange(half, dtype=torch.float32) / (half - 1))
        # [sin(f t), cos(f t)] as one sin over [f, f] with phases [0, pi/2]: two kernels rather than four
        self.register_buffer("frequencies", torch.cat([frequencies, frequencies])[None, :], persistent=False)
        self.register_buffer("phases", torch.cat([torch.zeros(half), torch.full((half,), math.pi / 2)])[None, :],
                             persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(torch.addcmul(self.phases, t[:, None], self.frequencies))


def mlp(in_dim: int, hidden_dim: int, depth: int, out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.GELU()]
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


class ChunkBackbone(nn.Module):
    """depth x hidden_dim GELU MLP over [x, cond, emb(t), emb(r - t)]."""

    def __init__(self, chunk_dim: int, cond_dim: int, config: PolicyConfig):
        super().__init__()
        self.time_embedding = TimeEmbedding(config.time_embed_dim)
        self.interval_embedding = TimeEmbedding(config.time_embed_dim)
        self.net = mlp(chunk_dim + cond_dim + 2 * config.time_embed_dim, config.hidden_dim, config.depth, chunk_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        features = [x, cond, self.time_embedding(t), self.interval_embedding(r - t)]
        return self.net(torch.cat(features, dim=-1))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels),
        )
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x + self.body(x))


class ImageEncoder(nn.Module):
    """Small ResNet-style encoder: stride-2 stages, each followed by its residual blocks, then spatial softmax.

    GroupNorm rather than BatchNorm, so batch-1 inference behaves like training.
    """

    def __init__(self, in_channels: int, feature_dim: int, widths: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        stages: list[nn.Module] = []
        channels = in_channels
        for width, count in zip(widths, blocks):
            stages += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.GELU()]
            stages += [ResidualBlock(width) for _ in range(count)]
            channels = width
        self.stages = nn.Sequential(*stages)
        self.keypoints = nn.Conv2d(channels, 32, 1)
        self.project = nn.Linear(2 * 32, feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) float in [0, 1] -> (B, feature_dim)."""
        maps = self.keypoints(self.stages(images))
        batch, channels, height, width = maps.shape
        attention = torch.softmax(maps.flatten(2), dim=-1).view(batch, channels, height, width)
        ys = torch.linspace(-1, 1, height, device=images.device, dtype=images.dtype)
        xs = torch.linspace(-1, 1, width, device=images.device, dtype=images.dtype)
        expected_x = (attention.sum(dim=2) * xs).sum(dim=-1)
        expected_y = (attention.sum(dim=3) * ys).sum(dim=-1)
        return self.project(torch.cat([expected_x, expected_y], dim=-1))


class ObservationEncoder(nn.Module):
    """Raw observations (low-dim float, images uint8 HWC, each with a frame axis) -> one vector.

    Low-dim keys are standardized with the checkpoint's statistics and concatenated; each camera
    has its own image encoder over its stacked frames, which are augmented in training mode and
    given the matching deterministic transform in eval mode (augment.py).
    """

    def __init__(self, config: PolicyConfig, obs_mean: dict[str, list[float]], obs_std: dict[str, list[float]]):
        super().__init__()
        self.lowdim_keys = config.lowdim_keys
        self.image_keys = config.image_keys
        self.augmentation, self.augmentation_pixels = config.image_augmentation, config.image_augmentation_pixels
        # (x - mean) / std of every low-dim key and frame at once, as x * scale + shift over the keys
        # concatenated: one kernel however many keys (per-op overhead dominates at batch 1)
        scale, shift = [], []
        for key in self.lowdim_keys:
            mean = torch.tensor(obs_mean[key], dtype=torch.float32)
            std = torch.tensor(obs_std[key], dtype=torch.float32)
            scale.append((1 / std).repeat(config.frame_stack))  # flatten(1) of (F, D) is frame after frame
            shift.append((-mean / std).repeat(config.frame_stack))
        self.register_buffer("lowdim_scale", torch.cat(scale) if scale else torch.zeros(0), persistent=False)
        self.register_buffer("lowdim_shift", torch.cat(shift) if shift else torch.zeros(0), persistent=False)
        self.image_encoders = nn.ModuleDict({
            key: ImageEncoder(config.obs_shapes[key][2] * config.frame_stack, config.image_feature_dim,
                              config.image_encoder_widths, config.image_encoder_blocks)
            for key in self.image_keys
        })
        lowdim_dim = sum(config.obs_shapes[key][0] for key in self.lowdim_keys) * config.frame_stack
        self.output_dim = lowdim_dim + config.image_feature_dim * len(self.image_keys)

    def forward(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """`generator` draws the augmentation's offsets in training mode."""
        features = []
        if self.lowdim_keys:
            lowdim = torch.cat([obs[key].flatten(1) for key in self.lowdim_keys], dim=-1).float()
            features.append(torch.addcmul(self.lowdim_shift, lowdim, self.lowdim_scale))
        for key in self.image_keys:
            frames = obs[key]  # (B, F, H, W, C) uint8
            batch, stack, height, width, channels = frames.shape
            images = frames.permute(0, 2, 3, 1, 4).reshape(batch, height, width, stack * channels)
            if self.training:
                images = augment_images(images, self.augmentation, self.augmentation_pixels, generator)
            else:
                images = inference_images(images, self.augmentation, self.augmentation_pixels)
            # (B, H, W, K) seen as (B, K, H, W) is channels-last memory, the layout these convolutions
            # run fastest in; converted to float once, in that layout
            features.append(self.image_encoders[key](images.permute(0, 3, 1, 2).float() / 255.0))
        return torch.cat(features, dim=-1)
