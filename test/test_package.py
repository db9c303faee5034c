"""The same tree installs as an ament_python package with colcon and as a pip package."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if (REPO / line).is_file()]


# What each third-party module the package imports is called in rosdep (rosdistro's rosdep keys).
ROSDEP_KEYS = {
    **{package: package for package in (
        "rclpy", "builtin_interfaces", "rcl_interfaces", "lifecycle_msgs", "diagnostic_msgs", "std_srvs", "rosgraph_msgs",
        "std_msgs", "sensor_msgs", "geometry_msgs", "trajectory_msgs", "tf2_msgs", "launch", "launch_ros")},
    "tf2_ros": "tf2_ros_py",  # the Python tf2_ros module; the tf2_ros package is C++ only
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "h5py": "python3-h5py",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "cv2": "python3-opencv",
    "PIL": "python3-pil",
}
# Installed with pip from requirements.txt (torch by the Makefile's TORCH_SPEC), not by rosdep:
# module -> distribution.
PIP_INSTALLED = {"torch": None, "safetensors": "safetensors", "rosbags": "rosbags", "mujoco": "mujoco", "robosuite": "robosuite",
                 "gymnasium": "gymnasium"}
INTERFACE_TYPE = re.compile(r"([a-z][a-z0-9_]*)/(msg|srv|action)/[A-Z][A-Za-z0-9]*")


def imported_modules(paths: list[Path]) -> set[str]:
    """Top-level modules the files import, also inside functions, through importlib.import_module("..."),
    and as interface types named in strings ("tf2_msgs/msg/TFMessage"), which are imported by name."""
    modules = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                modules.add(node.args[0].value.split(".")[0])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and INTERFACE_TYPE.fullmatch(node.value):
                modules.add(node.value.split("/")[0])
    return modules - set(sys.stdlib_module_names) - {"mvp_ros", "__future__"}


def requirement_pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file whose every requirement is `name==version`."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9_.+-]*)", line.strip())
            assert match, f"{path.name}: {line!r} is not pinned as name==version"
            pins[match[1].lower()] = match[2]
    return pins


def test_package_xml_is_a_valid_format_3_ament_python_package():
    package = parse_package(REPO / "package.xml")
    package.validate()
    assert package.package_format == 3 and package.name == "mvp_ros"
    assert [export.content for export in package.exports if export.tagname == "build_type"] == ["ament_python"]
    assert (REPO / "resource" / "mvp_ros").is_file()


def test_package_xml_declares_every_runtime_import_by_its_rosdep_key():
    imported = imported_modules(sorted((REPO / "mvp_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.launch.py")))
    unknown = imported - set(ROSDEP_KEYS) - set(PIP_INSTALLED)
    assert not unknown, (f"the package imports {sorted(unknown)}: add each one's rosdep key to package.xml and to ROSDEP_KEYS"
                         " here, or, if rosdep cannot install it, pin it in requirements.txt and add it to PIP_INSTALLED")
    package = parse_package(REPO / "package.xml")
    declared = {dependency.name for dependency in package.exec_depends}
    expected = {ROSDEP_KEYS[module] for module in imported & set(ROSDEP_KEYS)}
    assert declared == expected, f"package.xml: missing {sorted(expected - declared)}, not imported {sorted(declared - expected)}"
    assert not {dependency.name for dependency in package.build_depends + package.build_export_depends}, (
        "an ament_python package builds nothing against its dependencies: use <exec_depend>")
    assert {dependency.name for dependency in package.test_depends} == {"python3-pytest", "python3-pytest-timeout"}
    comment = (REPO / "package.xml").read_text()
    for module in sorted(imported & set(PIP_INSTALLED)):
        assert f"{module} " in comment, f"package.xml's comment does not say how {module} is installed"


def test_requirements_pin_runtime_and_test_dependencies_separately():
    runtime, tests = requirement_pins(REPO / "requirements.txt"), requirement_pins(REPO / "requirements-test.txt")
    assert not set(runtime) & set(tests), f"listed in both requirements files: {sorted(set(runtime) & set(tests))}"
    for distribution in filter(None, PIP_INSTALLED.values()):
        assert distribution in runtime, f"requirements.txt does not pin {distribution}"
    assert {"pytest", "pytest-timeout", "ruff", "colcon-core", "catkin-pkg"} <= set(tests)
    assert not {"pytest", "ruff"} & set(runtime)
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\):.*\brequirements\.txt\b.*\brequirements-test\.txt\b", makefile, re.MULTILINE), (
        "make setup must run again when either requirements file changes")
    assert "-r requirements.txt -r requirements-test.txt" in makefile


def test_license_file_is_the_apache_2_license_the_package_declares():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a notice
    assert parse_package(REPO / "package.xml").licenses == ["Apache-2.0"]
    assert 'license="Apache-2.0"' in (REPO / "setup.py").read_text()


@pytest.mark.parametrize("output", [
    "data/lift.hdf5", "runs/lift_mvp/model.safetensors", "bags/episode_001/metadata.yaml", "demo_results.json",
    "results.json", "lift.mp4", "bench_gpu.json", "bench_gpu.png", "gpu_check_results/gpu_check.log", ".ruff_cache/x",
])
def test_gitignore_covers_what_the_commands_write_into_the_repository(output):
    """What the README's examples, `make demo`, benchmarks/gpu_check.sh and ruff write: never committed by
    accident, and never copied into the colcon workspace of the test below."""
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", output], cwd=REPO)
    assert ignored.returncode == 0, f".gitignore does not cover {output}"


def test_learning_core_never_imports_rclpy():
    for package in ("policy", "data", "rl", "sim"):
        for path in (REPO / "mvp_ros" / package).rglob("*.py"):
            text = path.read_text()
            assert "import rclpy" not in text and "from rclpy" not in text, f"{path} imports rclpy"


@pytest.mark.slow
def test_colcon_builds_the_package_in_a_fresh_workspace(tmp_path):
    source = tmp_path / "ws" / "src" / "mvp_ros"
    for name in tracked_files():
        destination = source / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination)
    workspace = tmp_path / "ws"
    environment = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    build = subprocess.run([str(VENV_BIN / "colcon"), "build", "--event-handlers", "console_direct-"],
                           cwd=workspace, env=environment, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr

    prefix = workspace / "install" / "mvp_ros"
    share = prefix / "share" / "mvp_ros"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "mvp_ros").is_file()
    assert (share / "package.xml").is_file()
    for directory in ("config", "launch"):
        for path in (REPO / directory).glob("*"):
            if path.suffix in (".yaml", ".py"):
                assert (share / directory / path.name).is_file(), f"{directory}/{path.name} not installed"
    for path in (REPO / "models").glob("*/*.*"):
        assert (share / "models" / path.parent.name / path.name).is_file(), f"{path} not installed"
    executable = prefix / "lib" / "mvp_ros" / "mvp"  # where `ros2 run mvp_ros mvp` looks
    assert executable.is_file()

    site_packages = next(prefix.glob("lib/python3*/site-packages"))
    installed = subprocess.run([sys.executable, "-c", "import mvp_ros, sys; print(mvp_ros.__file__)"],
                               env={**environment, "PYTHONPATH": str(site_packages)}, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert str(site_packages) in installed.stdout
    contract = subprocess.run([sys.executable, "-c",
                               "from mvp_ros.ros.closed_loop import DEFAULT_CONTRACT; print(DEFAULT_CONTRACT)"],
                              env={**environment, "PYTHONPATH": str(site_packages)}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    assert contract.stdout.strip() == str(share / "config" / "panda_sim_contract.yaml"), contract.stderr
    help_text = subprocess.run([sys.executable, str(executable), "--help"], capture_output=True, text=True,
                               env={**environment, "PYTHONPATH": str(site_packages)}, timeout=120)
    assert help_text.returncode == 0 and "train" in help_text.stdout, help_text.stderr
