"""ROS-free simulation: robosuite environments built from Robomimic `env_args`, rollouts, success."""
