"""Messages to arrays and back, without rclpy: depth (depth.py) and colour (color.py) image codecs, and organised
point clouds and camera matrices (points.py)."""
