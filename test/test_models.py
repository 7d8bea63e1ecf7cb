"""The zoo: every variant loads an official-format checkpoint strictly and matches upstream (SPEC §2)."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defm_ros.models import MODELS, build_model, get_spec, use_fused_attention
from defm_ros.models.layers import SCALE_QUERIES, SCALE_SCORES, Attention, PositionEmbedded, resample_pos_embed
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


# --- the shared transformer layers (models/layers.py) -----------------------------------------------------------


def _resized_grid(pos: torch.Tensor, rows: int, cols: int, **how) -> torch.Tensor:
    """The reference: the class token, then the patch grid resized as an image by F.interpolate (bicubic)."""
    grid = math.isqrt(pos.shape[1] - 1)
    image = pos[0, 1:].T.reshape(1, -1, grid, grid)
    patch = F.interpolate(image, mode="bicubic", **how).flatten(2).transpose(1, 2)
    return torch.cat((pos[:, :1], patch), dim=1)


def test_resample_pos_embed_is_the_bicubic_resize_each_upstream_does():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 16 * 16, 8)
    assert resample_pos_embed(pos, 16, 16, torch.bfloat16) is pos  # the pretraining grid: the tensor, uncast
    dinov2 = resample_pos_embed(pos, 12, 20, torch.float32, offset=0.1)  # by the scale (size + 0.1) / 16
    assert torch.equal(dinov2, _resized_grid(pos, 12, 20, scale_factor=(12.1 / 16, 20.1 / 16)))
    assert not torch.allclose(dinov2, _resized_grid(pos, 12, 20, size=(12, 20)))
    registers = resample_pos_embed(pos, 12, 20, torch.float32, antialias=True)  # to the size, antialiased
    assert torch.equal(registers, _resized_grid(pos, 12, 20, size=(12, 20), antialias=True))
    half = pos.to(torch.bfloat16)
    up = resample_pos_embed(half, 7, 9, torch.bfloat16)  # DINOv2: in float32, then cast
    assert torch.equal(up, _resized_grid(half.float(), 7, 9, size=(7, 9)).bfloat16())
    own = resample_pos_embed(half, 7, 9, torch.float32, upcast=False)  # transformers: in the embedding's dtype
    assert torch.equal(own, _resized_grid(half, 7, 9, size=(7, 9)).float())


@pytest.mark.parametrize(("explicit", "fused"), [(None, None), (SCALE_QUERIES, False), (SCALE_QUERIES, True),
                                                 (SCALE_SCORES, False), (SCALE_SCORES, True)])
def test_attention_masked_keys_are_as_if_absent(explicit, fused):
    """The kept tokens' outputs equal attention over the kept tokens alone, in the fused form and in either
    explicit one: LingBot's padded attention (one length per frame) rests on it."""
    torch.manual_seed(0)
    attn = Attention(16, 2, explicit=explicit).eval()
    if fused is not None:
        attn.fused_attention = fused
    x = torch.randn(1, 10, 16)
    keep = torch.tensor([[True] * 6 + [False, True, False, False]])
    with torch.no_grad():
        got, alone = attn(x, keep)[keep], attn(x[keep][None])[0]
    assert (got - alone).abs().max() <= 1e-6


def test_only_attention_with_an_explicit_form_has_the_fused_flag():
    """use_fused_attention toggles DeFM's and Theia's attention; LingBot's is SDPA always, as upstream's."""
    dinov2, lingbot = Attention(8, 2, explicit=SCALE_QUERIES), Attention(8, 2, explicit=None)
    use_fused_attention(nn.Sequential(dinov2, lingbot), True)
    assert dinov2.fused_attention is True and not hasattr(lingbot, "fused_attention")
    split = Attention(8, 2, split_qkv=True, proj=False, explicit=SCALE_SCORES)  # transformers' names, no proj
    assert sorted(split.state_dict()) == [f"{p}.{t}" for p in ("key", "query", "value") for t in ("bias", "weight")]
    with pytest.raises(ValueError, match="explicit attention order"):
        Attention(8, 2, explicit="softmax_first")


def test_every_vit_family_model_has_the_position_embedding_hook():
    """Export freezes `position_embedding` into the graph (backends/graph.py); a CNN has none."""
    from defm_ros.models.lingbot import LingBotFeatures

    from .helpers.checkpoints import SMALL

    for net, length in ((build_model("defm_vit_s14"), 16), (build_model("theia_tiny"), 16),
                        (LingBotFeatures(SMALL), 15)):  # LingBot's is the patches' alone
        assert isinstance(net, PositionEmbedded)
        pos = net.position_embedding(3, 5, torch.float16)
        assert pos.dtype == torch.float16 and pos.shape[:2] == (1, length)
    assert not isinstance(build_model("defm_resnet18"), PositionEmbedded)
