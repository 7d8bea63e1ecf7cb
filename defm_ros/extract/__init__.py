"""Offline extraction (SPEC §7): recorded bags -> feature bags and training datasets (depth or colour).

Pure Python, no rclpy: rosbags reads rosbag2 (sqlite3, mcap) and ROS 1 bags and writes the mcap
feature bag. `extract_bag(path, out, **options)` processes one recording and is the unit of work
to hand to a distributed engine (Ray Data, Dask) for fleets of bags; see the README.
"""

from .job import build_encoder, extract_bag, output_dirs, output_name
from .result import ExtractInterrupted, ExtractResult
from .sinks import FeatureBag, FeatureDataset, OutputMismatchError, iter_chunks, load_dataset
from .source import BagReadError, BagSource, find_topics

__all__ = [
    "BagReadError", "BagSource", "ExtractInterrupted", "ExtractResult", "FeatureBag", "FeatureDataset",
    "OutputMismatchError", "build_encoder", "extract_bag", "find_topics", "iter_chunks",
    "load_dataset", "output_dirs", "output_name",
]
