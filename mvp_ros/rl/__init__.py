"""ROS-free offline and offline-to-online RL for the MVP policy: a critic ensemble over action
chunks, best-of-N acting, the chunked TD target, the replay buffer, the update (`MvpRlLearner`) and
the pieces of acting online; the loops of `mvp train --algo mvp-rl` that drive them are
mvp_ros.training.rl's.

For evaluation with best-of-N on a checkpoint trained with --algo mvp-rl:

    model, info = load_checkpoint(directory)
    critic = load_critic(directory)
    chunks, q_values = best_of_n(model, critic, obs_batch, n=16)
"""
from .config import RLConfig
from .critic import ChunkCritic, CriticConfig, best_of_n, load_critic, save_critic
from .td import chunk_td_target

__all__ = ["ChunkCritic", "CriticConfig", "RLConfig", "best_of_n", "chunk_td_target", "load_critic", "save_critic"]
