from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "defm_ros"


def models() -> list[tuple[str, list[str]]]:
    """models/ as it is at build time (README, and the checkpoints put there before `colcon build`),
    folders kept (theia_small/model.safetensors): the installed node looks in share/defm_ros/models."""
    files = sorted(p for p in Path("models").rglob("*") if p.is_file())
    folders = sorted({p.parent for p in files})
    return [(f"share/{PACKAGE}/{folder}", [str(p) for p in files if p.parent == folder]) for folder in folders]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        *models(),
    ],
    install_requires=["setuptools", "numpy", "pillow"],
    extras_require={"torch": ["torch", "torchvision", "huggingface_hub", "tqdm", "safetensors"],
                    "onnx": ["onnx", "onnxruntime"], "bags": ["rosbags", "mcap", "filelock", "pyarrow"],
                    "ray": ["ray>=2.9"]},
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="defm_ros maintainers",
    maintainer_email="defm-ros@example.com",
    description="DeFM depth foundation model features for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "defm_node = defm_ros.node.node:main",
            "defm-ros = defm_ros.cli:main",
        ],
    },
)
