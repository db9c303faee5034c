"""`mvp bench` (command.py) and its parts: policy_timing.py (inference and training, no ROS) and
ros_tick.py (the policy node in its own process, driven over DDS)."""
