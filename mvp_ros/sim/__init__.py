"""ROS-free simulation: robosuite environments built from Robomimic `env_args`, scripted experts,
rollouts, success rates."""
