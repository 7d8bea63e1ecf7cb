"""The ROS layer: everything that imports rclpy or serves only the node (parameters, topics, the work
loop, statistics, diagnostics, publisher handover, the launch arguments). Nothing below imports it."""
