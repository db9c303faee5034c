"""The package's layers: what a process loads for the job it does, and which modules import which."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mvp_ros"
# Import cycles the package still has (as import_cycles gives them); none since the training loops
# moved into the training layer (mvp_ros.training) above policy/ and rl/.
KNOWN_CYCLES: set[tuple[str, ...]] = set()
# The layers below the training layer: none of them imports it.
BELOW_TRAINING = ("mvp_ros.policy", "mvp_ros.rl", "mvp_ros.data", "mvp_ros.sim")


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
    modules = loaded_modules("import mvp_ros.ros.sim_node, mvp_ros.ros.closed_loop, mvp_ros.ros.closed_loop_client")
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


def test_reading_a_checkpoint_config_loads_no_torch() -> None:
    modules = loaded_modules("from mvp_ros.policy.checkpoint_files import read_checkpoint_document\n"
                             "from mvp_ros.resources import package_file\n"
                             "assert read_checkpoint_document(package_file('models', 'lift_lowdim'))['env_args']")
    assert "mvp_ros.policy.checkpoint_files" in modules and "torch" not in modules


def test_mvp_demo_reads_a_camera_checkpoint_without_torch() -> None:
    modules = loaded_modules(
        "import argparse\n"
        "from mvp_ros.resources import package_file\n"
        "from mvp_ros.ros.closed_loop import _check_arguments\n"
        "steps, contract_path, _ = _check_arguments(argparse.Namespace(\n"
        "    episodes=1, max_steps=0, checkpoint=package_file('models', 'lift_image'), contract=None))\n"
        "assert contract_path.name == 'panda_sim_camera_contract.yaml' and steps > 0")
    assert "mvp_ros.ros.closed_loop" in modules and "torch" not in modules


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports, read with ast from every .py file below it.

    Every import statement counts, wherever it is: at module level, inside functions (the lazy
    imports) and under TYPE_CHECKING alike. Relative imports are resolved; `from a import b` counts
    module a.b if there is one, else a. Importing a.b is not counted as importing the package a."""
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        # The package a relative import starts from: the module's own if it is a package's __init__.
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                origin = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]) if node.level else node.module
                origin = origin.rstrip(".")
                imported.update(f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in files else origin
                                for alias in node.names)
        graph[name] = imported & files.keys()
    return graph


def import_cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every import cycle: the modules on it in import order (each imports the next, the last the
    first), starting from the one whose name sorts first. A depth-first walk from each module that
    enters only modules whose names sort after it, so each cycle is found once, from its first module."""
    cycles = set()

    def walk(path: list[str]) -> None:
        for imported in graph[path[-1]]:
            if imported == path[0]:
                cycles.add(tuple(path))
            elif imported > path[0] and imported not in path:
                walk([*path, imported])

    for module in graph:
        walk([module])
    return cycles


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def test_the_import_graph_reads_relative_lazy_and_cyclic_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .sub import leaf\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "leaf.py").write_text("import numpy\nfrom .. import top\n")
    (package / "top.py").write_text("def lazy():\n    from pkg.sub.leaf import name\n    import pkg.sub\n")
    (package / "alone.py").write_text("from . import alone\nimport os.path\n")
    graph = import_graph(package)
    assert graph == {"pkg": {"pkg.sub.leaf"}, "pkg.sub": set(), "pkg.sub.leaf": {"pkg.top"},
                     "pkg.top": {"pkg.sub.leaf", "pkg.sub"}, "pkg.alone": {"pkg.alone"}}
    assert import_cycles(graph) == {("pkg.sub.leaf", "pkg.top"), ("pkg.alone",)}
    assert import_cycles({"a": {"b"}, "b": {"c", "a"}, "c": {"a"}}) == {("a", "b"), ("a", "b", "c")}


def test_the_package_has_no_import_cycle_but_the_known_ones() -> None:
    cycles = import_cycles(import_graph(PACKAGE))
    assert cycles == KNOWN_CYCLES, f"import cycles: {' ; '.join(' -> '.join(cycle) for cycle in sorted(cycles))}"


def test_no_data_module_imports_the_simulation() -> None:
    graph = import_graph(PACKAGE)
    assert graph["mvp_ros.sim.write_demos"] >= {"mvp_ros.sim.experts", "mvp_ros.data.robomimic"}
    offending = {module: sorted(imported for imported in graph[module] if within(imported, "mvp_ros.sim"))
                 for module in graph if within(module, "mvp_ros.data")}
    assert not any(offending.values()), offending


def test_nothing_below_the_training_layer_imports_it() -> None:
    graph = import_graph(PACKAGE)
    assert graph["mvp_ros.training.rl"] >= {"mvp_ros.rl.learner", "mvp_ros.training.workspace"}
    offending = {module: sorted(imported for imported in graph[module] if within(imported, "mvp_ros.training"))
                 for module in graph if any(within(module, layer) for layer in BELOW_TRAINING)}
    assert not any(offending.values()), offending
