"""Critic ensemble Q_phi(s, A) over action chunks, best-of-N selection, and the critic's files.

MVP acts by generate-and-select: N one-step candidate chunks from one batched sampler call, the
critic's argmax executed. The critic is trained by `mvp train --algo mvp-rl` (mvp_ros.rl) and
deployed beside the policy (`Policy.load(directory, best_of=N)`), so it lives with the policy.

The critic has its own observation encoder, built like the policy's (low-dim keys standardized
with the checkpoint's statistics, one small CNN per camera). The policy is trained only by the
MVP loss, so the TD loss must not reach its encoder either; for low-dim observations the encoder
has no parameters at all. Action chunks enter normalized to [-1, 1] by the policy's statistics and
flattened. The ensemble members share the encoder; each is a depth x hidden GELU MLP with layer
norm, and their values combine into one Q by their mean (or min). A member either outputs Q itself
(`atoms` = 1) or is categorical, as MFPO's authors train theirs: logits over `atoms` fixed values
evenly spaced on [value_min, value_max], Q being the expectation under their softmax. The members
run as one batched module (`ChunkCritic`), which is what makes scoring 16 candidates per state cheap.

Files, next to the policy checkpoint (`model.safetensors` + `config.json`) in the same directory:
`critic.safetensors` (weights) and `critic.json` (CriticConfig, SHA-256 of the weights).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint import CheckpointError, read_checkpoint_info
from .config import ConfigError, PolicyConfig
from .model import ChunkPolicyModel
from .networks import ObservationEncoder
from .normalizer import ActionScaler, Normalization

CRITIC_FORMAT = "mvp_ros.critic"
# 2: the ensemble's weights stacked per layer, the first layer split into observation and chunk parts;
# version 1 held one nn.Sequential per member.
CRITIC_FORMAT_VERSION = 2
CRITIC_WEIGHTS = "critic.safetensors"
CRITIC_JSON = "critic.json"


@dataclass
class CriticConfig:
    num_critics: int = 2
    hidden_dim: int = 512
    depth: int = 4
    aggregate: str = "mean"  # "mean" or "min" over the ensemble
    atoms: int = 1  # 1: each member outputs Q; more: a categorical distribution on that many values
    value_min: float = -1600.0  # the categorical support's ends (atoms > 1)
    value_max: float = 1600.0

    def __post_init__(self) -> None:
        if self.aggregate not in ("mean", "min"):
            raise ConfigError(f"critic aggregate (rl.critic_aggregate): {self.aggregate!r} is not 'mean' or 'min'")
        for name in ("num_critics", "hidden_dim", "depth", "atoms"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"critic {name}: must be >= 1, got {getattr(self, name)}")
        if self.atoms > 1 and not self.value_min < self.value_max:
            raise ConfigError(f"critic value_min {self.value_min} must be below value_max {self.value_max}")


def linear_init(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    """nn.Linear's default initialization for a layer with `fan_in` inputs: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / fan_in ** 0.5
    return torch.empty(shape).uniform_(-bound, bound)


class ChunkCritic(nn.Module):
    """The ensemble as one module: each layer's weights of all K members stacked, so a layer of the
    whole ensemble is one batched matrix multiplication (K members x rows) rather than K modules.

    Member k is the MLP  Linear([obs features, chunk]) -> (LayerNorm -> GELU -> Linear) ... -> 1,
    its first Linear split into an observation part and a chunk part (the same function): the
    observation part runs once per state, not once per candidate chunk of that state.
    """

    def __init__(self, policy_config: PolicyConfig, normalization: Normalization, config: CriticConfig):
        super().__init__()
        self.policy_config = policy_config
        self.config = config
        self.obs_encoder = ObservationEncoder(policy_config, normalization.obs_mean, normalization.obs_std)
        self.action_scaler = ActionScaler(normalization.action_min, normalization.action_max)
        members, width, depth = config.num_critics, config.hidden_dim, config.depth
        obs_dim, chunk_dim = self.obs_encoder.output_dim, policy_config.chunk_dim
        # Weights stored (in, out) per member, as torch.baddbmm takes them; initialized as nn.Linear
        # initializes a layer of that fan-in.
        self.first_obs_weight = nn.Parameter(linear_init((members, obs_dim, width), obs_dim + chunk_dim))
        self.first_chunk_weight = nn.Parameter(linear_init((members, chunk_dim, width), obs_dim + chunk_dim))
        self.first_bias = nn.Parameter(linear_init((members, width), obs_dim + chunk_dim))
        self.hidden_weight = nn.Parameter(linear_init((depth - 1, members, width, width), width))
        self.hidden_bias = nn.Parameter(linear_init((depth - 1, members, width), width))
        self.norm_weight = nn.Parameter(torch.ones(depth, members, width))
        self.norm_bias = nn.Parameter(torch.zeros(depth, members, width))
        self.output_weight = nn.Parameter(linear_init((members, width, config.atoms), width))
        self.output_bias = nn.Parameter(linear_init((members, config.atoms), width))

    @property
    def support(self) -> torch.Tensor:
        """The values a categorical member's atoms stand for, (atoms,)."""
        return torch.linspace(self.config.value_min, self.config.value_max, self.config.atoms,
                              device=self.output_bias.device)

    def forward(self, obs: dict[str, torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
        """Every member's Q of every candidate: chunks (B, N, horizon, action_dim) in data units -> (K, B, N)."""
        return self.q_of(self.outputs(obs, chunks))

    def q_of(self, outputs: torch.Tensor) -> torch.Tensor:
        """Q from the output layer (..., atoms) -> (...): the output itself, or a categorical member's expectation."""
        if self.config.atoms == 1:
            return outputs[..., 0]
        return (torch.softmax(outputs, dim=-1) * self.support).sum(dim=-1)

    def outputs(self, obs: dict[str, torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
        """Every member's output layer (Q, or the logits of a categorical member): (K, B, N, atoms)."""
        batch, candidates = chunks.shape[:2]
        members, width = self.first_bias.shape
        features = self.obs_encoder(obs)
        actions = self.action_scaler.normalize(chunks).reshape(1, batch * candidates, -1)
        per_state = torch.baddbmm(self.first_bias[:, None], features.expand(members, -1, -1), self.first_obs_weight)
        per_chunk = torch.matmul(actions, self.first_chunk_weight).view(members, batch, candidates, width)
        x = (per_chunk + per_state[:, :, None]).view(members, batch * candidates, width)
        for layer in range(self.config.depth):
            if layer:
                x = torch.baddbmm(self.hidden_bias[layer - 1, :, None], x, self.hidden_weight[layer - 1])
            x = torch.addcmul(self.norm_bias[layer, :, None], nn.functional.layer_norm(x, (width,)),
                              self.norm_weight[layer, :, None])
            x = nn.functional.gelu(x)
        return torch.baddbmm(self.output_bias[:, None], x, self.output_weight).view(members, batch, candidates, -1)

    def value(self, obs: dict[str, torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
        """The ensemble's combined Q: chunks (B, N, horizon, action_dim) -> (B, N)."""
        q_values = self(obs, chunks)
        return q_values.mean(dim=0) if self.config.aggregate == "mean" else q_values.min(dim=0).values


class BestOfN(nn.Module):
    """Generate and select as one fixed-shape call, with the policy model's sampling signature, so
    every execution mode (execution.py) runs the whole select step: N candidates per observation
    from one batched sampler call, scored by the critic, the argmax kept."""

    def __init__(self, model: ChunkPolicyModel, critic: ChunkCritic):
        super().__init__()
        self.model, self.critic = model, critic
        self.config = model.config

    def sample_with_noise(self, obs: dict[str, torch.Tensor], noise: torch.Tensor, num_candidates: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """noise (B * N, chunk_dim) -> the best of N chunks (B, 1, horizon, action_dim), data units."""
        return self.select(obs, self.model.sample_with_noise(obs, noise, num_candidates, generator))[0].unsqueeze(1)

    def select(self, obs: dict[str, torch.Tensor], candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """candidates (B, N, horizon, action_dim) -> (the argmax chunks (B, horizon, action_dim), their Q (B,))."""
        values = self.critic.value(obs, candidates)
        best = values.argmax(dim=-1)
        rows = torch.arange(candidates.shape[0], device=candidates.device)
        return candidates[rows, best], values[rows, best]


@torch.no_grad()
def best_of_n(policy_model: ChunkPolicyModel, critic: ChunkCritic, obs: dict[str, torch.Tensor], n: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """N one-step candidates per observation from ONE batched sampler call, the critic's argmax kept.

    obs: {key: (B, frame_stack, ...)} -> (chunks (B, horizon, action_dim) in data units, their Q (B,)).
    """
    return BestOfN(policy_model, critic).select(obs, policy_model.sample(obs, n, generator))


def save_critic(directory: str | Path, critic: ChunkCritic) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / CRITIC_WEIGHTS
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in critic.state_dict().items()},
              str(weights), metadata={"format": CRITIC_FORMAT})
    document = {"format": CRITIC_FORMAT, "format_version": CRITIC_FORMAT_VERSION,
                "critic": dataclasses.asdict(critic.config),
                "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    (directory / CRITIC_JSON).write_text(json.dumps(document, indent=2))
    return weights


def load_critic(directory: str | Path, device: str | torch.device = "cpu") -> ChunkCritic:
    """The critic saved next to a policy checkpoint; the policy's config.json gives shapes and statistics."""
    info = read_checkpoint_info(directory)
    config_path, weights = info.directory / CRITIC_JSON, info.directory / CRITIC_WEIGHTS
    for path in (config_path, weights):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the checkpoint has no critic (was it trained with --algo mvp-rl?)")
    try:
        document = json.loads(config_path.read_text())
        if document.get("format") != CRITIC_FORMAT:
            raise CheckpointError(f"{config_path} is not a {CRITIC_FORMAT} file")
        if document.get("format_version") != CRITIC_FORMAT_VERSION:
            raise CheckpointError(f"{config_path} holds a version-{document.get('format_version')} critic; this "
                                  f"version of mvp_ros reads version {CRITIC_FORMAT_VERSION} (the ensemble's weights "
                                  "stacked per layer): train the critic again with --algo mvp-rl")
        config = CriticConfig(**document["critic"])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{config_path} is not a valid critic description ({error!r})") from None
    if hashlib.sha256(weights.read_bytes()).hexdigest() != document.get("weights_sha256"):
        raise CheckpointError(f"{weights} does not match the SHA-256 in {config_path}: corrupted or swapped")
    critic = ChunkCritic(info.config, info.normalization, config)
    try:
        critic.load_state_dict(load_file(str(weights), device="cpu"))
    except (SafetensorError, RuntimeError) as error:
        raise CheckpointError(f"{weights} does not fit the critic in {config_path} and the policy in "
                              f"{info.directory / 'config.json'}: {error}") from None
    return critic.to(device).eval()
