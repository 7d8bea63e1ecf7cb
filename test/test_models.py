"""The zoo: every variant loads an official-format checkpoint strictly and matches upstream (SPEC §2)."""

from __future__ import annotations

import pickle

import pytest
import torch

from defm_ros.models import MODELS, build_model, get_spec
from defm_ros.models.weights import CheckpointError, load_strict, read_state_dict, state_shapes

from .helpers.checkpoints import save_defm, write_checkpoint
from .helpers.oracles import upstream_forward, upstream_model

TOL = 1e-5
CNNS = [n for n, s in MODELS.items() if not s.is_vit]


def _parity(name: str, sizes, tmp_path, wrap=False, level="P4"):
    ref = upstream_model(name)
    ckpt = tmp_path / f"{name}.pth"
    save_defm(ref.state_dict(), ckpt, wrap=wrap)
    ours = build_model(name, dense_level=level).eval()
    load_strict(ours, read_state_dict(ckpt), get_spec(name), str(ckpt))
    for h, w in sizes:
        x = torch.randn(2, 3, h, w)
        rc, rd = upstream_forward(ref, x, level)
        with torch.no_grad():
            oc, od = ours(x)
        assert oc.shape == rc.shape and od.shape == rd.shape
        assert (oc - rc).abs().max().item() <= TOL, (name, h, w)
        assert (od - rd).abs().max().item() <= TOL, (name, h, w)


@pytest.mark.parametrize("name", CNNS)
def test_cnn_parity_square_and_non_square(name, tmp_path):
    _parity(name, [(224, 224), (224, 320)], tmp_path, wrap=name.endswith("b0"))


@pytest.mark.parametrize("level", ["P3", "P5"])
def test_cnn_other_dense_levels(level, tmp_path):
    _parity("defm_resnet18", [(224, 320)], tmp_path, level=level)


def test_vit_s_parity_square_and_non_square(tmp_path):
    _parity("defm_vit_s14", [(224, 224), (224, 308)], tmp_path, wrap=True)


def test_vit_l_parity_small_size(tmp_path):
    _parity("defm_vit_l14", [(112, 154)], tmp_path)


def test_specs_match_built_models():
    norms = {"vit": ("norm.weight",) * 2, "theia": ("layernorm.weight",) * 2,
             "lingbot": ("encoder.backbone.norm.weight", "encoder.output_projections.0.bias")}
    for name, spec in MODELS.items():
        sd = state_shapes(name)
        cls_key, dense_key = norms.get(spec.family, ("norm_cls.weight", "norm_patch.weight"))
        assert sd[cls_key] == (spec.cls_dim,), name
        assert sd[dense_key] == (spec.dense_dim,), name


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = build_model("defm_resnet18").state_dict()
    del sd["fpn.proj.0.weight"]
    sd["extra.head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"missing keys: fpn\.proj\.0\.weight.*unexpected keys: extra\.head"):
        load_strict(build_model("defm_resnet18"), sd, get_spec("defm_resnet18"), "ckpt")


def test_other_variant_is_recognised(tmp_path):
    sd = build_model("defm_resnet34").state_dict()
    with pytest.raises(CheckpointError, match="looks like a defm_resnet34 checkpoint"):
        load_strict(build_model("defm_resnet18"), sd, get_spec("defm_resnet18"), "ckpt")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_code_carrying_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(path)
    assert "pwned" not in capsys.readouterr().out


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    good = tmp_path / "good.pth"
    write_checkpoint(good, "defm_efficientnet_b0", seed=None)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(bad)


def test_non_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="state dict"):
        read_state_dict(path)


def test_garbage_file_is_not_called_code(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"garbage, not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint.*nothing in it was run") as exc:
        read_state_dict(path)
    assert "run as code" not in str(exc.value)
