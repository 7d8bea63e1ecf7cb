"""Image messages to arrays and back, without rclpy: depth (depth.py) and colour (color.py) codecs."""
