"""mvp_ros: train and deploy Mean Velocity Policies (one-step action-chunk generation) on ROS 2."""

__version__ = "0.1.0"
