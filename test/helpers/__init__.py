"""Code the tests share: seeded checkpoints, messages, bags, the upstream oracles and the ROS-process helpers.

Tests import these modules and never each other. Only `rosgraph` needs rclpy (a test module importing it is
skipped without it); importing any other helper needs no ROS.
"""
