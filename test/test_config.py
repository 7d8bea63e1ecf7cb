"""config.py: the one input-size rule, device spelling and choice checks that every entry point uses."""

from __future__ import annotations

import pytest

from defm_ros.config import INPUT_SIDE, check_choice, check_device, check_input_size, parse_size


@pytest.mark.parametrize(("text", "size"), [("224", (224, 224)), ("224x308", (224, 308)), ("480X640", (480, 640)),
                                            ("14", (14, 14)), ("4096x14", (4096, 14)), ("200,300", (200, 300))])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["abc", "10", "0", "-224", "224x", "1x2x3", "13x224", "4097", "22.5", ""])
def test_parse_size_refuses_with_the_rule(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize("size", [(13, 224), (224, 5000), (224,), (224, 224, 3), ("a", 2), (224.5, 224), None])
def test_check_input_size_refuses(size):
    with pytest.raises(ValueError, match=rf"{INPUT_SIDE[0]} <= H, W <= {INPUT_SIDE[1]}"):
        check_input_size(size)


def test_check_input_size_takes_lists_and_integral_floats():
    assert check_input_size([224, 308]) == (224, 308)
    assert check_input_size((224.0, 308)) == (224, 308)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_devices(device):
    assert check_device(device) == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "", "mps", 0])
def test_bad_devices(device):
    with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
        check_device(device)


def test_check_choice_names_the_choices():
    assert check_choice("precision", "fp16", ("fp32", "fp16")) == "fp16"
    with pytest.raises(ValueError, match=r"precision must be one of \['fp32', 'fp16'\], got 'fp64'"):
        check_choice("precision", "fp64", ("fp32", "fp16"))
