"""ROS-free learning core: networks, MVP and baseline heads, normalization, checkpoints, `Policy`.

The names below are imported on first use, so a process that only reads a checkpoint's config.json
(`mvp_ros.policy.checkpoint_files`: the simulation bridge, `mvp demo`) does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "CheckpointError": "checkpoint_files", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "HEADS": "config", "ConfigError": "config", "PolicyConfig": "config",
    "ObservationError": "runtime", "Policy": "runtime",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
