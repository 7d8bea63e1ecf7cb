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
from defm_ros.models.registry import THEIA_TEACHERS  # noqa: E402
from defm_ros.models.weights import CheckpointError, load_strict, read_state_dict  # noqa: E402

from .helpers.checkpoints import save_theia, write_checkpoint  # noqa: E402

TOL = 1e-5
SIZES = {"theia_tiny": (192, 3), "theia_small": (384, 6), "theia_base": (768, 12)}


def deit_config(name: str, attn: str = "eager") -> ViTConfig:
    """facebook/deit-{tiny,small,base}-patch16-224's config (a ViTConfig), written out: no hub access."""
    dim, heads = SIZES[name.removesuffix("_cddsv")]
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


TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


def saved_by_transformers(model: ViTModel, folder, newer: bool = False) -> dict:
    """The backbone's state dict as transformers' save_pretrained writes it: by default the published (transformers 4)
    names, which transformers 5 restores on saving; `newer`: transformers 5's own names (save_original_format=False),
    what a Theia fine-tuned and saved with a current transformers holds."""
    from safetensors.torch import load_file

    if newer and not TRANSFORMERS_5:
        pytest.skip(f"transformers {transformers.__version__} saves no transformers 5 names")
    model.save_pretrained(folder, **({"save_original_format": False} if newer else {}))
    return load_file(str(folder / "model.safetensors"))


def official_checkpoint(model: ViTModel, path, teachers=THEIA_TEACHERS["cdiv"], newer: bool = False):
    """The published layout: the backbone under backbone.model., a translator head per teacher beside it."""
    return save_theia(saved_by_transformers(model, path.parent / "saved", newer), path, teachers=teachers)


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
    assert info["checkpoint_skipped"] == {f"translator.translator_heads.{t}": 8 for t in THEIA_TEACHERS["cdiv"]}
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
    backbone = saved_by_transformers(ref, tmp_path / "saved")
    del backbone["encoder.layer.11.output.dense.weight"]
    stray = {"head.classifier.weight": torch.zeros(3)}  # neither backbone nor a known training-time head
    save_theia(backbone, tmp_path / "model.safetensors", stray)
    with pytest.raises(CheckpointError, match=r"1 missing keys: backbone\.model\.encoder\.layer\.11\.output\.dense"
                                              r"\.weight; 1 unexpected keys: head\.classifier\.weight"):
        Encoder("theia_tiny", weights=tmp_path / "model.safetensors")


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    good = tmp_path / "model.safetensors"
    official_checkpoint(oracle("theia_tiny"), good, teachers=())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Encoder("theia_tiny", weights=bad)
    defm = tmp_path / "defm_resnet18.pth"
    write_checkpoint(defm, "defm_resnet18", seed=None)
    with pytest.raises(CheckpointError, match="It looks like a defm_resnet18 checkpoint"):
        Encoder("theia_tiny", weights=defm)


@pytest.mark.parametrize(("name", "repo"), [("theia_small", "theia-small-patch16-224-cdiv"),
                                          ("theia_small_cddsv", "theia-small-patch16-224-cddsv")])
def test_offline_without_the_file_says_where_to_put_it(name, repo, tmp_path, monkeypatch):
    monkeypatch.setenv("DEFM_ROS_MODELS", str(tmp_path))
    with pytest.raises(CheckpointError) as exc:
        Encoder(name)
    text = str(exc.value)
    assert f"huggingface-cli download theaiinstitute/{repo} model.safetensors" in text
    assert f"--local-dir {tmp_path / name}" in text


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_the_all_teacher_models_are_the_same_backbones_with_their_own_hub_ids(size):
    cdiv, cddsv = get_spec(f"theia_{size}"), get_spec(f"theia_{size}_cddsv")
    assert cddsv.hub_repo == f"theaiinstitute/theia-{size}-patch16-224-cddsv"
    assert cdiv.hub_repo == f"theaiinstitute/theia-{size}-patch16-224-cdiv"
    assert (cddsv.arch, cddsv.cls_dim, cddsv.num_heads, cddsv.license) == (cdiv.arch, cdiv.cls_dim, cdiv.num_heads,
                                                                           cdiv.license)


def test_an_all_teacher_file_loads_strictly_and_accounts_for_all_five_heads(tmp_path, caplog):
    import logging

    ref = oracle("theia_small_cddsv", seed=3)
    path = official_checkpoint(ref, tmp_path / "model.safetensors", teachers=THEIA_TEACHERS["cddsv"])
    with caplog.at_level(logging.INFO, logger="defm_ros"):
        enc = Encoder("theia_small_cddsv", weights=path)
    assert enc.info["checkpoint_skipped"] == {f"translator.translator_heads.{t}": 8 for t in THEIA_TEACHERS["cddsv"]}
    assert "translator.translator_heads.facebook/sam-vit-huge.* (8)" in caplog.text
    assert "translator.translator_heads.LiheYoung/depth-anything-large-hf.* (8)" in caplog.text
    _compare(ref, _ours("theia_small_cddsv", path), 224, 224)


def test_a_file_of_the_other_release_is_refused_and_named(tmp_path):
    ref = oracle("theia_tiny")
    cddsv = official_checkpoint(ref, tmp_path / "cddsv.safetensors", teachers=THEIA_TEACHERS["cddsv"])
    with pytest.raises(CheckpointError, match=r"does not fit theia_tiny: 16 unexpected keys: translator\.translator_"
                                              r"heads\.LiheYoung/depth-anything-large-hf\..*It looks like a "
                                              r"theia_tiny_cddsv checkpoint"):
        Encoder("theia_tiny", weights=cddsv)
    cdiv = official_checkpoint(ref, tmp_path / "cdiv.safetensors")
    with pytest.raises(CheckpointError, match=r"does not fit theia_tiny_cddsv: it holds the training-time heads .* "
                                              r"but not translator\.translator_heads\.facebook/sam-vit-huge, "
                                              r"translator\.translator_heads\.LiheYoung/depth-anything-large-hf: a "
                                              r"theia_tiny_cddsv file holds all 5 or none\. It looks like a theia_tiny "
                                              r"checkpoint"):
        Encoder("theia_tiny_cddsv", weights=cdiv)


def test_translator_keys_other_than_the_named_heads_are_refused(tmp_path):
    """The heads are skipped by name, not by the translator. prefix: a translator that is not the published one
    (here an MLP translator's backbone adapter) is another file, and said so."""
    extra = {"translator.backbone_adapter.1.weight": torch.zeros(4, 2)}
    path = save_theia(saved_by_transformers(oracle("theia_tiny"), tmp_path / "saved"), tmp_path / "model.safetensors",
                      extra, teachers=THEIA_TEACHERS["cdiv"])
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: translator\.backbone_adapter\.1\.weight\."):
        Encoder("theia_tiny", weights=path)


@pytest.mark.parametrize("name", ["theia_tiny", "theia_base_cddsv"])
def test_files_saved_with_transformers_4_and_5_names_load_strictly_to_the_same_features(name, tmp_path, caplog):
    import logging

    ref = oracle(name, seed=1)
    teachers = THEIA_TEACHERS["cddsv" if name.endswith("cddsv") else "cdiv"]
    old = official_checkpoint(ref, tmp_path / "v4" / "model.safetensors", teachers)
    new = official_checkpoint(ref, tmp_path / "v5" / "model.safetensors", teachers, newer=True)
    assert "backbone.model.layers.0.attention.q_proj.weight" in read_state_dict(new)
    assert "backbone.model.encoder.layer.0.attention.attention.query.weight" in read_state_dict(old)
    x = torch.randn(1, 3, 224, 224)
    with caplog.at_level(logging.INFO, logger="defm_ros"):
        nets = [_ours(name, path) for path in (old, new)]
    assert caplog.text.count("read in transformers 5's ViTModel names") == 1
    with torch.no_grad():
        (cls_old, dense_old), (cls_new, dense_new) = (net(x) for net in nets)
    assert torch.equal(cls_old, cls_new) and torch.equal(dense_old, dense_new)
    _compare(ref, nets[1], 224, 224)


@pytest.fixture
def newer_backbone(tmp_path) -> dict:
    return saved_by_transformers(oracle("theia_tiny"), tmp_path / "saved", newer=True)


def test_a_transformers_5_file_with_a_missing_or_unknown_key_names_it_as_the_file_does(newer_backbone, tmp_path):
    del newer_backbone["layers.11.mlp.fc2.weight"]
    newer_backbone["layers.0.attention.qkv.weight"] = torch.zeros(3)
    path = save_theia(newer_backbone, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing keys: backbone\.model\.layers\.11\.mlp\.fc2\.weight; "
                                              r"1 unexpected keys: backbone\.model\.layers\.0\.attention\.qkv\."
                                              r"weight; read in transformers 5's ViTModel names"):
        Encoder("theia_tiny", weights=path)


def test_a_file_mixing_both_layouts_is_refused(newer_backbone, tmp_path):
    newer_backbone["encoder.layer.3.output.dense.weight"] = newer_backbone.pop("layers.3.mlp.fc2.weight")
    path = save_theia(newer_backbone, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing keys: backbone\.model\.layers\.3\.mlp\.fc2\.weight; "
                                              r"1 unexpected keys: backbone\.model\.encoder\.layer\.3\.output\."
                                              r"dense\.weight; read in transformers 5's ViTModel names, as its keys "
                                              r"are; a file holds them or the older names, not both"):
        Encoder("theia_tiny", weights=path)
