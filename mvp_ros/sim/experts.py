"""Scripted experts in robosuite: the policies that demonstrate a task, and the loop that runs them.

The experts drive a Panda with an OSC_POSE controller (20 Hz, 7-d delta actions in [-1, 1]:
position, axis-angle rotation, gripper) through a per-episode plan of waypoints. Like people, they
do not all do the same thing: each episode picks one of two strategies at random and adds noise to
the waypoints, the speed and every action, so the data is multimodal. `run_expert` runs and records
one episode (observations before and after each step, actions, rewards, dones, simulator states;
its `model_file`, `seed` and `strategy` as attrs), `successful_demos` runs attempts until enough have succeeded, and `mvp demos`
(mvp_ros.sim.write_demos) writes those to a Robomimic-format HDF5 file. For mixed-quality data,
`mixed_quality_demos` has operators of three skill levels (OPERATORS) carry out the same plans,
slower, noisier, with pauses and regrasps, and yields every episode, failed or not.

- lift, `top`: turn to the nearest cube-face-aligned yaw, hover above the cube, descend, grasp.
  lift, `side`: turn to the other face-aligned yaw (45-90 degrees away), come down beside the cube
  and slide in between the open fingers horizontally, grasp.
- can, `high`/`low`: grasp the can from above, carry it to its bin over a high arc or a low, direct
  path (with different grasp yaws), lower it, release, and move the hand away.
- square, `high`/`low`: grasp the square nut's handle from above, carry it over a high arc or a low,
  direct path while turning it square to the peg, then, watching the nut itself, bring it over the
  square peg and lower it around the peg, release, and move the hand away.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from mvp_ros.data.robomimic import Episode
from mvp_ros.sim.envs import SimEnv

OPEN, CLOSED = -1.0, 1.0

# OSC_POSE maps an action of 1 to 0.05 m of position and 0.5 rad of rotation per step.
POSITION_PER_ACTION = 0.05
ROTATION_PER_ACTION = 0.5
# Hand orientation at yaw 0: fingers pointing down, closing along world y.
HAND_DOWN = np.diag([1.0, -1.0, -1.0])


class DemoError(RuntimeError):
    """The experts could not produce the requested demonstrations."""


@dataclass(frozen=True)
class Waypoint:
    position: np.ndarray  # target of the end effector (world frame, m)
    yaw: float  # hand rotation about the world z axis (rad), 0 = HAND_DOWN
    gripper: float  # OPEN or CLOSED
    tolerance: float = 0.01  # m; the waypoint counts as reached within this distance
    hold_steps: int = 0  # steps to stay once reached (e.g. while the fingers close)
    # With an object in hand: where (x, y) the object's centre is to be; the hand then moves so that the
    # object, as observed, gets there, whichever way it sits in the hand.
    object_xy: np.ndarray | None = None


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _quat_xyzw_to_matrix(quat: np.ndarray) -> np.ndarray:
    x, y, z, w = quat / np.linalg.norm(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (angle in [0, pi])."""
    angle = np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    if np.sin(angle) < 1e-3:  # near pi the antisymmetric part vanishes: use the diagonal
        axis = np.sqrt(np.clip((np.diag(rotation) + 1.0) / 2.0, 0.0, None))
        axis[1] = np.copysign(axis[1], rotation[0, 1] + rotation[1, 0])
        axis[2] = np.copysign(axis[2], rotation[0, 2] + rotation[2, 0])
    return axis / np.linalg.norm(axis) * angle


class WaypointExpert:
    """Moves the hand through waypoints with a capped proportional controller plus noise."""

    def __init__(self, waypoints: list[Waypoint], speed: float, action_noise: float, rng: np.random.Generator,
                 object_position: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None):
        self.waypoints = waypoints
        self.object_position = object_position  # the carried object's position in an observation
        self.speed = speed  # largest position action, in (0, 1]
        self.action_noise = action_noise
        self.rng = rng
        self.index = 0
        self.held = 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        waypoint = self.waypoints[self.index]
        position_error = waypoint.position - obs["robot0_eef_pos"]
        if waypoint.object_xy is not None:
            position_error[:2] = waypoint.object_xy - self.object_position(obs)[:2]
        rotation_error = _rotation_vector(
            _yaw_matrix(waypoint.yaw) @ HAND_DOWN @ _quat_xyzw_to_matrix(obs["robot0_eef_quat"]).T
        )
        if np.linalg.norm(position_error) < waypoint.tolerance and self.index < len(self.waypoints) - 1:
            self.held += 1
            if self.held > waypoint.hold_steps:
                self.index, self.held = self.index + 1, 0

        position_action = position_error / POSITION_PER_ACTION
        norm = np.linalg.norm(position_action)
        if norm > self.speed:
            position_action *= self.speed / norm
        position_action += self.rng.normal(0.0, self.action_noise, 3)
        rotation_action = rotation_error / ROTATION_PER_ACTION
        action = np.concatenate([position_action, rotation_action, [waypoint.gripper]])
        return np.clip(action, -1.0, 1.0)


def _face_aligned_yaws(object_quat: np.ndarray) -> tuple[float, float]:
    """The hand yaws that close the fingers on a pair of cube faces: the nearest to the start
    (yaw 0) and the next one round (45 to 90 degrees away)."""
    rotation = _quat_xyzw_to_matrix(object_quat)
    cube_yaw = np.arctan2(rotation[1, 0], rotation[0, 0])
    nearest = (cube_yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4  # in [-45, 45) degrees
    other = nearest - np.copysign(np.pi / 2, nearest)
    return float(nearest), float(other)


def plan_lift(env: SimEnv, obs: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[str, list[Waypoint]]:
    cube_position, cube_quat = obs["object"][:3], obs["object"][3:7]
    nearest_yaw, other_yaw = _face_aligned_yaws(cube_quat)
    grasp = cube_position + np.array([*rng.uniform(-0.006, 0.006, 2), rng.uniform(-0.004, 0.006)])
    lift = grasp + np.array([*rng.uniform(-0.03, 0.03, 2), rng.uniform(0.10, 0.20)])
    closing_steps = int(rng.integers(6, 10))
    strategy = str(rng.choice(["top", "side"]))
    if strategy == "top":
        yaw = nearest_yaw + rng.normal(0.0, 0.05)
        hover = grasp + np.array([0.0, 0.0, rng.uniform(0.06, 0.14)])
        approach = [Waypoint(hover, yaw, OPEN, tolerance=0.02), Waypoint(grasp, yaw, OPEN, tolerance=0.008)]
    else:
        yaw = other_yaw + rng.normal(0.0, 0.05)
        # Beside the cube along the hand's x axis, the direction in which the fingers' plane lies.
        side = _yaw_matrix(yaw) @ np.array([rng.choice([-1.0, 1.0]) * rng.uniform(0.07, 0.09), 0.0, 0.0])
        beside = grasp + side
        above_beside = beside + np.array([0.0, 0.0, rng.uniform(0.05, 0.10)])
        approach = [
            Waypoint(above_beside, yaw, OPEN, tolerance=0.02),
            Waypoint(beside, yaw, OPEN, tolerance=0.01),
            Waypoint(grasp, yaw, OPEN, tolerance=0.008),
        ]
    grasping = Waypoint(grasp, yaw, CLOSED, tolerance=0.02, hold_steps=closing_steps)
    return strategy, [*approach, grasping, Waypoint(lift, yaw, CLOSED)]


def plan_can(env: SimEnv, obs: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[str, list[Waypoint]]:
    # PickPlaceCan's `object` is (can-to-hand position, can-to-hand quaternion, can position, can quaternion).
    can_position = obs["object"][7:10]
    robosuite_env = env.unwrapped
    target = robosuite_env.target_bin_placements[robosuite_env.object_id]  # centre of the can's bin quarter
    # The far half of that quarter is at the edge of the Panda's reach: release in the near corner,
    # clear of the walls (can radius 2.5 cm, walls 1 cm thick).
    near_corner = target[:2] - robosuite_env.bin_size[:2] / 4 + 0.045
    grasp = can_position + np.array([*rng.uniform(-0.005, 0.005, 2), rng.uniform(0.012, 0.025)])
    release = np.array([*(near_corner + rng.uniform(0.0, 0.025, 2)), grasp[2] + rng.uniform(0.04, 0.07)])
    strategy = str(rng.choice(["high", "low"]))
    if strategy == "high":
        yaw = rng.normal(0.0, 0.15)
        carry_height = rng.uniform(1.04, 1.08)
        carry = [
            Waypoint(np.array([*grasp[:2], carry_height]), yaw, CLOSED, tolerance=0.03),
            Waypoint(np.array([*release[:2], carry_height]), yaw, CLOSED, tolerance=0.03),
        ]
    else:
        yaw = np.pi / 2 + rng.normal(0.0, 0.15)
        carry = [
            Waypoint(grasp + np.array([0.0, 0.0, rng.uniform(0.10, 0.13)]), yaw, CLOSED, tolerance=0.03),
            Waypoint(np.array([*release[:2], rng.uniform(0.99, 1.01)]), yaw, CLOSED, tolerance=0.03),
        ]
    hover = grasp + np.array([0.0, 0.0, rng.uniform(0.06, 0.12)])
    return strategy, [
        Waypoint(hover, yaw, OPEN, tolerance=0.02),
        Waypoint(grasp, yaw, OPEN, tolerance=0.008),
        Waypoint(grasp, yaw, CLOSED, tolerance=0.02, hold_steps=int(rng.integers(8, 12))),
        *carry,
        Waypoint(release, yaw, CLOSED, tolerance=0.025),
        Waypoint(release, yaw, OPEN, tolerance=0.03, hold_steps=int(rng.integers(4, 8))),
        Waypoint(release + np.array([0.0, 0.0, 0.12]), yaw, OPEN),
    ]


# The square nut's handle, in the nut's frame (robosuite's square-nut.xml, `handle_site`).
SQUARE_NUT_HANDLE = np.array([0.054, 0.0, 0.0])


def plan_square(env: SimEnv, obs: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[str, list[Waypoint]]:
    # NutAssemblySquare's `object` is (nut-to-hand position, nut-to-hand quaternion, nut position, nut quaternion).
    nut_position, nut_rotation = obs["object"][7:10], _quat_xyzw_to_matrix(obs["object"][10:14])
    nut_yaw = float(np.arctan2(nut_rotation[1, 0], nut_rotation[0, 0]))
    # The fingers close across the handle, along the nut's y axis: hand yaw = nut yaw (mod pi).
    grasp_yaw = (nut_yaw + np.pi / 2) % np.pi - np.pi / 2
    # While carrying, turn the hand so the nut's sides line up with the square peg's (nut yaw = 0 mod pi/2):
    # the smallest such turn that keeps the wrist within a quarter turn of its start and leaves the handle
    # (and so the hand) not beyond the peg, at the edge of the Panda's reach.
    aligning = -((nut_yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)
    turns = [aligning + k * np.pi / 2 for k in range(-2, 3)]
    turn = min((t for t in turns if abs(grasp_yaw + t) <= np.pi / 2 + 0.2 and np.cos(nut_yaw + t) < 0.5), key=abs)
    place_yaw = grasp_yaw + turn
    # On the handle's outer part, clear of the nut's ring.
    grip_in_nut = SQUARE_NUT_HANDLE + np.array([rng.uniform(0.002, 0.01), 0.0, 0.0])
    grasp = nut_position + nut_rotation @ grip_in_nut
    # At reset the nut is still dropping onto the table: grasp where it comes to rest (its top 2 cm above
    # the table top), aiming a little lower than the fingertips reach so that they close on the whole handle.
    grasp[2] = env.unwrapped.table_offset[2] + 0.016 + rng.uniform(0.0, 0.003)
    peg = env.unwrapped.sim.data.body_xpos[env.unwrapped.peg1_body_id]
    # The nut turns with the hand about the hand's axis, which passes through the grasp point.
    hand_over_peg = peg[:2] + (_yaw_matrix(nut_yaw + turn) @ grip_in_nut)[:2]
    above_peg = np.array([*hand_over_peg, rng.uniform(1.02, 1.05)])
    strategy = str(rng.choice(["high", "low"]))
    if strategy == "high":
        carry = [Waypoint(np.array([*grasp[:2], rng.uniform(1.06, 1.10)]), grasp_yaw, CLOSED, tolerance=0.03),
                 Waypoint(np.array([*hand_over_peg, rng.uniform(1.06, 1.10)]), place_yaw, CLOSED, tolerance=0.02)]
    else:
        carry = [Waypoint(grasp + np.array([0.0, 0.0, rng.uniform(0.12, 0.16)]), grasp_yaw, CLOSED, tolerance=0.03)]
    hover = grasp + np.array([0.0, 0.0, rng.uniform(0.05, 0.08)])
    return strategy, [
        Waypoint(hover, grasp_yaw, OPEN, tolerance=0.01, hold_steps=int(rng.integers(3, 6))),
        Waypoint(grasp, grasp_yaw, OPEN, tolerance=0.009, hold_steps=int(rng.integers(1, 3))),
        Waypoint(grasp, grasp_yaw, CLOSED, tolerance=0.02, hold_steps=int(rng.integers(8, 12))),
        *carry,
        Waypoint(above_peg, place_yaw, CLOSED, tolerance=0.004, hold_steps=int(rng.integers(3, 6)), object_xy=peg[:2]),
        Waypoint(above_peg - np.array([0.0, 0.0, 0.10]), place_yaw, CLOSED, tolerance=0.006, object_xy=peg[:2]),
        Waypoint(above_peg - np.array([0.0, 0.0, 0.10]), place_yaw, OPEN, tolerance=0.03,
                 hold_steps=int(rng.integers(4, 8))),
        Waypoint(above_peg + np.array([0.0, 0.0, 0.05]), place_yaw, OPEN),
    ]


# Where each task's `object` observation holds the object's position.
OBJECT_POSITIONS: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "square": lambda obs: obs["object"][7:10],
}

PLANNERS: dict[str, Callable[[SimEnv, dict[str, np.ndarray], np.random.Generator], tuple[str, list[Waypoint]]]] = {
    "lift": plan_lift,
    "can": plan_can,
    "square": plan_square,
}


@dataclass(frozen=True)
class Operator:
    """A skill level of the mixed-quality demonstrators, like Robomimic's multi-human operators: how
    fast and how steadily an operator moves, how often they stop mid-motion, and how often their
    first grasp is let go and redone."""

    speed: tuple[float, float]  # range of the largest position action
    action_noise: tuple[float, float]  # range of the per-step action noise's standard deviation
    hesitation: float  # probability, each step, of starting a pause
    pause_steps: tuple[int, int]  # range of a pause's length (steps)
    regrasp: float  # probability that the episode opens the hand after its first grasp and grasps again


OPERATORS: dict[str, Operator] = {
    "better": Operator(speed=(0.8, 1.0), action_noise=(0.01, 0.04), hesitation=0.0, pause_steps=(0, 0), regrasp=0.0),
    "okay": Operator(speed=(0.45, 0.7), action_noise=(0.06, 0.12), hesitation=0.03, pause_steps=(3, 8), regrasp=0.3),
    "worse": Operator(speed=(0.25, 0.4), action_noise=(0.12, 0.22), hesitation=0.06, pause_steps=(5, 15),
                      regrasp=0.6),
}


def with_regrasp(waypoints: list[Waypoint], rng: np.random.Generator) -> list[Waypoint]:
    """The plan with its first grasp let go: after closing, the hand opens, rises, comes down again
    and closes a second time."""
    grasping = next(index for index, waypoint in enumerate(waypoints) if waypoint.gripper == CLOSED)
    grasp = waypoints[grasping]
    raised = grasp.position + np.array([0.0, 0.0, rng.uniform(0.04, 0.08)])
    retry = [
        Waypoint(grasp.position, grasp.yaw, OPEN, tolerance=0.03, hold_steps=int(rng.integers(4, 8))),
        Waypoint(raised, grasp.yaw, OPEN, tolerance=0.02),
        Waypoint(grasp.position, grasp.yaw, OPEN, tolerance=0.008),
        grasp,
    ]
    return [*waypoints[: grasping + 1], *retry, *waypoints[grasping + 1:]]


class HesitatingExpert(WaypointExpert):
    """A waypoint expert that now and then stops for a few steps, its hand held as it is."""

    def __init__(self, waypoints: list[Waypoint], operator: Operator, rng: np.random.Generator,
                 object_position: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None):
        super().__init__(waypoints, speed=rng.uniform(*operator.speed), action_noise=rng.uniform(*operator.action_noise),
                         rng=rng, object_position=object_position)
        self.operator = operator
        self.paused = 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.paused == 0 and self.rng.random() < self.operator.hesitation:
            self.paused = int(self.rng.integers(self.operator.pause_steps[0], self.operator.pause_steps[1] + 1))
        if self.paused > 0:
            self.paused -= 1
            return np.array([0.0] * 6 + [self.waypoints[self.index].gripper])
        return super().act(obs)


@dataclass
class Attempt:
    episode: Episode
    success: bool
    strategy: str


def run_expert(env: SimEnv, task: str, seed: int, obs_keys: tuple[str, ...], operator: str | None = None) -> Attempt:
    """One expert episode from `env.reset(seed=seed)`, stopped at success or the horizon; by the
    proficient expert, or by one of the mixed-quality OPERATORS (recorded as the `operator` attr).
    On the same seed every operator follows the same plan."""
    rng = np.random.default_rng([seed, 1])  # independent of the env's own seeded stream
    obs = env.reset(seed=seed)
    model_file = env.model_xml()
    strategy, waypoints = PLANNERS[task](env, obs, rng)
    attrs = {"model_file": model_file, "seed": seed, "strategy": strategy}
    if operator is None:
        expert = WaypointExpert(waypoints, speed=rng.uniform(0.6, 1.0), action_noise=rng.uniform(0.02, 0.08), rng=rng,
                                object_position=OBJECT_POSITIONS.get(task))
    else:
        skill = OPERATORS[operator]
        if rng.random() < skill.regrasp:
            waypoints = with_regrasp(waypoints, rng)
        expert = HesitatingExpert(waypoints, skill, rng, object_position=OBJECT_POSITIONS.get(task))
        attrs["operator"] = operator
    steps: dict[str, list] = {key: [] for key in (*obs_keys, "actions", "rewards", "dones", "states")}
    next_obs: dict[str, list] = {key: [] for key in obs_keys}
    done, info = False, {"success": False}
    while not done:
        for key in obs_keys:
            steps[key].append(obs[key])
        steps["states"].append(env.get_state())
        action = expert.act(obs)
        obs, reward, done, info = env.step(action)
        for key in obs_keys:
            next_obs[key].append(obs[key])
        steps["actions"].append(action)
        steps["rewards"].append(reward)
        steps["dones"].append(int(done))  # as Robomimic stores them: 1 at success or the episode's end
    episode = Episode(
        obs={key: np.stack(steps[key]) for key in obs_keys},
        next_obs={key: np.stack(values) for key, values in next_obs.items()},
        actions=np.stack(steps["actions"]),
        rewards=np.asarray(steps["rewards"]),
        dones=np.asarray(steps["dones"], dtype=np.int64),
        states=np.stack(steps["states"]),
        attrs=attrs,
    )
    return Attempt(episode, bool(info["success"]), strategy)


def episode_seed(seed: int, attempt: int) -> int:
    """The seed of one attempt of a run: `run_expert(env, task, episode_seed(S, i), keys)` redoes
    attempt i of `mvp demos --seed S` (each demo stores it as its `seed` attr)."""
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


def assign_operators(episodes: int, seed: int) -> list[str]:
    """Each episode's operator in a mixed-quality run: as many of each level as possible (within
    one), in an order shuffled by the run's seed."""
    levels = [level for _, level in zip(range(episodes), itertools.cycle(OPERATORS))]
    return [levels[index] for index in np.random.default_rng([seed, 2]).permutation(episodes)]


@dataclass
class DemoStats:
    attempts: int = 0
    successes: int = 0
    seconds: float = 0.0


def successful_demos(
    env: SimEnv, task: str, episodes: int, seed: int, max_attempts: int, obs_keys: tuple[str, ...], stats: DemoStats
) -> Iterator[Episode]:
    """Yields `episodes` successful demonstrations, or raises DemoError after `max_attempts`."""
    start = time.perf_counter()
    with tqdm(total=episodes, desc=f"{task} demos", unit="demo") as progress:
        while stats.successes < episodes:
            if stats.attempts >= max_attempts:
                raise DemoError(
                    f"only {stats.successes} of {episodes} {task} demonstrations succeeded in {max_attempts} attempts"
                )
            attempt = run_expert(env, task, episode_seed(seed, stats.attempts), obs_keys)
            stats.attempts += 1
            stats.seconds = time.perf_counter() - start
            progress.set_postfix(attempts=stats.attempts)
            if attempt.success:
                stats.successes += 1
                progress.update(1)
                yield attempt.episode


def mixed_quality_demos(
    env: SimEnv, task: str, operators: list[str], seed: int, obs_keys: tuple[str, ...], stats: DemoStats
) -> Iterator[Episode]:
    """Yields one episode per entry of `operators` (attempt i by operators[i]), failed or slow ones
    included: Robomimic's mixed-quality data keeps every episode its operators recorded."""
    start = time.perf_counter()
    for attempt_index, operator in enumerate(tqdm(operators, desc=f"{task} mixed demos", unit="episode")):
        attempt = run_expert(env, task, episode_seed(seed, attempt_index), obs_keys, operator)
        stats.attempts += 1
        stats.successes += attempt.success
        stats.seconds = time.perf_counter() - start
        yield attempt.episode
