"""`PolicyConfig`: everything needed to rebuild a policy network, stored in a checkpoint's config.json."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

HEADS = ("mvp", "flow", "diffusion", "mlp")
LEGACY_IMAGE_ENCODER_WIDTHS = (32, 64, 128)


class ConfigError(ValueError):
    """A policy or training configuration that cannot work, with the field that is wrong."""


def is_image_shape(shape: tuple[int, ...] | list[int]) -> bool:
    """Images are stored (height, width, channels) uint8; every other observation is a low-dim vector."""
    return len(shape) == 3


@dataclass
class PolicyConfig:
    head: str
    action_dim: int
    horizon: int
    obs_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per frame, in data order
    frame_stack: int = 1
    # Backbone shared by every head, so comparisons between heads are honest.
    hidden_dim: int = 512
    depth: int = 4
    time_embed_dim: int = 16
    image_feature_dim: int = 64
    # Channels of the image encoder's stride-2 stages. (16, 32, 64) encodes two 84x84 cameras in
    # about 5 ms on one CPU thread, where (32, 64, 128) took 11.5 ms (`mvp bench`).
    image_encoder_widths: tuple[int, ...] = (16, 32, 64)
    # MVP (design.md section 1).
    ivc_weight: float = 1.0
    equal_time_fraction: float = 0.5
    time_logit_mean: float = -0.4
    time_logit_std: float = 1.0
    adaptive_weight_power: float = 0.5
    adaptive_weight_eps: float = 1e-3
    mvp_steps: int = 1
    # Baselines.
    flow_steps: int = 10
    diffusion_train_steps: int = 100
    diffusion_sampler: str = "ddpm"
    ddim_steps: int = 10

    def __post_init__(self) -> None:
        self.obs_shapes = {key: tuple(int(n) for n in shape) for key, shape in self.obs_shapes.items()}
        self.image_encoder_widths = tuple(int(n) for n in self.image_encoder_widths)
        if self.head not in HEADS:
            raise ConfigError(f"head: unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.diffusion_sampler not in ("ddpm", "ddim"):
            raise ConfigError(f"diffusion_sampler: {self.diffusion_sampler!r} is not 'ddpm' or 'ddim'")
        for name in ("action_dim", "horizon", "frame_stack", "hidden_dim", "depth", "mvp_steps",
                     "flow_steps", "diffusion_train_steps", "ddim_steps"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.time_embed_dim < 4 or self.time_embed_dim % 2:
            raise ConfigError(f"time_embed_dim: must be an even number >= 4, got {self.time_embed_dim}")
        if not self.obs_shapes:
            raise ConfigError("obs_shapes: a policy needs at least one observation key")
        for key, shape in self.obs_shapes.items():
            if len(shape) not in (1, 3):
                raise ConfigError(f"obs_shapes[{key!r}]: {shape} is neither a vector (D,) nor an image (H, W, C)")
        if not self.image_encoder_widths or any(width < 8 or width % 8 for width in self.image_encoder_widths):
            raise ConfigError(f"image_encoder_widths: needs one or more multiples of 8 (GroupNorm of 8 groups), "
                              f"got {list(self.image_encoder_widths)}")
        if not 0.0 <= self.equal_time_fraction <= 1.0:
            raise ConfigError(f"equal_time_fraction: {self.equal_time_fraction} is outside [0, 1]")
        if self.ivc_weight < 0:
            raise ConfigError(f"ivc_weight: must be >= 0, got {self.ivc_weight}")

    @property
    def chunk_dim(self) -> int:
        return self.horizon * self.action_dim

    @property
    def image_keys(self) -> list[str]:
        return [key for key, shape in self.obs_shapes.items() if is_image_shape(shape)]

    @property
    def lowdim_keys(self) -> list[str]:
        return [key for key, shape in self.obs_shapes.items() if not is_image_shape(shape)]

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["obs_shapes"] = {key: list(shape) for key, shape in self.obs_shapes.items()}
        data["image_encoder_widths"] = list(self.image_encoder_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown policy config field(s): {', '.join(unknown)}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in data and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ConfigError(f"policy config is missing field(s): {', '.join(missing)}")
        # config.json files written before image_encoder_widths existed had this encoder
        return cls(**{"image_encoder_widths": LEGACY_IMAGE_ENCODER_WIDTHS, **data})
