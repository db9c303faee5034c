"""ament_python package that is also pip-installable (`pip install -e .`)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mvp_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Mean Velocity Policy: one-step generative action-chunk policies for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ]
    + [
        (f"share/{PACKAGE}/{directory}", glob(f"{directory}/*.*"))
        for directory in sorted(set(path.rsplit("/", 1)[0] for path in glob("models/*/*.*")))
    ],
    # ROS 2 packages (rclpy, messages) come from the ROS install or the ROS 2 wheels, and torch from
    # the build that suits the machine (CPU or CUDA), so neither is listed here: see requirements.txt.
    install_requires=[
        "numpy",
        "pyyaml",
        "h5py",
        "safetensors",
        "rosbags",
        "tqdm",
        "matplotlib",
    ],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "mvp = mvp_ros.cli:main",
            "recorder_node = mvp_ros.ros.recorder_node:main",
            "policy_node = mvp_ros.ros.policy_node:main",
            "sim_node = mvp_ros.ros.sim_node:main",
        ],
    },
)
