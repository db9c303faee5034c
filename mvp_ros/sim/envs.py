"""robosuite environments built from Robomimic-style `env_args`: the one place that makes them.

`env_args` follow robomimic's convention, so the `env_args` stored in a dataset or a checkpoint
rebuild the same environment (and robomimic's own tools can read them):

    {"env_name": "Lift", "env_version": "1.5.2", "type": 1, "env_kwargs": {<robosuite.make kwargs>}}

`make_env` builds the environment of `env_args`; `build_env` builds it with a given seed, as
`mvp eval` and the ROS simulation bridge do, so both simulate the same objects.

Conventions fixed here for data generation, evaluation and the ROS simulation bridge alike:
- Images come out right side up (row 0 is the top of the picture). robosuite renders OpenGL-style,
  bottom row first; `SimEnv` flips every image once, here, instead of changing robosuite's global
  `IMAGE_CONVENTION` macro, which would silently change images for any other robosuite user.
- Offscreen rendering runs with shadows and reflections off: on a CPU (Mesa) reflections more
  than double the cost of an 84x84 image, and shadows are not needed for learning.
- Observation keys follow robomimic's env wrapper: images, `object` (robosuite's `object-state`)
  and the robot's own keys (`robot0_eef_pos`, `robot0_joint_pos`, ...), with the end effector's
  velocities (`robot0_eef_vel_lin`, `robot0_eef_vel_ang`) that Robomimic's low-dim datasets hold.
- Files from robosuite before 1.5 (Robomimic's v1.4.1 datasets) run as they were made: their
  controller settings are translated, their horizon is Robomimic's for the task, and `object` is
  assembled as their robosuite did (mvp_ros.sim.robosuite_versions); a warning names both versions.
- `ignore_done` is always true: robosuite never ends an episode itself. `SimEnv.step` reports
  `done` at success or when `horizon` steps have been taken.
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
from typing import Any, Sequence

import mujoco
import numpy as np


class _RobosuiteStartupNoise(logging.Filter):
    """Drops robosuite's import-time advice (private macro file, optional packages we don't use)
    and its per-environment "Loading controller configuration" notice. Other messages pass."""

    NOISE = (
        "No private macro file found",
        "It is recommended to use a private macro file",
        "To setup, run:",
        "Could not import robosuite_models",
        "Could not load the mink-based whole-body IK",
        "Loading controller configuration from",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


# The filter must sit on robosuite's logger before robosuite is imported: it warns at import time.
logging.getLogger("robosuite_logs").addFilter(_RobosuiteStartupNoise())

import robosuite  # noqa: E402
from robosuite import load_composite_controller_config  # noqa: E402

from mvp_ros.sim.robosuite_versions import (  # noqa: E402
    ROBOMIMIC_HORIZONS,
    EnvArgsError,
    eef_velocities,
    object_state_of_version,
    translate_controller_configs,
    warn_if_other_version,
)

ROBOSUITE_ENV_TYPE = 1  # robomimic's EnvType.ROBOSUITE_TYPE
DEFAULT_CAMERAS = ("agentview", "robot0_eye_in_hand")

# task name (as the `mvp` commands spell it) -> (robosuite environment, episode horizon in steps)
TASKS: dict[str, tuple[str, int]] = {
    "lift": ("Lift", 200),
    "can": ("PickPlaceCan", 400),
    "square": ("NutAssemblySquare", 400),
}


def env_args_for(
    task: str,
    *,
    images: bool,
    image_size: int = 84,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    horizon: int | None = None,
) -> dict[str, Any]:
    """Robomimic-style env_args for a Panda with an OSC_POSE arm controller at 20 Hz."""
    if task not in TASKS:
        raise EnvArgsError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    env_name, default_horizon = TASKS[task]
    env_kwargs: dict[str, Any] = {
        "robots": ["Panda"],
        # Panda's default composite controller: BASIC with an OSC_POSE arm (7-d delta actions).
        "controller_configs": load_composite_controller_config(robot="Panda"),
        "control_freq": 20,
        "horizon": int(horizon if horizon is not None else default_horizon),
        "ignore_done": True,
        "hard_reset": False,  # reuse the compiled model on reset: ~20x faster resets, same dynamics
        "reward_shaping": False,
        "use_object_obs": True,
        "use_camera_obs": bool(images),
        "has_renderer": False,
        "has_offscreen_renderer": bool(images),
        "camera_names": list(cameras) if images else [],
        "camera_heights": int(image_size),
        "camera_widths": int(image_size),
        "camera_depths": False,
    }
    return {
        "env_name": env_name,
        "env_version": robosuite.__version__,
        "type": ROBOSUITE_ENV_TYPE,
        "env_kwargs": env_kwargs,
    }


class SimEnv:
    """A thin wrapper over one robosuite environment with the conventions of this module."""

    def __init__(self, robosuite_env: Any, env_args: dict[str, Any]) -> None:
        self.unwrapped = robosuite_env
        self.env_args = copy.deepcopy(env_args)
        self.horizon = int(robosuite_env.horizon)
        self.control_rate_hz = float(robosuite_env.control_freq)
        self.action_low, self.action_high = (np.asarray(bound) for bound in robosuite_env.action_spec)
        self.action_dim = int(self.action_low.shape[0])
        self._robot_prefix = robosuite_env.robots[0].robot_model.naming_prefix
        # MuJoCo's XML export rounds numbers: run the model exactly as `model_xml()` writes it, so
        # an episode recorded here replays exactly in an environment rebuilt from its model_file.
        robosuite_env.reset_from_xml_string(robosuite_env.edit_model_xml(self.model_xml()))
        self._disable_costly_rendering()
        self.observation_keys = tuple(self._observation(robosuite_env.observation_spec()))

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start an episode. With a seed, the object placement and robot start are reproducible."""
        if seed is not None:
            # robosuite's placement samplers and robot initialisation hold a reference to `env.rng`;
            # re-seeding that generator in place reaches all of them.
            self.unwrapped.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._use_own_render_context()
        self.unwrapped.reset()
        self._disable_costly_rendering()
        self._restart_controllers()
        self._cold_start_solver()
        return self._fresh_observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict[str, Any]]:
        """Apply one action; `done` is true at success or once `horizon` steps have been taken."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action has shape {action.shape}, expected ({self.action_dim},)")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action.tolist()}")
        self._use_own_render_context()
        cameras = [observable for observable in self.unwrapped._observables.values()
                   if observable.modality == "image" and observable.is_enabled()]
        for camera in cameras:  # rendered once, at the state the step ends in, below
            camera.set_enabled(False)
        try:
            _, _, _, info = self.unwrapped.step(action)
        finally:
            for camera in cameras:
                camera.set_enabled(True)
        raw = self._observations_at_current_state()
        # robosuite's own reward saw the lagging positions (see below): at the success boundary its
        # sparse reward could be 0 on the step that succeeds. The reward of the state the step ends in.
        reward = self.unwrapped.reward(action)
        success = self.is_success()
        done = success or self.unwrapped.timestep >= self.horizon
        return self._observation(raw), float(reward), done, {**info, "success": success}

    def is_success(self) -> bool:
        return bool(self.unwrapped._check_success())

    def get_state(self) -> np.ndarray:
        """The flattened MuJoCo state (time, qpos, qvel), as robomimic stores it under `states`."""
        return np.array(self.unwrapped.sim.get_state().flatten())

    def reset_to(self, state: np.ndarray, model_xml: str | None = None) -> dict[str, np.ndarray]:
        """Reset, then set the simulator to a flattened state from `get_state` (e.g. `states[0]`).

        robosuite draws some model parameters (e.g. Lift's cube size) when it builds a model (from
        env_kwargs["seed"], and anew at every reset with hard_reset), so to replay a recorded episode
        pass its `model_file` as `model_xml`: the model is rebuilt from it first when it differs.
        """
        self._use_own_render_context()
        if model_xml is not None and model_xml != self.model_xml():
            self.unwrapped.reset_from_xml_string(self.unwrapped.edit_model_xml(model_xml))
        state = np.asarray(state, dtype=np.float64)
        expected = self.get_state().shape
        if state.shape != expected:
            raise ValueError(
                f"state has shape {state.shape}, but {self.env_args['env_name']} states have shape {expected}"
            )
        self.unwrapped.reset()
        self._disable_costly_rendering()
        self.unwrapped.sim.set_state_from_flattened(state)
        self.unwrapped.sim.forward()
        self._restart_controllers()
        self._cold_start_solver()
        return self._fresh_observation()

    def observe_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """The observations at a flattened state of the current model (e.g. `states[t]` of an episode
        restored with `reset_to`), without a reset: how Robomimic recomputes a file's observations."""
        self.unwrapped.sim.set_state_from_flattened(np.asarray(state, dtype=np.float64))
        self.unwrapped.sim.forward()
        return self._fresh_observation()

    def model_xml(self) -> str:
        """The MuJoCo model of the current episode (robomimic stores it as the demo's `model_file`)."""
        return self.unwrapped.sim.model.get_xml()

    def render(self, camera_name: str, height: int, width: int) -> np.ndarray:
        """An RGB image (height, width, 3) uint8, right side up. Needs an offscreen renderer."""
        if self.unwrapped.sim._render_context_offscreen is None:
            raise RuntimeError("render() needs an offscreen renderer: make_env(env_args, offscreen_render=True)")
        self._use_own_render_context()
        image = self.unwrapped.sim.render(camera_name=camera_name, height=height, width=width)
        return np.ascontiguousarray(image[::-1])

    def close(self) -> None:
        self.unwrapped.close()

    def _cold_start_solver(self) -> None:
        # The contact solver's warm start is not part of the flattened state: starting every episode
        # cold makes an episode restored from its `states[0]` replay the same trajectory.
        self.unwrapped.sim.data.qacc_warmstart[:] = 0.0

    def _restart_controllers(self) -> None:
        # robosuite builds the controllers during its reset, before the fingers and objects are
        # placed, and they keep what they saw then (the OSC null-space target, the mass matrix, the
        # fingers' start). Rebuilding them from the episode's initial state, in reset() and
        # reset_to() alike, makes an episode restored from `states[0]` replay exactly.
        for robot in self.unwrapped.robots:
            robot._load_controller()
            robot.composite_controller.update_state()
            robot.composite_controller.reset()

    def _observations_at_current_state(self) -> dict[str, Any]:
        # robosuite samples observations during the step's first physics substep, and the positions
        # MuJoCo leaves after a step are those before its last integration: both lag the state the
        # step ends in (which `states[t]` records). Computing the positions and sampling every
        # observable again makes them the state's, as Robomimic computes a file's observations from
        # its states, and keeps cameras and joints of one instant, as a robot's are; `step` disables
        # the cameras during the physics, so each renders once. The low-dim ones twice, because 1.5
        # computes an object's pose relative to the hand before the object's pose (PickPlace,
        # NutAssembly), from the cache: the first pass would use the previous sample's.
        self.unwrapped.sim.forward()
        cache = self.unwrapped._obs_cache
        for first_pass in (True, False):
            for observable in self.unwrapped._observables.values():
                if first_pass or observable.modality != "image":
                    observable.update(timestep=0.0, obs_cache=cache, force=True)
        return self.unwrapped._get_observations()

    def _fresh_observation(self) -> dict[str, np.ndarray]:
        # Some robosuite sensors (e.g. Can_to_robot0_eef_pos) read other sensors' values from a cache
        # that a reset empties, so the first update after a reset gives zeros; a second one fills them.
        self.unwrapped._get_observations(force_update=True)
        return self._observation(self.unwrapped._get_observations(force_update=True))

    def _observation(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        observation: dict[str, np.ndarray] = {}
        for key, value in raw.items():
            if key.endswith(("_image", "_depth")):
                observation[key] = np.ascontiguousarray(value[::-1])  # OpenGL bottom-up -> top-down
            elif key == "object-state":
                observation["object"] = object_state_of_version(self.env_args["env_name"], self.env_args, raw, value)
            elif key.startswith(self._robot_prefix) and not key.endswith("proprio-state"):
                observation[key] = np.array(value)
        return {**observation, **eef_velocities(self.unwrapped)}

    def _use_own_render_context(self) -> None:
        # robosuite renders into whichever OpenGL context is current (that of the newest environment
        # in this thread), so with several environments each must make its own current first.
        context = self.unwrapped.sim._render_context_offscreen
        if context is not None:
            context.gl_ctx.make_current()

    def _disable_costly_rendering(self) -> None:
        # robosuite creates the offscreen context lazily (and anew after a hard reset), and offers
        # no option for scene flags, so they are set on its context after every (re)creation.
        context = self.unwrapped.sim._render_context_offscreen
        if context is not None:
            context.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            context.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def make_env(env_args: dict[str, Any] | str, *, offscreen_render: bool = False) -> SimEnv:
    """Build the environment that `env_args` describe (a dict, or its JSON text as stored in HDF5).

    `offscreen_render` adds an offscreen renderer (for videos) without adding image observations.
    """
    env_args = _parse_env_args(env_args)
    warn_if_other_version(env_args)
    env_kwargs = translate_controller_configs(copy.deepcopy(env_args["env_kwargs"]))
    env_kwargs["ignore_done"] = True
    if env_args["env_name"] in ROBOMIMIC_HORIZONS:
        env_kwargs.setdefault("horizon", ROBOMIMIC_HORIZONS[env_args["env_name"]])
    env_kwargs.setdefault("seed", 0)  # robosuite draws object sizes (Lift's cube) from it when it builds the model
    if offscreen_render:
        env_kwargs["has_offscreen_renderer"] = True
    return SimEnv(robosuite.make(env_args["env_name"], **env_kwargs), env_args)


def with_cameras_of(env_args: dict, obs_keys: Sequence[str]) -> dict:
    """`env_args` rendering only the cameras whose images (`<camera>_image`) are among `obs_keys`: a
    low-dim policy trained on a file with images is rolled out without rendering them, which on a CPU
    costs more than the physics."""
    env_kwargs = env_args.get("env_kwargs")
    if not isinstance(env_kwargs, dict) or not env_kwargs.get("use_camera_obs"):
        return env_args
    names = env_kwargs.get("camera_names", [])
    names = [names] if isinstance(names, str) else list(names)  # robosuite takes one name or a list
    cameras = [name for name in names if f"{name}_image" in obs_keys]
    if cameras == names:
        return env_args
    return {**env_args, "env_kwargs": {**env_kwargs, "camera_names": cameras, "use_camera_obs": bool(cameras),
                                       "has_offscreen_renderer": bool(cameras)}}


def build_env(env_args: dict, seed: int, offscreen_render: bool) -> SimEnv:
    """The environment of `env_args`, constructed with `seed`. robosuite draws some model properties
    once, when it builds the model (Lift's cube size), from a generator that is seeded from the OS
    unless `env_kwargs` has a seed; without one, two runs would evaluate on different cubes."""
    env_kwargs = env_args.get("env_kwargs")
    if isinstance(env_kwargs, dict):  # anything else is for make_env to reject, with its message
        env_args = {**env_args, "env_kwargs": {**env_kwargs, "seed": seed}}
    return make_env(env_args, offscreen_render=offscreen_render)


def _parse_env_args(env_args: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(env_args, (str, bytes)):
        try:
            env_args = json.loads(env_args)
        except json.JSONDecodeError as error:
            raise EnvArgsError(f"env_args is not valid JSON: {error}") from None
    if not isinstance(env_args, dict):
        raise EnvArgsError(f"env_args must be a dict, got {type(env_args).__name__}")
    for field in ("env_name", "type", "env_kwargs"):
        if field not in env_args:
            raise EnvArgsError(f"env_args has no {field!r} field (fields present: {sorted(env_args)})")
    env_name = env_args["env_name"]
    if env_name not in robosuite.ALL_ENVIRONMENTS:
        raise EnvArgsError(
            f"env_args['env_name'] = {env_name!r} is not a robosuite environment; "
            f"known: {', '.join(sorted(robosuite.ALL_ENVIRONMENTS))}"
        )
    if env_args["type"] != ROBOSUITE_ENV_TYPE:
        raise EnvArgsError(
            f"env_args['type'] = {env_args['type']!r}: only robosuite environments (type {ROBOSUITE_ENV_TYPE}) are supported"
        )
    env_kwargs = env_args["env_kwargs"]
    if not isinstance(env_kwargs, dict):
        raise EnvArgsError(f"env_args['env_kwargs'] must be a dict, got {type(env_kwargs).__name__}")
    _check_env_kwargs(env_name, translate_controller_configs(env_kwargs))
    return env_args


def _check_env_kwargs(env_name: str, env_kwargs: dict[str, Any]) -> None:
    accepted = _constructor_arguments(robosuite.environments.REGISTERED_ENVS[env_name])
    unknown = sorted(set(env_kwargs) - accepted)
    if unknown:
        raise EnvArgsError(f"env_args['env_kwargs'] has arguments that {env_name} does not take: {unknown}")
    if "robots" not in env_kwargs:
        raise EnvArgsError("env_args['env_kwargs'] has no 'robots' field")
    for field in ("control_freq", "horizon", "camera_heights", "camera_widths"):
        value = env_kwargs.get(field, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise EnvArgsError(f"env_args['env_kwargs'][{field!r}] must be a positive number, got {value!r}")
    if env_kwargs.get("use_camera_obs") and not env_kwargs.get("camera_names"):
        raise EnvArgsError("env_args['env_kwargs'] asks for camera observations but 'camera_names' is empty")


def _constructor_arguments(env_class: type) -> set[str]:
    # Task variants such as PickPlaceCan take **kwargs and pass them on, so collect the named
    # parameters over the class hierarchy.
    names: set[str] = set()
    for cls in env_class.__mro__:
        if "__init__" in vars(cls):
            names.update(
                name
                for name, parameter in inspect.signature(cls.__init__).parameters.items()
                if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
            )
    return names
