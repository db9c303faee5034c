"""rclpy nodes only: thin adapters between ROS 2 topics and `mvp_ros.policy.Policy`."""
