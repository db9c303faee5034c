"""Soft Actor-Critic, the Gaussian baseline of online RL in Gymnasium tasks (mvp_ros.rl.gym_online), one
file read top to bottom in the manner of CleanRL's single-file agents. "Soft Actor-Critic Algorithms and
Applications" (arXiv 1812.05905); actions normalized to [-1, 1]^|A| by the task's bounds.

    actor        u = mu_theta(s) + sigma_theta(s) * eps,  eps ~ N(0, I),  a = tanh(u)
                 log pi(a|s) = sum_i [log N(u_i; mu_i, sigma_i^2) - log(1 - tanh(u_i)^2)]
    critic       y = r + gamma * (1 - d) * (min_j Qbar_j(s', a') - alpha * log pi(a'|s')),  a' ~ pi(.|s')
                 L_Q = sum_j mean_batch (Q_j(s, a) - y)^2                     (twin critics, j = 1, 2)
    actor loss   L_pi = mean_batch (alpha * log pi(a|s) - min_j Q_j(s, a)),  a ~ pi(.|s) reparameterized
    temperature  L_alpha = mean_batch (-log alpha * (log pi(a|s) + H_target)),  H_target = -|A|
    targets      phibar <- tau * phi + (1 - tau) * phibar,  tau = 0.005, after every critic step

The twin critics (`TwinCritic`) are the package's critic ensemble (mvp_ros.policy.critic) with two
members combined by their minimum; FPMD (mvp_ros.rl.fpmd) trains the same ones. The actor is the
package's MLP (mvp_ros.policy.networks.mlp) on the encoded observation. Its checkpoint is its own
pair of files, `sac_actor.safetensors` + `sac_actor.json`: `Policy` runs flow and MVP samplers, and
a tanh-Gaussian is neither.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..policy.checkpoint import CheckpointError
from ..policy.config import PolicyConfig
from ..policy.critic import ChunkCritic, CriticConfig
from ..policy.model import update_ema
from ..policy.networks import ObservationEncoder, mlp
from ..policy.normalizer import ActionScaler, Normalization
from .replay import ChunkBatch
from .td import chunk_td_target

ACTOR_FORMAT = "mvp_ros.sac_actor"
ACTOR_WEIGHTS = "sac_actor.safetensors"
ACTOR_JSON = "sac_actor.json"
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class ActorCriticConfig:
    """SAC's settings (the paper's), which FPMD's extend: 3x256 networks, one learning rate, tau 0.005."""

    hidden_dim: int = 256
    depth: int = 3
    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    initial_alpha: float = 1.0


@dataclass
class AgentState:
    """What an agent needs to continue training (mvp_ros.rl.gym_online's --resume): its networks, optimizers,
    loose tensors (the temperature) and counters (JSON numbers)."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    tensors: dict[str, torch.Tensor]
    counters: dict = field(default_factory=dict)


class TwinCritic:
    """Q_1, Q_2 and their targets Qbar_1, Qbar_2, the optimizer, the TD step and the Polyak step."""

    def __init__(self, policy_config: PolicyConfig, normalization: Normalization, hidden_dim: int, depth: int,
                 lr: float, device: torch.device, **settings):
        """settings: CriticConfig fields beyond the twin minimum's (MFPO's categorical members, its mean)."""
        config = CriticConfig(**({"num_critics": 2, "hidden_dim": hidden_dim, "depth": depth, "aggregate": "min"}
                                 | settings))
        self.critic = ChunkCritic(policy_config, normalization, config).to(device)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr)

    def step(self, batch: ChunkBatch, target: torch.Tensor) -> dict[str, float]:
        """One gradient step on the batch's transitions: L_Q = sum_j mean (Q_j(s, a) - y)^2 towards y (B,), or,
        for categorical members, sum_j mean cross-entropy of Q_j's distribution against the target's (B, atoms)."""
        outputs = self.critic.outputs(batch.obs, batch.actions[:, None])[:, :, 0]  # (K, B, atoms)
        q_values = self.critic.q_of(outputs)
        if target.dim() == 1:
            loss = (q_values - target).pow(2).mean(dim=1).sum()
        else:
            loss = -(target * torch.log_softmax(outputs, dim=-1)).sum(dim=-1).mean(dim=1).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss_critic": loss.item(), "q_mean": q_values.mean().item()}

    def update_target(self, tau: float) -> None:
        update_ema(self.target, self.critic, 1.0 - tau)


class TanhGaussianActor(nn.Module):
    def __init__(self, policy_config: PolicyConfig, normalization: Normalization, hidden_dim: int, depth: int):
        super().__init__()
        self.obs_encoder = ObservationEncoder(policy_config, normalization.obs_mean, normalization.obs_std)
        self.net = mlp(self.obs_encoder.output_dim, hidden_dim, depth, 2 * policy_config.action_dim)
        self.action_scaler = ActionScaler(normalization.action_min, normalization.action_max)

    def forward(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(a in [-1, 1]^|A| (B, |A|), log pi(a|s) (B,)); deterministic: a = tanh(mu), for evaluation."""
        mu, raw_log_std = self.net(self.obs_encoder(obs)).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1)
        eps = torch.zeros_like(mu) if deterministic else torch.randn(mu.shape, generator=generator, device=mu.device)
        u = mu + log_std.exp() * eps
        gaussian = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=-1)
        return torch.tanh(u), gaussian - tanh_log_det(u).sum(dim=-1)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None,
            deterministic: bool = False) -> torch.Tensor:
        """Actions (B, |A|) in the task's units."""
        return self.action_scaler.unnormalize(self(obs, generator, deterministic)[0])


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), exact and finite where tanh(u) rounds to +-1."""
    return 2 * (math.log(2) - u - nn.functional.softplus(-2 * u))


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """L_alpha = mean (-log alpha * (log pi(a|s) + H_target)); lowers alpha while the entropy is above target."""
    return (-log_alpha * (log_prob.detach() + target_entropy)).mean()


def soft_td_target(batch: ChunkBatch, next_q: torch.Tensor, next_log_prob: torch.Tensor, alpha: float,
                   gamma: float) -> torch.Tensor:
    """y = r + gamma * (1 - d) * (min_j Qbar_j(s', a') - alpha * log pi(a'|s')), next_q the twin minimum (B,)."""
    return chunk_td_target(batch.rewards, batch.step_mask, batch.bootstrap, next_q - alpha * next_log_prob, gamma)


class SacAgent:
    def __init__(self, policy_config: PolicyConfig, normalization: Normalization, config: ActorCriticConfig,
                 device: torch.device):
        self.config = config
        self.policy_config, self.normalization = policy_config, normalization
        self.actor = TanhGaussianActor(policy_config, normalization, config.hidden_dim, config.depth).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critics = TwinCritic(policy_config, normalization, config.hidden_dim, config.depth, config.critic_lr,
                                  device)
        self.log_alpha = torch.tensor(math.log(config.initial_alpha), device=device, requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)
        self.target_entropy = -float(policy_config.action_dim)

    @property
    def alpha(self) -> float:
        return self.log_alpha.exp().item()

    def q_min(self, critic: ChunkCritic, obs: dict[str, torch.Tensor], normalized_actions: torch.Tensor) -> torch.Tensor:
        """min_j Q_j(s, a) (B,) of actions in [-1, 1]^|A| (B, |A|)."""
        actions = self.actor.action_scaler.unnormalize(normalized_actions)
        return critic.value(obs, actions[:, None, None])[:, 0]

    def update(self, batch: ChunkBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        alpha = self.alpha
        with torch.no_grad():
            next_actions, next_log_prob = self.actor(batch.next_obs, generator)
            next_q = self.q_min(self.critics.target, batch.next_obs, next_actions)
            target = soft_td_target(batch, next_q, next_log_prob, alpha, self.config.gamma)
        metrics = self.critics.step(batch, target)

        actions, log_prob = self.actor(batch.obs, generator)
        actor_loss = (alpha * log_prob - self.q_min(self.critics.critic, batch.obs, actions)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        alpha_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        self.critics.update_target(self.config.tau)
        return {**metrics, "loss_actor": actor_loss.item(), "loss_alpha": alpha_loss.item(), "alpha": alpha,
                "entropy": -log_prob.mean().item()}

    def act(self, obs: dict[str, torch.Tensor], explore: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.actor.act(obs, generator, deterministic=not explore)

    def state(self) -> AgentState:
        return AgentState(modules={"actor": self.actor, "critic": self.critics.critic, "critic_target": self.critics.target},
                          optimizers={"actor": self.actor_optimizer, "critic": self.critics.optimizer,
                                      "alpha": self.alpha_optimizer},
                          tensors={"log_alpha": self.log_alpha})

    def restore_counters(self, counters: dict) -> None:
        """SAC counts nothing."""

    def save(self, directory: str | Path, training: dict) -> Path:
        """The actor as sac_actor.safetensors + sac_actor.json (its sizes, the task's statistics, the run)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / ACTOR_WEIGHTS
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in self.actor.state_dict().items()},
                  str(weights), metadata={"format": ACTOR_FORMAT})
        document = {"format": ACTOR_FORMAT, "policy": self.policy_config.to_dict(),
                    "normalization": self.normalization.to_dict(), "hidden_dim": self.config.hidden_dim,
                    "depth": self.config.depth, "training": training,
                    "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
        (directory / ACTOR_JSON).write_text(json.dumps(document, indent=2))
        return directory


def load_sac_actor(directory: str | Path, device: str | torch.device = "cpu") -> TanhGaussianActor:
    """The actor `SacAgent.save` wrote in `directory`, checked against its recorded SHA-256."""
    directory = Path(directory)
    json_path, weights = directory / ACTOR_JSON, directory / ACTOR_WEIGHTS
    for path in (json_path, weights):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: {directory} holds no SAC actor (mvp train --algo sac)")
    try:
        document = json.loads(json_path.read_text())
        if document.get("format") != ACTOR_FORMAT:
            raise CheckpointError(f"{json_path} is not a {ACTOR_FORMAT} file")
        policy_config = PolicyConfig.from_dict(document["policy"])
        normalization = Normalization.from_dict(document["normalization"])
        actor = TanhGaussianActor(policy_config, normalization, int(document["hidden_dim"]), int(document["depth"]))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{json_path} is not a valid SAC actor description ({error!r})") from None
    if hashlib.sha256(weights.read_bytes()).hexdigest() != document.get("weights_sha256"):
        raise CheckpointError(f"{weights} does not match the SHA-256 in {json_path}: corrupted or swapped")
    try:
        actor.load_state_dict(load_file(str(weights), device="cpu"))
    except RuntimeError as error:
        raise CheckpointError(f"{weights} does not fit the actor in {json_path}: {error}") from None
    return actor.to(device).eval()
