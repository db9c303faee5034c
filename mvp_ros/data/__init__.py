"""ROS-free data: Robomimic HDF5, rosbag2 conversion, the observation contract."""
