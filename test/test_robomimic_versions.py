"""Robomimic files from robosuite 1.4 (shaped like the public v1.4.1 datasets, made here from our
demos by test/helpers/robosuite14.py) under the installed robosuite 1.5: controller settings
translated, Robomimic's horizons, a warning naming both versions, observations computed as the
data computed them (proved by replaying stored states), and `mvp eval` on a checkpoint from one."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # before robosuite/mujoco are imported

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import robosuite  # noqa: E402

from mvp_ros.cli import main  # noqa: E402
from mvp_ros.data.robomimic import read_env_args  # noqa: E402
from mvp_ros.policy.checkpoint import read_checkpoint_info  # noqa: E402
from mvp_ros.sim.envs import EnvArgsError, env_args_for, make_env  # noqa: E402
from mvp_ros.sim.robosuite_versions import (  # noqa: E402
    RobosuiteVersionWarning,
    object_state_of_version,
    translate_controller_configs,
)
from mvp_ros.sim.state_replay import observation_differences  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from robosuite14 import ROBOSUITE_1_4_OSC_POSE, robosuite_1_4_env_args, write_robosuite_1_4_copy  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::mvp_ros.sim.robosuite_versions.RobosuiteVersionWarning")


def lift_1_4(**controller_settings) -> dict:
    return robosuite_1_4_env_args(env_args_for("lift", images=False), **controller_settings)


def arm_settings(env_args: dict) -> dict:
    return translate_controller_configs(env_args["env_kwargs"])["controller_configs"]["body_parts"]["right"]


def test_robosuite_1_4_controller_settings_are_translated_with_every_setting_carried_over():
    arm = arm_settings(lift_1_4())
    assert arm["type"] == "OSC_POSE" and arm["gripper"] == {"type": "GRIP"}
    assert (arm["input_type"], arm["input_ref_frame"]) == ("delta", "world")
    assert (arm["damping_ratio"], arm["damping_ratio_limits"]) == (1, [0, 10])
    for key in ("kp", "kp_limits", "output_max", "output_min", "uncouple_pos_ori", "ramp_ratio", "impedance_mode"):
        assert arm[key] == ROBOSUITE_1_4_OSC_POSE[key], key
    assert "control_delta" not in arm and "damping" not in arm
    assert arm_settings(lift_1_4(control_delta=False))["input_type"] == "absolute"


def test_settings_in_the_robosuite_1_5_format_pass_unchanged():
    env_kwargs = env_args_for("lift", images=False)["env_kwargs"]
    assert translate_controller_configs(env_kwargs) is env_kwargs


@pytest.mark.parametrize("settings, message", [
    ({"kp_gain": 3}, r"\['kp_gain'\]: robosuite 1.5's OSC_POSE controller has no such setting"),
    ({"type": "IK_POSE"}, r"\['type'\] = 'IK_POSE': a robosuite 1.4 controller that robosuite 1.5 has no equivalent"),
    ({"control_delta": "yes"}, r"\['control_delta'\] must be true or false, got 'yes'"),
    ({"damping_ratio": 2}, r"'damping_ratio' is given twice with different values, 1 and 2"),
    ({"type": "JOINT_VELOCITY"}, r"\['damping_ratio'\]: robosuite 1.5's JOINT_VELOCITY controller has no such setting"),
])
def test_settings_that_cannot_be_translated_are_refused_by_name(settings, message):
    with pytest.raises(EnvArgsError, match=message):
        make_env(lift_1_4(**settings))


def test_an_object_layout_from_before_1_5_that_is_not_known_is_refused():
    with pytest.raises(EnvArgsError, match="how robosuite before 1.5 assembled the 'object' observation of Door"):
        object_state_of_version("Door", {"env_version": "1.4.1"}, {}, np.zeros(3))


@pytest.mark.slow
def test_environments_from_robosuite_1_4_files_run_as_made():
    absolute = make_env(lift_1_4(control_delta=False))
    assert absolute.unwrapped.robots[0].part_controllers["right"].input_type == "absolute"
    assert absolute.horizon == 400  # robomimic's rollout horizon for Lift; the file gives none
    absolute.close()
    given = make_env({**lift_1_4(), "env_kwargs": {**lift_1_4()["env_kwargs"], "horizon": 123}})
    assert given.horizon == 123
    given.close()


def test_data_from_another_robosuite_version_warns_naming_both():
    with pytest.warns(RobosuiteVersionWarning, match=rf"robosuite 1\.4\.1, the installed robosuite is {robosuite.__version__}"):
        make_env(lift_1_4()).close()


@pytest.fixture(scope="module", params=["lift", "can", "square"])
def task_files(request, tmp_path_factory):
    """(our file, its v1.4.1-style copy) of one task."""
    directory = tmp_path_factory.mktemp(request.param)
    ours, old = directory / "ours.hdf5", directory / "v141.hdf5"
    assert main(["demos", "--task", request.param, "--episodes", "1", "--out", str(ours), "--seed", "1"]) == 0
    write_robosuite_1_4_copy(ours, old)
    return ours, old


@pytest.mark.slow
def test_replayed_states_give_the_stored_observations_of_either_version(task_files, tmp_path):
    """Evaluation computes from the stored states of our file and of its v1.4.1-style copy every stored
    observation exactly; read with 1.5's definitions instead, the copy's `object` would differ by
    centimetres or more."""
    ours, old = task_files
    for path, version in ((ours, robosuite.__version__), (old, "1.4.1")):
        differences = observation_differences(path)
        assert differences["env_version"] == version
        assert set(differences["keys"]) >= {"object", "robot0_eef_pos", "robot0_eef_vel_lin", "robot0_joint_pos"}
        assert max(differences["keys"].values()) < 1e-6, differences  # float rounding of the model file
    untranslated = tmp_path / "untranslated.hdf5"
    write_robosuite_1_4_copy(ours, untranslated)
    with h5py.File(untranslated, "r+") as file:
        env_args = json.loads(file["data"].attrs["env_args"])
        file["data"].attrs["env_args"] = json.dumps({**env_args, "env_version": robosuite.__version__})
    assert observation_differences(untranslated)["keys"]["object"] > 0.05


@pytest.mark.slow
def test_stored_actions_replay_within_a_millimetre_under_the_translated_controller(task_files):
    ours, old = task_files
    env = make_env(read_env_args(old))
    with h5py.File(old, "r") as file:
        demo = file["data/demo_0"]
        states, actions = demo["states"][()], demo["actions"][()]
        env.reset_to(states[0], demo.attrs["model_file"])
        hand = env.unwrapped.robots[0].eef_site_id["right"]
        stored = []
        replayed = []
        for step, action in enumerate(actions[:-1]):
            env.step(action)
            replayed.append(env.unwrapped.sim.data.site_xpos[hand].copy())
            env_state = env.get_state()
            env.observe_state(states[step + 1])
            stored.append(env.unwrapped.sim.data.site_xpos[hand].copy())
            env.unwrapped.sim.set_state_from_flattened(env_state)
            env.unwrapped.sim.forward()
    env.close()
    assert np.abs(np.array(replayed) - np.array(stored)).max() < 1e-3


@pytest.mark.slow
def test_mvp_eval_runs_a_checkpoint_trained_on_a_v141_style_file(tmp_path):
    ours, old = tmp_path / "ours.hdf5", tmp_path / "v141.hdf5"
    assert main(["demos", "--task", "lift", "--episodes", "2", "--out", str(ours)]) == 0
    write_robosuite_1_4_copy(ours, old)
    checkpoint = tmp_path / "ckpt"
    assert main(["train", "--dataset", str(old), "--out", str(checkpoint), "--obs-keys",
                 "robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object", "--steps", "5", "--batch-size", "16",
                 "--horizon", "4", "--device", "cpu", "--no-progress"]) == 0
    assert read_checkpoint_info(checkpoint).env_args["env_version"] == "1.4.1"  # the data's robosuite, recorded
    result = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(checkpoint), "--episodes", "1", "--max-steps", "20", "--json",
                 str(result), "--device", "cpu", "--no-progress"]) == 0
    assert json.loads(result.read_text())["episodes"] == 1


def replay_rows(result: dict) -> list[str]:
    """The rows of docs/robomimic.md's replay table, from benchmarks/results/robomimic_replay.json."""
    names = {"ours": "our file", "v141_style": "its v1.4.1-style copy",
             "v141_style_read_as_1_5": "the copy read with 1.5's definitions"}
    rows = []
    for task, files in result["tasks"].items():
        for name, replay in files.items():
            largest = replay["largest_difference"]
            others = max(value for key, value in largest.items() if key != "object")
            rows.append(f"| {task} | {names[name]} ({replay['env_version']}) | {replay['steps']} | "
                        f"{largest['object']:.2g} | {others:.2g} |")
    return rows


def test_the_docs_replay_table_is_the_committed_result():
    root = Path(__file__).parents[1]
    result = json.loads((root / "benchmarks/results/robomimic_replay.json").read_text())
    doc = (root / "docs/robomimic.md").read_text()
    assert result["command"] in doc
    for row in replay_rows(result):
        assert row in doc


def test_the_docs_v141_lift_evaluations_are_the_committed_results():
    root = Path(__file__).parents[1]
    doc = (root / "docs/robomimic.md").read_text()
    for name in ("robomimic_v141_lift_eval", "robomimic_v141_lift_eval_as_1_5"):
        evaluation = json.loads((root / f"benchmarks/results/{name}.json").read_text())
        low, high = evaluation["success_rate_ci95"]
        assert evaluation["settings"]["max_steps"] == 400  # Robomimic's horizon for Lift; the file gives none
        assert (f"| {evaluation['successes']}/{evaluation['episodes']} ({low:.2f}-{high:.2f}) | "
                f"`benchmarks/results/{name}.json` |") in doc
