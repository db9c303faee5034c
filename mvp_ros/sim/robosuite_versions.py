"""Robomimic files written with another robosuite version than the installed one (1.5).

Robomimic's public datasets (the v1.4.1 files) were made with robosuite 1.4. Three things differ
under robosuite 1.5, and this module bridges each:

- Controller settings. robosuite 1.4 took one arm controller (`{"type": "OSC_POSE", ...}`), 1.5
  takes a composite controller with body parts. `translate_controller_configs` converts with
  robosuite's own `refactor_composite_controller_config`, then carries over what that function
  does not: `control_delta` (1.5 reads `input_type` and would run absolute actions as deltas) and
  the older names `damping`/`damping_limits` of `damping_ratio`/`damping_ratio_limits`. Every
  setting is checked against the 1.5 controller's parameters; one it does not take is an error.
- Episode horizons. 1.4 env_args carry none (robosuite's default is 1000 steps); Robomimic
  evaluates each task with its own horizon (`ROBOMIMIC_HORIZONS`, from robomimic's dataset
  registry for the proficient-human datasets).
- Observations. 1.5 reordered the `object` vector of the pick-and-place tasks and flipped the sign
  of Lift's `gripper_to_cube_pos`; `object_state_of_version` assembles `object` as the data's
  robosuite version did. `robot0_eef_vel_lin`/`robot0_eef_vel_ang` (Robomimic's low-dim keys,
  gone from 1.5's observables) are computed as 1.4 computed them, by `eef_velocities`.
"""
from __future__ import annotations

import copy
import inspect
import re
import warnings
from typing import Any

import numpy as np
import robosuite
from robosuite.controllers.composite.composite_controller_factory import (
    is_part_controller_config,
    refactor_composite_controller_config,
)
from robosuite.controllers.parts import arm as arm_controllers
from robosuite.controllers.parts import generic as generic_controllers
from robosuite.robots import REGISTERED_ROBOTS

# robomimic's DATASET_REGISTRY rollout horizons of the proficient-human ("ph") datasets, by robosuite environment.
ROBOMIMIC_HORIZONS = {"Lift": 400, "PickPlaceCan": 400, "NutAssemblySquare": 400, "TwoArmTransport": 700,
                      "ToolHang": 700}

# robosuite 1.4 part controllers -> the 1.5 class that takes their settings.
_PART_CONTROLLERS = {
    "OSC_POSE": arm_controllers.OperationalSpaceController,
    "OSC_POSITION": arm_controllers.OperationalSpaceController,
    "JOINT_POSITION": generic_controllers.JointPositionController,
    "JOINT_VELOCITY": generic_controllers.JointVelocityController,
    "JOINT_TORQUE": generic_controllers.JointTorqueController,
}
# Settings robosuite's controller factory reads itself instead of passing them to the class.
_FACTORY_SETTINGS = {"type", "interpolation", "ramp_ratio"}
# Set by robosuite from the robot and the simulation, never by a config.
_RUNTIME_ARGUMENTS = {"self", "sim", "ref_name", "joint_indexes", "actuator_range", "interpolator", "interpolator_pos",
                      "interpolator_ori", "lite_physics"}
_RENAMED = {"damping": "damping_ratio", "damping_limits": "damping_ratio_limits"}

# The `object` vector as robosuite before 1.5 assembled it: (observable, sign) in order.
_OBJECT_STATE_BEFORE_1_5 = {
    "Lift": (("cube_pos", 1.0), ("cube_quat", 1.0), ("gripper_to_cube_pos", -1.0)),
    **{env_name: ((f"{obj}_pos", 1.0), (f"{obj}_quat", 1.0), (f"{obj}_to_robot0_eef_pos", 1.0),
                  (f"{obj}_to_robot0_eef_quat", 1.0))
       for env_name, obj in (("PickPlaceCan", "Can"), ("NutAssemblySquare", "SquareNut"))},
}


class RobosuiteVersionWarning(UserWarning):
    """The data was made with another robosuite version than the installed one."""


class EnvArgsError(ValueError):
    """`env_args` that cannot build an environment (or one that would not run as the data's did); the
    message names the offending field."""


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """The numbers of a version string ("1.4.1" -> (1, 4, 1)); None for a missing or unreadable one."""
    numbers = re.findall(r"\d+", str(version or ""))[:3]
    return tuple(int(number) for number in numbers) if numbers else None


def data_predates_1_5(env_args: dict) -> bool:
    """Whether the data's robosuite (env_args['env_version']) is older than 1.5. Files without a
    version are taken to be from the installed robosuite."""
    version = version_tuple(env_args.get("env_version"))
    return version is not None and version < (1, 5)


def warn_if_other_version(env_args: dict) -> None:
    data_version = env_args.get("env_version")
    if data_version is not None and version_tuple(data_version) != version_tuple(robosuite.__version__):
        adjustments = ("its controller settings are translated and its observations computed as robosuite "
                       f"{data_version} computed them" if data_predates_1_5(env_args) else "nothing is translated")
        warnings.warn(f"the data of {env_args.get('env_name')} was made with robosuite {data_version}, the installed "
                      f"robosuite is {robosuite.__version__}: {adjustments}", RobosuiteVersionWarning, stacklevel=3)


def translate_controller_configs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """env_kwargs with robosuite-1.4 `controller_configs` (one part controller) in the 1.5 composite
    format; env_kwargs already in the 1.5 format come back unchanged."""
    old = env_kwargs.get("controller_configs")
    if not isinstance(old, dict) or not is_part_controller_config(old):
        return env_kwargs
    robots = env_kwargs.get("robots")
    robots = [robots] if isinstance(robots, str) else list(robots or [])
    unknown = [robot for robot in robots if robot not in REGISTERED_ROBOTS]
    if not robots or unknown:
        raise EnvArgsError(f"env_args['env_kwargs']['robots'] = {env_kwargs.get('robots')!r}: "
                           "robosuite 1.4 controller settings need known robots to translate them")
    part = _translated_part(old)
    translated = []
    for robot in robots:
        arms = list(REGISTERED_ROBOTS[robot].arms)
        composite = refactor_composite_controller_config(copy.deepcopy(part), robot, arms)
        for arm in arms:
            _check_carried_over(part, composite["body_parts"][arm], arm)
        translated.append(composite)
    return {**env_kwargs, "controller_configs": translated[0] if len(translated) == 1 else translated}


def _translated_part(old: dict[str, Any]) -> dict[str, Any]:
    name = "env_args['env_kwargs']['controller_configs']"
    controller_type = old["type"]
    if controller_type not in _PART_CONTROLLERS:
        raise EnvArgsError(
            f"{name}['type'] = {controller_type!r}: a robosuite 1.4 controller that robosuite 1.5 has no equivalent "
            f"for (translated: {', '.join(_PART_CONTROLLERS)})")
    accepted = {parameter for parameter in inspect.signature(_PART_CONTROLLERS[controller_type].__init__).parameters
                if parameter not in _RUNTIME_ARGUMENTS and parameter != "kwargs"} | _FACTORY_SETTINGS
    part: dict[str, Any] = {}
    for key, value in old.items():
        if key == "control_delta":
            if not isinstance(value, bool):
                raise EnvArgsError(f"{name}['control_delta'] must be true or false, got {value!r}")
            if "input_type" not in accepted:
                raise EnvArgsError(f"{name}['control_delta'] does not apply to a {controller_type} controller")
            key, value = "input_type", "delta" if value else "absolute"
            # robosuite 1.4 took positions and deltas in the world frame.
            part["input_ref_frame"] = "world"
        key = _RENAMED.get(key, key)
        if key not in accepted:
            raise EnvArgsError(
                f"{name}[{key!r}]: robosuite 1.5's {controller_type} controller has no such setting "
                f"(it takes {', '.join(sorted(accepted))})")
        if key in part and part[key] != value:
            raise EnvArgsError(f"{name}: {key!r} is given twice with different values, "
                               f"{part[key]!r} and {value!r} (an older name is one of them)")
        part[key] = value
    return part


def _check_carried_over(part: dict[str, Any], translated: dict[str, Any], arm: str) -> None:
    for key, value in part.items():
        if translated.get(key) != value:
            raise EnvArgsError(
                f"env_args['env_kwargs']['controller_configs']: robosuite's translation set {key!r} of arm {arm!r} to "
                f"{translated.get(key)!r} instead of {value!r}")


def object_state_of_version(env_name: str, env_args: dict, observables: dict[str, np.ndarray],
                            object_state: np.ndarray) -> np.ndarray:
    """`object` as the data's robosuite assembled it from the named `observables` of one step;
    `object_state` (1.5's) when the data is from 1.5 or later. Data from before 1.5 of a task whose old
    layout is not known here is refused rather than silently given 1.5's meaning."""
    if not data_predates_1_5(env_args):
        return np.array(object_state)
    if env_name not in _OBJECT_STATE_BEFORE_1_5:
        raise EnvArgsError(
            f"env_args['env_version'] = {env_args.get('env_version')!r}: how robosuite before 1.5 assembled the "
            f"'object' observation of {env_name} is not known here (known: {', '.join(_OBJECT_STATE_BEFORE_1_5)})")
    return np.concatenate([sign * np.asarray(observables[name]) for name, sign in _OBJECT_STATE_BEFORE_1_5[env_name]])


def eef_velocities(robosuite_env: Any) -> dict[str, np.ndarray]:
    """`robot0_eef_vel_lin` and `robot0_eef_vel_ang` (world frame, of the hand body) for each robot, as
    robosuite 1.4 computed them."""
    velocities = {}
    for robot in robosuite_env.robots:
        prefix = robot.robot_model.naming_prefix
        hand = robot.robot_model.eef_name
        hand = hand[robot.arms[0]] if isinstance(hand, dict) else hand
        velocities[f"{prefix}eef_vel_lin"] = np.array(robosuite_env.sim.data.get_body_xvelp(hand))
        velocities[f"{prefix}eef_vel_ang"] = np.array(robosuite_env.sim.data.get_body_xvelr(hand))
    return velocities
