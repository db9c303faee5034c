"""ROS-free learning core: networks, MVP and baseline heads, normalization, checkpoints, `Policy`."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import HEADS, ConfigError, PolicyConfig
from .policy import ObservationError, Policy

__all__ = ["HEADS", "CheckpointError", "ConfigError", "ObservationError", "Policy", "PolicyConfig",
           "load_checkpoint", "save_checkpoint"]
