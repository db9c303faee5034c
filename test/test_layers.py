"""The package's layers: what a process loads for the job it does."""
from __future__ import annotations

import subprocess
import sys


def loaded_modules(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_the_policy_node_process_loads_no_bag_library_no_simulator_and_no_evaluation_command() -> None:
    modules = loaded_modules("import mvp_ros.ros.policy_node, mvp_ros.policy, mvp_ros.tick.core")
    assert "mvp_ros.tick.core" in modules
    for unwanted in ("rosbags", "robosuite", "mujoco", "mvp_ros.sim.evaluate", "mvp_ros.sim.rollout",
                     "mvp_ros.ros.recorder_node", "h5py"):
        assert unwanted not in modules, unwanted


def test_the_tick_core_imports_no_ros() -> None:
    modules = loaded_modules("import mvp_ros.tick.core, mvp_ros.tick.commands, mvp_ros.tick.observations")
    assert not {name for name in modules if name.startswith(("rclpy", "mvp_ros.ros"))}


def test_the_simulation_bridge_and_mvp_demo_load_no_torch_and_no_evaluation_command() -> None:
    modules = loaded_modules("import mvp_ros.ros.sim_node, mvp_ros.ros.demo, mvp_ros.ros.demo_client")
    assert {"mvp_ros.ros.sim_node", "mvp_ros.sim.success"} <= modules
    for unwanted in ("torch", "mvp_ros.sim.evaluate", "mvp_ros.policy"):
        assert unwanted not in modules, unwanted


def test_the_simulation_bridge_builds_its_environment_without_torch_or_the_evaluation_command() -> None:
    modules = loaded_modules(
        "import os\n"
        "os.environ.setdefault('MUJOCO_GL', 'egl')\n"
        "from mvp_ros.data.contract import load_contract\n"
        "from mvp_ros.resources import package_file\n"
        "from mvp_ros.ros.sim_node import bridge_env\n"
        "from mvp_ros.sim.envs import env_args_for\n"
        "contract = load_contract(package_file('config', 'panda_sim_contract.yaml'))\n"
        "bridge_env(env_args_for('lift', images=False), contract, seed=0).close()")
    assert {"robosuite", "mvp_ros.sim.envs"} <= modules
    for unwanted in ("torch", "mvp_ros.sim.evaluate", "mvp_ros.policy"):
        assert unwanted not in modules, unwanted
