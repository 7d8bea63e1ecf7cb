"""What a camera frame becomes before the network, each with its family's mean and std (base.py): DeFM's depth
log normalisation (depth.py), Theia's image processor (color.py), LingBot's RGB-D input (rgbd.py), and the
exportable resizes they share (resize.py)."""
