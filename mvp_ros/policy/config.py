"""`PolicyConfig`: everything needed to rebuild a policy network, stored in a checkpoint's config.json."""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

HEADS = ("mvp", "flow", "diffusion", "mlp")
IMAGE_AUGMENTATIONS = ("none", "crop", "shift")
LEGACY_IMAGE_ENCODER_WIDTHS = (32, 64, 128)
# The sizes a config may ask for: far above any policy a robot computer runs, but finite, so a
# corrupted or hostile config.json is refused before anything is built from it. (name: (min, max))
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "action_dim": (1, 256),
    "horizon": (1, 1024),
    "frame_stack": (1, 64),
    "hidden_dim": (1, 16384),
    "depth": (1, 64),
    "time_embed_dim": (4, 1024),
    "image_feature_dim": (1, 4096),
    "mvp_steps": (1, 1000),
    "flow_steps": (1, 1000),
    "diffusion_train_steps": (1, 10000),
    "ddim_steps": (1, 10000),
    "image_augmentation_pixels": (1, 1024),
}
MAX_OBSERVATION_KEYS = 64
MAX_VECTOR_SIZE = 100_000
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_CHANNELS = 4
MAX_ENCODER_STAGES = 8
MAX_ENCODER_WIDTH = 2048
MAX_BLOCKS_PER_STAGE = 8
REAL_FIELDS = ("ivc_weight", "equal_time_fraction", "time_logit_mean", "time_logit_std", "adaptive_weight_power",
               "adaptive_weight_eps")


class ConfigError(ValueError):
    """A policy or training configuration that cannot work, with the field that is wrong."""


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _checked_integer(name: str, value, low: int, high: int) -> int:
    if not _is_integer(value) or not low <= value <= high:
        raise ConfigError(f"{name}: must be an integer from {low} to {high}, got {value!r}")
    return int(value)


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
    # Residual blocks after each stage's stride-2 convolution. None: one block, on the last stage,
    # whose maps are the smallest; for 84x84 cameras a block on every stage took twice the CPU
    # time of a training step (benchmarks/image_step_ablation.py).
    image_encoder_blocks: tuple[int, ...] | None = None
    # Training only, on every image: "crop" takes a random (H - 2p) x (W - 2p) window (Robomimic; the
    # centre one at inference), "shift" moves the image by up to p pixels, repeating its border
    # (DrQ; unchanged at inference). p = image_augmentation_pixels.
    image_augmentation: str = "none"
    image_augmentation_pixels: int = 4
    # MVP (docs/method.md).
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
        if self.head not in HEADS:
            raise ConfigError(f"head: unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.diffusion_sampler not in ("ddpm", "ddim"):
            raise ConfigError(f"diffusion_sampler: {self.diffusion_sampler!r} is not 'ddpm' or 'ddim'")
        for name, (low, high) in SIZE_LIMITS.items():
            setattr(self, name, _checked_integer(name, getattr(self, name), low, high))
        if self.time_embed_dim % 2:
            raise ConfigError(f"time_embed_dim: must be even, got {self.time_embed_dim}")
        if self.head == "diffusion" and self.diffusion_sampler == "ddim" and self.ddim_steps > self.diffusion_train_steps:
            raise ConfigError(f"ddim_steps: {self.ddim_steps} is more than diffusion_train_steps ({self.diffusion_train_steps})")
        self.obs_shapes = self._checked_obs_shapes()
        widths = list(self.image_encoder_widths)
        if not 1 <= len(widths) <= MAX_ENCODER_STAGES or any(
                not _is_integer(width) or not 8 <= width <= MAX_ENCODER_WIDTH or width % 8 for width in widths):
            raise ConfigError(f"image_encoder_widths: needs one to {MAX_ENCODER_STAGES} multiples of 8 (GroupNorm of 8"
                              f" groups) up to {MAX_ENCODER_WIDTH}, got {widths}")
        self.image_encoder_widths = tuple(int(width) for width in widths)
        self.image_encoder_blocks = self._checked_encoder_blocks()
        if self.image_augmentation not in IMAGE_AUGMENTATIONS:
            raise ConfigError(f"image_augmentation: {self.image_augmentation!r} is not one of "
                              f"{', '.join(IMAGE_AUGMENTATIONS)}")
        if self.image_augmentation == "crop":
            for key in self.image_keys:
                height, width, _ = self.obs_shapes[key]
                if min(height, width) <= 2 * self.image_augmentation_pixels:
                    raise ConfigError(f"image_augmentation_pixels: cropping {self.image_augmentation_pixels} pixels"
                                      f" from each side leaves nothing of {key!r} ({height}x{width})")
        for name in REAL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        if not 0.0 <= self.equal_time_fraction <= 1.0:
            raise ConfigError(f"equal_time_fraction: {self.equal_time_fraction} is outside [0, 1]")
        if self.ivc_weight < 0:
            raise ConfigError(f"ivc_weight: must be >= 0, got {self.ivc_weight}")
        for name in ("time_logit_std", "adaptive_weight_eps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")

    def _checked_encoder_blocks(self) -> tuple[int, ...]:
        stages = len(self.image_encoder_widths)
        if self.image_encoder_blocks is None:
            return (0,) * (stages - 1) + (1,)
        blocks = list(self.image_encoder_blocks)
        if len(blocks) != stages or any(not _is_integer(count) or not 0 <= count <= MAX_BLOCKS_PER_STAGE
                                         for count in blocks):
            raise ConfigError(f"image_encoder_blocks: needs one count from 0 to {MAX_BLOCKS_PER_STAGE} per stage of"
                              f" image_encoder_widths {list(self.image_encoder_widths)}, got {blocks}")
        return tuple(int(count) for count in blocks)

    def _checked_obs_shapes(self) -> dict[str, tuple[int, ...]]:
        if not self.obs_shapes:
            raise ConfigError("obs_shapes: a policy needs at least one observation key")
        if len(self.obs_shapes) > MAX_OBSERVATION_KEYS:
            raise ConfigError(f"obs_shapes: {len(self.obs_shapes)} observation keys, more than {MAX_OBSERVATION_KEYS}")
        checked = {}
        for key, shape in self.obs_shapes.items():
            if not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3) or not all(_is_integer(n) for n in shape):
                raise ConfigError(f"obs_shapes[{key!r}]: {shape!r} is neither a vector (D,) nor an image (H, W, C)")
            shape = list(shape)
            limits = [(1, MAX_VECTOR_SIZE)] if len(shape) == 1 else [(1, MAX_IMAGE_SIDE)] * 2 + [(1, MAX_IMAGE_CHANNELS)]
            if any(not low <= n <= high for n, (low, high) in zip(shape, limits)):
                bounds = ", ".join(f"{low} to {high}" for low, high in limits)
                raise ConfigError(f"obs_shapes[{key!r}]: {shape} is outside ({bounds})")
            checked[key] = tuple(int(n) for n in shape)
        return checked

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
        data["image_encoder_blocks"] = list(self.image_encoder_blocks)
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
        # config.json files written before these fields existed: the encoder they had, no augmentation
        data = {"image_encoder_widths": LEGACY_IMAGE_ENCODER_WIDTHS, **data}
        widths = data["image_encoder_widths"]
        legacy_blocks = [1] * len(widths) if isinstance(widths, (list, tuple)) else None
        return cls(**{"image_encoder_blocks": legacy_blocks, "image_augmentation": "none", **data})
