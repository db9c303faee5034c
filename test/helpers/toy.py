"""A conditional multimodal toy task for checking that a head keeps every mode of an action distribution.

An observation o in [-1, 1] comes with a 2-D action drawn from one of K equally likely modes
whose centres move with o:

    a = centre_k + (0, slope * o) + noise_std * N(0, I),   centre_k = radius * (cos(2 pi k / K), sin(2 pi k / K))

With two modes the centres are (+radius, 0) and (-radius, 0): a regressor that averages them
answers near (0, slope * o), right between the modes. Metrics on samples for given observations:
the share near a mode, the share between modes, the share of each mode, and a sliced
Wasserstein distance of (o, a) to fresh data. The path's exact marginal velocity is known in
closed form (a Gaussian mixture), so learned fields can also be compared with the exact one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mvp_ros.policy.config import PolicyConfig
from mvp_ros.policy.model import ChunkPolicyModel
from mvp_ros.policy.normalizer import Normalization

OBS_KEY = "o"


@dataclass(frozen=True)
class ToyTask:
    num_modes: int = 2
    radius: float = 0.7
    slope: float = 0.5
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        if self.num_modes < 2:
            raise ValueError(f"num_modes: a multimodal toy needs at least 2 modes, got {self.num_modes}")

    def mode_centres(self, obs: torch.Tensor) -> torch.Tensor:
        """(B,) observations -> (B, K, 2) centres of the modes."""
        angles = 2 * math.pi * torch.arange(self.num_modes, dtype=obs.dtype) / self.num_modes
        centres = self.radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
        shift = torch.stack([torch.zeros_like(obs), self.slope * obs], dim=-1)
        return centres[None] + shift[:, None]

    @property
    def mode_gap(self) -> float:
        """Distance between neighbouring mode centres."""
        return 2 * self.radius * math.sin(math.pi / self.num_modes)

    @property
    def near_radius(self) -> float:
        """A sample within 3 noise standard deviations of a centre counts as on that mode."""
        return 3 * self.noise_std

    @property
    def between_radius(self) -> float:
        """A sample farther than a quarter of the mode gap from every centre counts as between modes."""
        return self.mode_gap / 4

    def sample_obs(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return 2 * torch.rand(batch, generator=generator) - 1

    def sample_actions(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) observations -> (B, 2) actions, each from a uniformly drawn mode."""
        modes = torch.randint(0, self.num_modes, obs.shape, generator=generator)
        centres = self.mode_centres(obs)[torch.arange(obs.shape[0]), modes]
        return centres + self.noise_std * torch.randn(centres.shape, generator=generator)

    def sample_batch(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(obs (B,), actions (B, 2)) of fresh data."""
        obs = self.sample_obs(batch, generator)
        return obs, self.sample_actions(obs, generator)

    def marginal_velocity(self, obs: torch.Tensor, z: torch.Tensor, t: torch.Tensor, center: torch.Tensor,
                          half_range: torch.Tensor) -> torch.Tensor:
        """The exact v(z, t | o) = E[a - eps | a_t = z] in actions normalized as (a - center) / half_range.

        Given mode k the normalized action is Gaussian, so the path's marginal is N(t m_k, sigma_t^2)
        with sigma_t^2 = (1 - t)^2 + t^2 s^2 and the velocity is affine in z; v mixes the modes'
        velocities by their posterior weights at z.
        """
        means = (self.mode_centres(obs) - center) / half_range  # (B, K, 2)
        spread = self.noise_std / half_range
        t = t[:, None, None]
        sigma = torch.sqrt((1 - t) ** 2 + t**2 * spread**2)
        sigma_rate = (-(1 - t) + t * spread**2) / sigma
        offset = z[:, None, :] - t * means
        weights = torch.softmax(-0.5 * (offset / sigma).pow(2).sum(dim=-1), dim=1)  # sigma is the same for every k
        velocities = means + sigma_rate * offset / sigma
        return (weights[..., None] * velocities).sum(dim=1)


def exact_flow(task: ToyTask, obs: torch.Tensor, noise: torch.Tensor, center: torch.Tensor, half_range: torch.Tensor,
               steps: int = 50) -> torch.Tensor:
    """Where the exact marginal velocity carries noise (B, 2) from t = 0 to t = 1 (RK4), normalized units."""
    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return task.marginal_velocity(obs, z, t, center, half_range)

    z, dt = noise, 1.0 / steps
    for i in range(steps):
        t = torch.full((z.shape[0],), i * dt, dtype=z.dtype)
        k1 = velocity(z, t)
        k2 = velocity(z + dt / 2 * k1, t + dt / 2)
        k3 = velocity(z + dt / 2 * k2, t + dt / 2)
        k4 = velocity(z + dt * k3, t + dt)
        z = z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


def model_inputs(obs: torch.Tensor, actions: torch.Tensor | None = None):
    """Toy tensors in the layout `ChunkPolicyModel` takes: obs (B, 1 frame, 1), actions (B, horizon 1, 2)."""
    batch_obs = {OBS_KEY: obs[:, None, None]}
    return batch_obs if actions is None else (batch_obs, actions[:, None, :])


def toy_normalization(task: ToyTask, samples: int = 20_000, seed: int = 0) -> Normalization:
    """Statistics from a large draw of the task's data, as training on a dataset would compute them."""
    obs, actions = task.sample_batch(samples, torch.Generator().manual_seed(seed))
    return Normalization.from_data(actions.double().numpy(), {OBS_KEY: obs[:, None].double().numpy()})


def toy_config(head: str, **overrides) -> PolicyConfig:
    settings = dict(head=head, action_dim=2, horizon=1, obs_shapes={OBS_KEY: (1,)}, hidden_dim=256, depth=4)
    settings.update(overrides)
    return PolicyConfig(**settings)


def train_toy(head: str, steps: int, seed: int, task: ToyTask = ToyTask(), batch_size: int = 256,
              learning_rate: float = 1e-3, **policy_overrides) -> ChunkPolicyModel:
    """A ChunkPolicyModel of `head` trained with Adam on fresh toy batches; everything seeded by `seed`."""
    torch.manual_seed(seed)
    model = ChunkPolicyModel(toy_config(head, **policy_overrides), toy_normalization(task))
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    # Cosine decay to zero: the last steps settle instead of jittering around the solution.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    data_generator = torch.Generator().manual_seed(seed)
    noise_generator = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(steps):
        obs, actions = model_inputs(*task.sample_batch(batch_size, data_generator))
        loss, _ = model.loss(obs, actions, noise_generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def sample_toy(model: ChunkPolicyModel, obs: torch.Tensor, seed: int) -> torch.Tensor:
    """One sampled action (B, 2) per observation."""
    chunks = model.sample(model_inputs(obs), 1, torch.Generator().manual_seed(seed))
    return chunks[:, 0, 0, :]


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 128, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two equally sized point sets (N, D).

    W1 rather than W2: a few samples matched across the gap between modes (the counts per mode
    differ by chance) would dominate a squared distance.
    """
    directions = torch.randn(x.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    directions = directions / directions.norm(dim=0, keepdim=True)
    x_sorted = (x @ directions).sort(dim=0).values
    y_sorted = (y @ directions).sort(dim=0).values
    return (x_sorted - y_sorted).abs().mean().item()


def mode_metrics(task: ToyTask, obs: torch.Tensor, actions: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Where sampled actions (B, 2) for observations (B,) fall relative to the task's modes.

    near_mode: share within `near_radius` of a centre; between_modes: share farther than
    `between_radius` from every centre; mode_k: share of all samples near mode k;
    balance: the least visited mode's share of the near-mode samples (1/K when balanced);
    sliced_wasserstein: distance of (o, a) to as many fresh data pairs for the same o.
    """
    distances = (actions[:, None, :] - task.mode_centres(obs)).norm(dim=-1)
    nearest_distance, nearest_mode = distances.min(dim=1)
    near = nearest_distance < task.near_radius
    metrics = {
        "near_mode": near.float().mean().item(),
        "between_modes": (nearest_distance > task.between_radius).float().mean().item(),
    }
    counts = torch.bincount(nearest_mode[near], minlength=task.num_modes).float()
    for mode, count in enumerate(counts.tolist()):
        metrics[f"mode_{mode}"] = count / len(obs)
    metrics["balance"] = (counts.min() / counts.sum()).item() if counts.sum() > 0 else 0.0
    data_actions = task.sample_actions(obs, torch.Generator().manual_seed(seed))
    metrics["sliced_wasserstein"] = sliced_wasserstein(torch.cat([obs[:, None], actions], dim=1),
                                                       torch.cat([obs[:, None], data_actions], dim=1), seed=seed)
    return metrics


def evaluate_toy(model: ChunkPolicyModel, task: ToyTask = ToyTask(), samples: int = 2000,
                 seed: int = 0) -> dict[str, float]:
    """mode_metrics of one sample per observation, observations drawn uniformly with `seed`."""
    obs = task.sample_obs(samples, torch.Generator().manual_seed(seed))
    return mode_metrics(task, obs, sample_toy(model, obs, seed + 1), seed + 2)
