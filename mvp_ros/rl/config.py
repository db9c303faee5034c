"""`RLConfig`: the settings of `mvp train --algo mvp-rl` (the `rl:` mapping of a training config).

Defaults follow the reference setup of Q-chunking on Robomimic (docs/method.md): 2 critics
combined by their mean, 4x512 GELU MLPs with layer norm, gamma 0.99, tau 0.005, N = 16.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..policy.config import ConfigError
from ..policy.critic import CriticConfig

REWARD_MODES = ("sparse", "dataset")


@dataclass
class RLConfig:
    num_candidates: int = 16  # N of best-of-N, for acting and for the bootstrap action
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critic
    num_critics: int = 2
    critic_aggregate: str = "mean"  # how the ensemble's values combine into one Q
    critic_hidden_dim: int = 512
    critic_depth: int = 4
    critic_lr: float = 3e-4
    # sparse: -1 per step, 0 at success, success ends the episode (Robomimic setting of the paper);
    #         a dataset step is a success where its stored reward >= success_reward.
    # dataset: the stored rewards, and the stored dones end episodes.
    reward_mode: str = "sparse"
    success_reward: float = 1.0  # robosuite's reward at success, with or without shaping
    online_updates_per_step: int = 1  # gradient steps per environment step online
    compile: bool = True  # torch.compile the bootstrap and the critic loss (mvp_ros.rl.learner): once per run

    def __post_init__(self) -> None:
        if self.reward_mode not in REWARD_MODES:
            raise ConfigError(f"rl.reward_mode: {self.reward_mode!r} is not one of {', '.join(REWARD_MODES)}")
        self.critic_config()  # validates the critic settings
        for name in ("num_candidates", "online_updates_per_step"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"rl.{name}: must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"rl.gamma: must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"rl.tau: must be in (0, 1], got {self.tau}")
        if self.critic_lr <= 0:
            raise ConfigError(f"rl.critic_lr: must be > 0, got {self.critic_lr}")

    def critic_config(self) -> CriticConfig:
        return CriticConfig(num_critics=self.num_critics, hidden_dim=self.critic_hidden_dim, depth=self.critic_depth,
                            aggregate=self.critic_aggregate)

    @classmethod
    def from_dict(cls, data: dict | None) -> "RLConfig":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown rl setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)
