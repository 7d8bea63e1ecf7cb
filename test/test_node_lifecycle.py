"""defm_node as a lifecycle node, driven over its real lifecycle services from this process.

autostart:=false: the node waits unconfigured; a failing configure (missing checkpoint) or activate
(CUDA required but absent) leaves it alive and says why; parameters that shape the model can be set
only while unconfigured; deactivate stops the outputs and activate brings them back; cleanup and
shutdown free everything, and the process still stops cleanly on SIGINT.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch

from .helpers.checkpoints import write_checkpoint
from .helpers.rosgraph import start_camera, start_node, stop

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

MODEL = "defm_efficientnet_b0"
SIZE = [64, 64]


class Lifecycle:
    """The standard lifecycle services of one node, called from the probe (as `ros2 lifecycle` does)."""

    def __init__(self, probe, node: str = "/defm_node") -> None:
        self.probe = probe
        self.get = probe.node.create_client(GetState, f"{node}/get_state")
        self.change = probe.node.create_client(ChangeState, f"{node}/change_state")
        self.params = probe.node.create_client(SetParameters, f"{node}/set_parameters")

    def _call(self, client, request, timeout: float = 60.0):
        future = client.call_async(request)
        assert self.probe.wait_for(future.done, timeout), f"{client.srv_name} timed out"
        return future.result()

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def set(self, name: str, value):
        from rcl_interfaces.msg import Parameter
        from rclpy.parameter import Parameter as P

        pv = P(name, value=value).get_parameter_value()
        return self._call(self.params, SetParameters.Request(parameters=[Parameter(name=name, value=pv)])).results[0]


def _status(diags, name: str):
    for arr in reversed(list(diags)):
        for s in arr.status:
            if s.name == name:
                return s
    return None


@pytest.fixture
def ckpt(tmp_path):
    return write_checkpoint(tmp_path / "b0.pth", MODEL)


def test_transitions_over_the_lifecycle_services(probe, ckpt, tmp_path, shared_data):
    topic = "/lc/depth"
    node = start_node({"model": MODEL, "weights": str(tmp_path / "missing.pth"), "input_size": SIZE,
                       "autostart": False}, {"~/depth": topic})
    lc = Lifecycle(probe)
    dense = probe.listen(Image, "/defm_node/features/dense")
    info = probe.listen(String, "/defm_node/features/info", latched=True)
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    cam = None
    try:
        assert lc.get.wait_for_service(60) and lc.change.wait_for_service(10)
        assert lc.state() == "unconfigured"
        assert probe.wait_for(lambda: _status(diags, "/defm_node") is not None, 10)
        assert _status(diags, "/defm_node").level == DiagnosticStatus.WARN

        # a configure that fails leaves the node alive and unconfigured, and says why
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == "unconfigured" and node.poll() is None
        assert probe.wait_for(lambda: "CheckpointError" in _status(diags, "/defm_node").message, 5)
        assert "pass its path with weights:=FILE" in _status(diags, "/defm_node").message  # the node's syntax
        assert _status(diags, "/defm_node").level == DiagnosticStatus.ERROR

        # model parameters are set while unconfigured, then configure loads them
        assert lc.set("weights", str(ckpt)).successful
        assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.state() == "inactive"
        refused = lc.set("model", "defm_resnet18")
        assert not refused.successful and "read-only while the node is inactive" in refused.reason
        assert lc.set("publish_pca", True).successful  # runtime parameters are fine in any state
        time.sleep(1.0)
        assert not info and not dense  # inactive: nothing is published

        assert lc.transition(Transition.TRANSITION_ACTIVATE) and lc.state() == "active"
        assert probe.wait_for(lambda: info, 10) and json.loads(info[0].data)["model"] == MODEL
        cam = start_camera(topic, "--rate", "5", "--count", "100")
        assert probe.wait_for(lambda: len(dense) >= 3, 60), stop(node)[1]

        # deactivate: the outputs stop although the camera goes on
        assert lc.transition(Transition.TRANSITION_DEACTIVATE) and lc.state() == "inactive"
        time.sleep(0.5)  # a batch in flight when deactivate came has published by now
        n = len(dense)
        time.sleep(2.0)
        assert len(dense) == n
        # and activate brings them back, with the camera still streaming
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        assert probe.wait_for(lambda: len(dense) >= n + 3, 30)

        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.transition(Transition.TRANSITION_CLEANUP) and lc.state() == "unconfigured"
        assert lc.set("model", "defm_resnet18").successful  # unconfigured again: settable
        assert lc.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) and lc.state() == "finalized"
        assert node.poll() is None
        node.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        code = node.wait(10)
        assert time.monotonic() - t0 < 2.0 and code == 0
    finally:
        if cam is not None:
            cam.kill()
        _, log = stop(node)
    assert "Traceback" not in log, log


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA, where cuda cannot be had")
def test_a_failing_activate_leaves_the_node_inactive_and_alive(probe, ckpt):
    node = start_node({"model": MODEL, "weights": str(ckpt), "input_size": SIZE, "autostart": False,
                       "device": "cuda", "strict_device": True})
    lc = Lifecycle(probe)
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    try:
        assert lc.change.wait_for_service(60)
        assert lc.transition(Transition.TRANSITION_CONFIGURE)  # the weights load on the CPU
        assert not lc.transition(Transition.TRANSITION_ACTIVATE)  # the device backend cannot be built
        assert lc.state() == "inactive" and node.poll() is None
        assert probe.wait_for(lambda: (s := _status(diags, "/defm_node")) is not None
                              and "DeviceUnavailableError" in s.message and "strict" in s.message, 5)
        assert lc.set("strict_device", False).successful is False  # still configured: read-only
        assert lc.transition(Transition.TRANSITION_CLEANUP) and lc.set("strict_device", False).successful
        assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.transition(Transition.TRANSITION_ACTIVATE)
        n = len(diags)

        def healthy() -> bool:  # the newest array: no node-level error, the stream active on the cpu
            fresh = list(diags)[n:]
            return bool(fresh) and [(s.name, {kv.key: kv.value for kv in s.values}.get("lifecycle_state"),
                                     s.hardware_id) for s in fresh[-1].status] == [
                ("defm_node: /defm_node/depth", "active", "cpu")]

        assert probe.wait_for(healthy, 5), list(diags)[-1]
    finally:
        code, log = stop(node)
    assert code == 0 and "CUDA is not available" in log, log
