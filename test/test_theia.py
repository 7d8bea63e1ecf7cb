"""Theia: our backbone against transformers' ViTModel (the oracle) on random weights, checkpoints in the
official safetensors layout (backbone.model.* plus translator heads), and strict-load errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers (the Theia test oracle) is not installed")
from transformers import ViTConfig, ViTModel  # noqa: E402

from defm_ros import Encoder  # noqa: E402
from defm_ros.models import build_model, get_spec  # noqa: E402
from defm_ros.models.weights import CheckpointError, load_strict, read_state_dict  # noqa: E402

from .helpers.checkpoints import save_theia, write_checkpoint  # noqa: E402

TOL = 1e-5
SIZES = {"theia_tiny": (192, 3), "theia_small": (384, 6), "theia_base": (768, 12)}
TEACHERS = ("facebook/dinov2-large", "openai/clip-vit-large-patch14", "google/vit-huge-patch14-224-in21k")


def deit_config(name: str, attn: str = "eager") -> ViTConfig:
    """facebook/deit-{tiny,small,base}-patch16-224's config (a ViTConfig), written out: no hub access."""
    dim, heads = SIZES[name]
    return ViTConfig(hidden_size=dim, num_hidden_layers=12, num_attention_heads=heads, intermediate_size=4 * dim,
                     hidden_act="gelu", layer_norm_eps=1e-12, image_size=224, patch_size=16, num_channels=3,
                     qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     attn_implementation=attn)


def oracle(name: str, seed: int = 0, attn: str = "eager") -> ViTModel:
    """Theia's backbone as upstream builds it (AutoModel.from_config, pooler replaced by identity),
    every parameter perturbed so that norms are not at their trivial init."""
    torch.manual_seed(seed)
    model = ViTModel(deit_config(name, attn), add_pooling_layer=False)
    assert model.config._attn_implementation == attn
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


# transformers 5 renamed ViTModel's parameters; Theia's files (saved with transformers 4) hold the old names,
# which are the ones our backbone uses. transformers' own conversion_mapping lists the renames; undone here.
V5_TO_PUBLISHED = [(r"^layers\.", "encoder.layer."), (r"attention\.q_proj", "attention.attention.query"),
                   (r"attention\.k_proj", "attention.attention.key"),
                   (r"attention\.v_proj", "attention.attention.value"),
                   (r"attention\.o_proj", "attention.output.dense"), (r"mlp\.fc1", "intermediate.dense"),
                   (r"mlp\.fc2", "output.dense")]


def published_names(sd: dict) -> dict:
    import re

    out = {}
    for key, value in sd.items():
        for pattern, repl in V5_TO_PUBLISHED:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def official_checkpoint(model: ViTModel, path, heads: bool = True) -> None:
    """The published layout: the backbone under backbone.model., the training-time translator heads beside."""
    extra = {}
    if heads:
        for t in TEACHERS:
            extra[f"translator.translator_heads.{t}.linear.weight"] = torch.randn(8, model.config.hidden_size)
            extra[f"translator.translator_heads.{t}.linear.bias"] = torch.randn(8)
    save_theia(published_names(model.state_dict()), path, extra)


def _ours(name: str, ckpt) -> torch.nn.Module:
    net = build_model(name).eval()
    load_strict(net, read_state_dict(ckpt), get_spec(name), str(ckpt))
    return net


def _compare(ref: ViTModel, ours: torch.nn.Module, h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        hidden = ref(pixel_values=x, interpolate_pos_encoding=(h, w) != (224, 224)).last_hidden_state
        cls, dense = ours(x)
    gh, gw = h // 16, w // 16
    assert cls.shape == (2, hidden.shape[-1]) and dense.shape == (2, hidden.shape[-1], gh, gw)
    assert (cls - hidden[:, 0]).abs().max() <= TOL
    # dense: the patch tokens in row-major order, as forward_feature returns them (B, 196, C)
    assert (dense.flatten(2).transpose(1, 2) - hidden[:, 1:]).abs().max() <= TOL


@pytest.mark.parametrize("name", list(SIZES))
def test_backbone_matches_transformers_at_224(name, tmp_path):
    ref = oracle(name)
    official_checkpoint(ref, tmp_path / "model.safetensors")
    _compare(ref, _ours(name, tmp_path / "model.safetensors"), 224, 224)


@pytest.mark.parametrize(("h", "w"), [(224, 320), (320, 320), (160, 224)])
def test_other_sizes_interpolate_the_position_embedding_as_transformers_does(h, w, tmp_path):
    ref = oracle("theia_small")
    official_checkpoint(ref, tmp_path / "model.safetensors")
    _compare(ref, _ours("theia_small", tmp_path / "model.safetensors"), h, w)


def test_sdpa_attention_agrees_too(tmp_path):
    ref = oracle("theia_tiny", attn="sdpa")
    official_checkpoint(ref, tmp_path / "model.safetensors")
    _compare(ref, _ours("theia_tiny", tmp_path / "model.safetensors"), 224, 224)


def test_encoder_loads_the_official_file_and_accounts_for_the_translator_heads(tmp_path, caplog):
    import logging

    ref = oracle("theia_small")
    path = tmp_path / "model.safetensors"
    official_checkpoint(ref, path)
    with caplog.at_level(logging.INFO, logger="defm_ros"):
        enc = Encoder("theia_small", weights=path)
    info = enc.info
    assert info["checkpoint_skipped"] == {f"translator.translator_heads.{t}": 2 for t in TEACHERS}
    assert "left out the training-time keys translator.translator_heads" in caplog.text
    assert info["modality"] == "color" and "non-commercial research only" in info["license"]
    assert info["dense_size"] == [14, 14] and info["stride"] == 16 and info["dense_level"] == "patch"
    assert info["normalization"]["mean"] == [0.5] * 3 and info["normalization"]["kind"] == "vit_image_processor"
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out = enc.encode(rgb)  # 224x224 needs no resize: the processor's x/127.5 - 1 only
    with torch.no_grad():
        pixel = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() * (1 / 255) - 0.5) / 0.5
        hidden = ref(pixel_values=pixel).last_hidden_state
    assert (out.cls - hidden[:, 0]).abs().max() <= TOL


def test_a_checkpoint_of_another_variant_is_named(tmp_path):
    official_checkpoint(oracle("theia_tiny"), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not fit theia_small.*It looks like a theia_tiny checkpoint"):
        Encoder("theia_small", weights=tmp_path / "model.safetensors")


def test_missing_and_stray_keys_are_named_as_the_file_names_them(tmp_path):
    ref = oracle("theia_tiny")
    backbone = published_names(ref.state_dict())
    del backbone["encoder.layer.11.output.dense.weight"]
    stray = {"head.classifier.weight": torch.zeros(3)}  # neither backbone nor a known training-time head
    save_theia(backbone, tmp_path / "model.safetensors", stray)
    with pytest.raises(CheckpointError, match=r"1 missing keys: backbone\.model\.encoder\.layer\.11\.output\.dense"
                                              r"\.weight; 1 unexpected keys: head\.classifier\.weight"):
        Encoder("theia_tiny", weights=tmp_path / "model.safetensors")


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    good = tmp_path / "model.safetensors"
    official_checkpoint(oracle("theia_tiny"), good, heads=False)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Encoder("theia_tiny", weights=bad)
    defm = tmp_path / "defm_resnet18.pth"
    write_checkpoint(defm, "defm_resnet18", seed=None)
    with pytest.raises(CheckpointError, match="It looks like a defm_resnet18 checkpoint"):
        Encoder("theia_tiny", weights=defm)


def test_offline_without_the_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFM_ROS_MODELS", str(tmp_path))
    with pytest.raises(CheckpointError) as exc:
        Encoder("theia_small")
    text = str(exc.value)
    assert "huggingface-cli download theaiinstitute/theia-small-patch16-224-cdiv model.safetensors" in text
    assert f"--local-dir {tmp_path / 'theia_small'}" in text
