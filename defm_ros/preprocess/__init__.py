"""What a camera frame becomes before the network: the depth log normalisation (depth.py), the colour
resize and ImageNet normalisation (color.py), the RGB-D pack (rgbd.py), and the banded resize they share."""
