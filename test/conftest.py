from __future__ import annotations

import pytest

from defm_ros.extract import build_encoder
from defm_ros.sample_data import data_root

from .helpers.bags import write_rgbd_bag
from .helpers.checkpoints import write_checkpoint
from .helpers.scenes import depth_frames, scene


@pytest.fixture(scope="session")
def shared_data():
    root = data_root()
    if root is None:
        pytest.skip("shared depth data not found (set DEFM_ROS_DATA or keep ../shared/data beside the clone)")
    return root


@pytest.fixture(scope="module")
def depth_pngs(shared_data):
    """The RGB-D scenes' raw depth (uint16 mm): what the extraction, fleet and replay bags record."""
    return depth_frames(shared_data)


@pytest.fixture(scope="module")
def rgbd_bag(tmp_path_factory, shared_data):
    """Aligned RealSense topics of scenes 1 and 2 (bags.write_rgbd_bag): (path, the good pairs)."""
    scenes = [scene(shared_data, s)[:2] for s in ("1", "2")]
    path = tmp_path_factory.mktemp("rgbd") / "rs"
    return path, write_rgbd_bag(path, scenes)


@pytest.fixture(scope="module")
def lingbot_ckpt(tmp_path_factory):
    """A seeded LingBot-Depth model.pt of the small config, for the refiner and the RGB-D encoder."""
    return write_checkpoint(tmp_path_factory.mktemp("lingbot") / "model.pt", "lingbot_depth_vitl14")


@pytest.fixture(scope="module")
def encoder():
    """A random-weight DeFM R18 at a 64x64 input, for extraction tests: small enough to keep them fast (decoding
    still sees the frames' own size). A module may define its own `encoder` (test_hardening does)."""
    return build_encoder(model="defm_resnet18", weights="random", input_size=(64, 64))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach the network: the Hub is treated as offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ros_domain():
    """Real rclpy in this process, on a domain of its own so parallel runs don't cross-talk."""
    import os

    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
    os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 200)
    rclpy.init()
    yield os.environ["ROS_DOMAIN_ID"]
    rclpy.shutdown()


@pytest.fixture
def probe(ros_domain):
    """A test-side node recording topics, spun in the background (test.helpers.rosgraph.Probe)."""
    from .helpers.rosgraph import Probe

    p = Probe()
    yield p
    p.close()
