"""ROS-free offline and offline-to-online RL for the MVP policy: a critic ensemble over action
chunks, best-of-N acting, the chunked TD target, the replay buffer, the update (`MvpRlLearner`) and
the pieces of acting online; the loops of `mvp train --algo mvp-rl` that drive them are
mvp_ros.training.rl's.

The critic and best-of-N selection live with the policy (mvp_ros.policy.critic), since a deployed
policy selects with them: `Policy.load(directory, best_of=16)`.
"""
from .config import RLConfig
from ..policy.critic import ChunkCritic, CriticConfig, best_of_n, load_critic, save_critic
from .td import chunk_td_target

__all__ = ["ChunkCritic", "CriticConfig", "RLConfig", "best_of_n", "chunk_td_target", "load_critic", "save_critic"]
