"""ROS-free learning core: networks, MVP and baseline heads, normalization, checkpoints, `Policy`."""
