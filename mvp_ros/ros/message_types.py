"""ROS 2 message classes by type name (`sensor_msgs/msg/JointState`), for the nodes that subscribe
to whatever a contract names."""
from __future__ import annotations

import importlib


def import_message_class(type_name: str) -> type:
    """The rclpy message class for `pkg/msg/Name`; ModuleNotFoundError names the missing package."""
    package, interface, name = type_name.split("/")
    try:
        module = importlib.import_module(f"{package}.{interface}")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"Python package '{package}' is not installed (needed for {type_name}); install its"
            " ROS 2 wheel or source a ROS 2 install that provides it"
        ) from error
    if not hasattr(module, name):
        raise ModuleNotFoundError(f"package '{package}' has no message {name} (needed for {type_name})")
    return getattr(module, name)
