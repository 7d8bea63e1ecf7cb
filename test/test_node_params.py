"""The node's parameter table turned into the core's arguments, and its checks, without a ROS graph."""

from __future__ import annotations

import pytest

from defm_ros.node.params import PARAMS, check_all, encoder_args, refiner_args, refusal

DEFAULTS = {name: default for name, (default, _, _) in PARAMS.items()}


def test_defaults_build_the_default_encoder_lazily_with_no_refiner():
    import inspect

    from defm_ros.encoder import Encoder

    args = encoder_args(DEFAULTS)
    assert set(args) <= set(inspect.signature(Encoder).parameters)
    assert args["weights"] is None and args["input_size"] is None and args["lazy"] is True
    assert args["strict"] is False and args["model"] == DEFAULTS["model"]
    assert refiner_args(DEFAULTS) is None
    assert check_all(DEFAULTS) == []


def test_set_values_reach_the_encoder_and_the_refiner():
    import inspect

    from defm_ros.refiner import Refiner

    p = {**DEFAULTS, "weights": "/m/x.pth", "input_size": [160, 320], "strict_device": True, "refine": "lingbot",
         "refine_weights": "", "refine_tokens": 900, "device": "cuda:1", "precision": "fp16"}
    args = encoder_args(p)
    assert args["weights"] == "/m/x.pth" and args["input_size"] == (160, 320) and args["strict"] is True
    refine = refiner_args(p)
    assert set(refine) <= set(inspect.signature(Refiner).parameters)
    assert refine == {"model": "lingbot_depth_vitl14", "weights": None, "device": "cuda:1", "precision": "fp16",
                      "num_tokens": 900, "strict": True, "lazy": True}


@pytest.mark.parametrize(("change", "problem"), [
    ({"stale_warn_s": 9.0}, "stale_warn_s must be smaller than stale_error_s"),
    ({"model": "theia_small", "refine": "lingbot"}, "refine feeds refined depth to a depth model"),
    ({"model": "theia_small", "transport": "compressedDepth"}, "does not carry color, which theia_small takes"),
    ({"publish_points": True}, "publish_points publishes the refined depth's points: set refine too"),
])
def test_rules_that_span_two_parameters(change, problem):
    assert any(problem in p for p in check_all({**DEFAULTS, **change}))


def test_points_with_a_refiner_are_fine():
    assert check_all({**DEFAULTS, "refine": "lingbot", "publish_points": True}) == []


def test_a_configured_node_refuses_model_parameters_but_takes_runtime_ones():
    assert refusal([("publish_pca", True)], "active") is None
    assert "read-only while the node is active" in refusal([("model", "defm_vit_s14")], "active")
    assert refusal([("model", "defm_vit_s14")], "unconfigured") is None
    assert "model must be one of" in refusal([("model", "defm_nope")], "unconfigured")
    # Ranges are the descriptors' (rclpy refuses them before this callback): not checked twice.
