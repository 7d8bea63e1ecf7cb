"""LingBot-Depth against its upstream code (the oracle) on the real RGB-D scenes, small random config,
fp32: refined depth, mask, points and RGB-D features; bf16 against upstream's use_fp16=True; the
fixed-shape (padded) path against upstream's variable-length one; strict loading of model.pt files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defm_ros import Refiner  # noqa: E402,I001
from defm_ros.models.lingbot import build_lingbot, token_grid  # noqa: E402
from defm_ros.models.weights import CheckpointError  # noqa: E402

from .helpers.checkpoints import SMALL, save_lingbot
from .helpers.oracles import lingbot_oracle
from .helpers.scenes import scene

SCENES = ("0", "1", "2", "4")


@pytest.fixture(scope="module")
def scenes(shared_data) -> dict:
    out = {}
    for s in SCENES:
        rgb, mm, k = scene(shared_data, s)
        out[s] = (rgb, mm.astype(np.float32) / 1000.0, k.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def ref():
    return lingbot_oracle()


@pytest.fixture(scope="module")
def ckpt(ref, tmp_path_factory):
    path = tmp_path_factory.mktemp("lingbot") / "model.pt"
    save_lingbot(ref.state_dict(), SMALL, path)
    return path


@pytest.fixture(scope="module")
def refiner(ckpt):
    return Refiner(weights=ckpt)


def _upstream(ref, rgb, depth, k=None, use_fp16=False, **kw):
    """Upstream's infer; its use_fp16=True is bf16 autocast."""
    image = torch.tensor(rgb / 255, dtype=torch.float32).permute(2, 0, 1)
    kn = None if k is None else torch.from_numpy(k / np.array([[640], [480], [1]], np.float32))[None]
    return ref.infer(image, torch.from_numpy(depth), num_tokens=1200, use_fp16=use_fp16, intrinsics=kn, **kw)


@pytest.mark.parametrize("scene", SCENES)
def test_refined_depth_and_mask_equal_upstream(refiner, ref, scenes, scene):
    rgb, depth, k = scenes[scene]
    up = _upstream(ref, rgb, depth, k)
    got = refiner.refine(rgb, depth, intrinsics=k)
    assert torch.equal(got.mask, up["mask"]), (got.mask != up["mask"]).sum()
    valid = got.mask
    assert 0 < valid.float().mean() < 1  # the random model leaves some pixels invalid: both cases are checked
    rel = ((got.depth[valid] - up["depth"][valid]).abs() / up["depth"][valid].abs()).max()
    assert rel <= 1e-4, rel
    assert torch.isnan(got.depth[~valid]).all() and torch.isinf(up["depth"][~valid]).all()  # NaN, as REP 118 says
    assert got.points.shape == (480, 640, 3) and torch.isnan(got.points[~valid]).all()
    np.testing.assert_allclose(got.points[valid].numpy(), up["points"][valid].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scene", SCENES)
def test_bf16_refines_as_upstream_with_use_fp16(ckpt, ref, scenes, scene):
    """Upstream's infer(use_fp16=True) is bf16 autocast: our precision="bf16" (the CPU runs it too) rounds
    where upstream rounds (the patch tokens after the position embedding; the four layer projections summed
    in one reduction), so the two are equal, bit for bit. (Before they rounded alike, 358-459 of 307,200 mask
    pixels and up to 2.2e-2 of the depth differed.)"""
    rgb, depth, k = scenes[scene]
    refiner = Refiner(weights=ckpt, precision="bf16")
    assert refiner.info["precision"] == "bf16"
    up = _upstream(ref, rgb, depth, k, use_fp16=True)
    got = refiner.refine(rgb, depth, intrinsics=k)
    assert torch.equal(got.mask, up["mask"]) and 0 < got.mask.float().mean() < 1
    assert torch.equal(got.depth[got.mask], up["depth"][up["mask"]])
    image = torch.tensor(rgb / 255, dtype=torch.float32).permute(2, 0, 1)
    want_dense, want_cls = ref.infer_feat(image, torch.from_numpy(depth), num_tokens=1200, use_fp16=True)
    enc_in = torch.from_numpy(depth)[None]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        dense, cls = refiner.net.features(image[None], enc_in, *refiner.grid(480, 640))
    assert want_dense.dtype == torch.bfloat16 and torch.equal(dense, want_dense) and torch.equal(cls, want_cls)


@pytest.mark.parametrize("scene", ("1", "2"))
def test_rgbd_features_equal_upstream_infer_feat(ref, scenes, scene):
    rgb, depth, _ = scenes[scene]
    image = torch.tensor(rgb / 255, dtype=torch.float32).permute(2, 0, 1)
    want_dense, want_cls = ref.infer_feat(image, torch.from_numpy(depth), num_tokens=1200, use_fp16=False)
    ours = build_lingbot(SMALL).eval()
    ours.load_state_dict(ref.state_dict())
    rows, cols = token_grid(1200, 480, 640)
    with torch.no_grad():
        dense, cls = ours.features(image[None], torch.from_numpy(depth)[None], rows, cols)
    assert dense.shape == want_dense.shape == (1, 384, 30, 40)
    assert (dense - want_dense).abs().max() <= 1e-4 and (cls - want_cls).abs().max() <= 1e-4


def test_the_fixed_shape_path_equals_the_variable_length_one(ref, scenes):
    """Padding every frame's depth tokens to one length and masking the empty ones out of attention gives
    upstream's numbers, for a batch whose frames have different numbers of valid depth patches."""
    ours = build_lingbot(SMALL).eval()
    ours.load_state_dict(ref.state_dict())
    rgb = np.stack([scenes[s][0] for s in ("1", "2")])
    depth = np.stack([scenes[s][1] for s in ("1", "2")])
    depth[1, :, :320] = 0  # half the second frame empty: its sequence is much shorter upstream
    image = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    d = torch.from_numpy(depth)
    rows, cols = token_grid(1200, 480, 640)
    with torch.no_grad():
        var, var_mask = ours(image, d, rows, cols, fixed=False)
        fix, fix_mask = ours(image, d, rows, cols, fixed=True)
        fv, cv = ours.features(image, d, rows, cols, fixed=False)
        ff, cf = ours.features(image, d, rows, cols, fixed=True)
    assert (fix / var - 1).abs().max() <= 1e-5 and (fix_mask - var_mask).abs().max() <= 1e-5
    assert (ff - fv).abs().max() <= 1e-4 and (cf - cv).abs().max() <= 1e-4
    _, keep = ours.encoder.backbone.tokens(image[:, :, :rows * 14, :cols * 14], d[:, None, :rows * 14, :cols * 14])
    assert keep[1].sum() < keep[0].sum()  # the frames really had different lengths


def test_a_batch_equals_its_frames(refiner, scenes):
    rgb = np.stack([scenes[s][0] for s in ("0", "2")])
    depth = np.stack([scenes[s][1] for s in ("0", "2")])
    batch = refiner.refine(rgb, depth)
    assert batch.depth.shape == (2, 480, 640) and batch.points is None
    one = refiner.refine(rgb[1], depth[1])
    assert torch.equal(batch.mask[1], one.mask)
    assert torch.allclose(batch.depth[1], one.depth, rtol=1e-5, equal_nan=True)


def test_bad_inputs_say_why(refiner, scenes):
    rgb, depth, _ = scenes["0"]
    with pytest.raises(ValueError, match="not aligned"):
        refiner.refine(rgb, depth[::2, ::2])
    with pytest.raises(ValueError, match="uint8 RGB"):
        refiner.refine(rgb.astype(np.float32), depth)
    with pytest.raises(ValueError, match="3x3 camera matrix"):
        refiner.refine(rgb, depth, intrinsics=np.eye(4))
    with pytest.raises(ValueError, match="num_tokens"):
        Refiner(weights="random", num_tokens=0)
    with pytest.raises(ValueError, match="unknown model 'lingbot'"):
        Refiner(model="lingbot", weights="random")


def test_strict_loading_names_what_upstream_would_ignore(ref, tmp_path):
    extra = tmp_path / "extra.pt"
    save_lingbot({**ref.state_dict(), "depth_head.extra.weight": torch.zeros(3)}, SMALL, extra)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: depth_head\.extra\.weight.*strict=False.*ignore"):
        Refiner(weights=extra)
    missing = tmp_path / "missing.pt"
    sd = ref.state_dict()
    del sd["encoder.backbone.blocks.3.attn.qkv.weight"]
    save_lingbot(sd, SMALL, missing)
    with pytest.raises(CheckpointError, match=r"1 missing keys: encoder\.backbone\.blocks\.3\.attn\.qkv\.weight"):
        Refiner(weights=missing)
    heads = tmp_path / "heads.pt"  # heads upstream's config may name but its model never builds: left out by name
    save_lingbot({**ref.state_dict(), "scale_head.0.weight": torch.zeros(2, 2), "scale_head.0.bias": torch.zeros(2)},
                 SMALL, heads)
    assert Refiner(weights=heads).info["checkpoint_skipped"] == {"scale_head": 2}


def test_files_that_are_not_lingbot_checkpoints(ckpt, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Refiner(weights=truncated)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="has no model_config"):
        Refiner(weights=plain)
    wrong = tmp_path / "wrong.pt"
    save_lingbot({}, {**SMALL, "encoder": {"dim_out": 8}}, wrong)
    with pytest.raises(CheckpointError, match="model_config does not describe a LingBot-Depth model"):
        Refiner(weights=wrong)
    headless = tmp_path / "headless.pt"
    save_lingbot({}, {k: v for k, v in SMALL.items() if k != "mask_head"}, headless)
    with pytest.raises(CheckpointError, match="needs a depth_head and a mask_head"):
        Refiner(weights=headless)


# --- the RGB-D encoder as a feature model (Encoder, SPEC §5 outputs) -------------------------------------------


def test_rgbd_encoder_features_equal_upstream(ckpt, ref, scenes):
    from defm_ros import Encoder
    from defm_ros.preprocess.rgbd import pack

    enc = Encoder("lingbot_rgbd_vitl14", weights=ckpt)
    info = enc.info
    assert info["modality"] == "rgbd" and info["input_size"] == [420, 560] and info["dense_size"] == [30, 40]
    assert (info["cls_channels"], info["dense_channels"]) == (384, 384)  # from the checkpoint's config
    assert set(info["checkpoint_skipped"]) == {"neck", "depth_head", "mask_head"}  # the decoder is not used
    rgb = np.stack([scenes[s][0] for s in ("1", "2")])
    depth = np.stack([scenes[s][1] for s in ("1", "2")])
    out = enc.encode((rgb, depth))
    assert torch.equal(out.dense, enc.encode(pack(rgb, depth)).dense)
    for i in range(2):
        image = torch.tensor(rgb[i] / 255, dtype=torch.float32).permute(2, 0, 1)
        dense, cls = ref.infer_feat(image, torch.from_numpy(depth[i]), num_tokens=1200, use_fp16=False)
        assert (out.dense[i] - dense[0]).abs().max() <= 1e-4 and (out.cls[i] - cls[0]).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="takes aligned colour and depth"):
        enc.encode(rgb)
    with pytest.raises(ValueError, match="not aligned"):
        enc.encode((rgb, depth[:, ::2]))


def test_rgbd_encoder_exports_with_the_padded_attention_and_runs_in_onnxruntime(ckpt, scenes, tmp_path,
                                                                               monkeypatch):
    import onnxruntime as ort

    from defm_ros import Encoder
    from defm_ros.preprocess.rgbd import pack

    monkeypatch.setenv("DEFM_ROS_CACHE", str(tmp_path / "cache"))
    enc = Encoder("lingbot_rgbd_vitl14", weights=ckpt)
    x = pack(np.stack([scenes[s][0] for s in ("1", "4")]), np.stack([scenes[s][1] for s in ("1", "4")]))
    x[1, :240] = np.where(np.arange(4) == 3, 0.0, x[1, :240])  # no depth in the top half of frame 2
    ref = enc.encode(x)
    side = enc.export_onnx(tmp_path / "rgbd.onnx", camera_size=(480, 640), batch=None)
    assert side["onnx"]["input_name"] == "rgbd" and side["modality"] == "rgbd"
    sess = ort.InferenceSession(str(tmp_path / "rgbd.onnx"), providers=["CPUExecutionProvider"])
    cls, dense = sess.run(None, {"rgbd": x})
    assert np.abs(dense - ref.dense.numpy()).max() <= 1e-4 and np.abs(cls - ref.cls.numpy()).max() <= 1e-4
    ort_enc = Encoder("lingbot_rgbd_vitl14", weights=ckpt, backend="onnxruntime")
    got = ort_enc.encode(x)
    assert (got.dense - ref.dense).abs().max() <= 1e-4 and ort_enc.info["providers"] == ["CPUExecutionProvider"]


def test_rgbd_encoder_exports_in_fp16(ckpt, tmp_path):
    """The padded attention's mask is additive in the activations' dtype: a bool one exported a float32 branch
    into the fp16 graph, which ONNX refused to type (LayerNormalization: inconsistent type float16)."""
    from defm_ros import Encoder

    enc = Encoder("lingbot_rgbd_vitl14", weights=ckpt, input_size=(140, 196))
    side = enc.export_onnx(tmp_path / "rgbd16.onnx", precision="fp16")
    check = side["onnx"]["check"]
    assert side["onnx"]["precision"] == "fp16" and check["reference_half"]
    assert check["max_abs_err_dense"] <= check["tolerance_dense"] and check["max_abs_err_cls"] <= check["tolerance_cls"]
