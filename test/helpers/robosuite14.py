"""Files shaped like Robomimic's v1.4.1 datasets, made from a file of `mvp demos`: robosuite-1.4
env_args (one OSC_POSE arm controller as robomimic stores it, `env_version` 1.4.1, no horizon)
and `object` as robosuite 1.4 assembled it, written here from robosuite 1.4's source: Lift's
`gripper_to_cube_pos` is eef - cube (1.5: cube - eef); the pick-and-place tasks list the object's
own pose first, [pos, quat, to_eef_pos, to_eef_quat] (1.5: the relative pose first)."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np

ROBOSUITE_1_4_OSC_POSE = {
    "type": "OSC_POSE", "input_max": 1, "input_min": -1,
    "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5], "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
    "kp": 150, "damping": 1, "impedance_mode": "fixed", "kp_limits": [0, 300], "damping_limits": [0, 10],
    "position_limits": None, "orientation_limits": None, "uncouple_pos_ori": True, "control_delta": True,
    "interpolation": None, "ramp_ratio": 0.2,
}
# The env_kwargs robomimic's v1.4.1 files carry.
ROBOMIMIC_ENV_KWARGS = ("has_renderer", "has_offscreen_renderer", "ignore_done", "use_object_obs", "use_camera_obs",
                        "control_freq", "robots", "camera_names", "camera_depths", "camera_heights", "camera_widths",
                        "reward_shaping")


def robosuite_1_4_env_args(env_args: dict, **controller_settings) -> dict:
    env_kwargs = {key: value for key, value in env_args["env_kwargs"].items() if key in ROBOMIMIC_ENV_KWARGS}
    env_kwargs["controller_configs"] = {**ROBOSUITE_1_4_OSC_POSE, **controller_settings}
    return {"env_name": env_args["env_name"], "env_version": "1.4.1", "type": 1, "env_kwargs": env_kwargs}


def object_as_robosuite_1_4(env_name: str, object_1_5: np.ndarray) -> np.ndarray:
    if env_name == "Lift":
        return np.concatenate([object_1_5[:, :7], -object_1_5[:, 7:10]], axis=1)
    return np.concatenate([object_1_5[:, 7:14], object_1_5[:, :7]], axis=1)


def write_robosuite_1_4_copy(source, destination) -> None:
    shutil.copyfile(source, destination)
    with h5py.File(destination, "r+") as file:
        env_args = json.loads(file["data"].attrs["env_args"])
        file["data"].attrs["env_args"] = json.dumps(robosuite_1_4_env_args(env_args))
        for demo in file["data"].values():
            for group in ("obs", "next_obs"):
                if group in demo:
                    demo[group]["object"][...] = object_as_robosuite_1_4(env_args["env_name"], demo[group]["object"][()])
