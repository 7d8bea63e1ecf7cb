"""LingBot-Depth (robbyant/lingbot-depth, Apache-2.0): an RGB-D DINOv2 ViT trained by masked depth
modelling, whose conv decoder gives refined metric depth and a validity mask.

Built from a checkpoint's own `model_config` (the kwargs of upstream's MDMModel), with upstream's
parameter names, so its model.pt files load strictly. Written from the architecture's facts, tested
against the upstream code (test/test_lingbot.py); no xFormers.

The encoder's sequence per frame is [class token, registers, image patches, depth patches], and upstream
drops the depth patches that hold no valid depth, so each frame has its own length. `forward(...,
fixed=True)` keeps every depth patch in place and masks the empty ones out of attention instead: the
same numbers (the tests prove it), one static shape for ONNX and TensorRT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocess.rgbd import prepare
from .layers import Block, PatchEmbed, init_weights, resample_pos_embed
from .registry import FAMILIES

PATCH = FAMILIES["lingbot"].patch

PRETRAIN_GRID = 37  # DINOv2's 518x518 position embedding
# backbone name -> (width, depth, heads, ffn, registers)
BACKBONES = {
    "dinov2_vits14": (384, 12, 6, "mlp", 0),
    "dinov2_vitb14": (768, 12, 12, "mlp", 0),
    "dinov2_vitl14": (1024, 24, 16, "mlp", 0),
    "dinov2_vitl16": (1024, 24, 16, "mlp", 0),  # upstream's name; its patch is 14 all the same
    "dinov2_vitg14": (1536, 40, 24, "swiglu", 0),
    "dinov2_vits14_reg": (384, 12, 6, "mlp", 4),
    "dinov2_vitb14_reg": (768, 12, 12, "mlp", 4),
    "dinov2_vitl14_reg": (1024, 24, 16, "mlp", 4),
    "dinov2_vitg14_reg": (1536, 40, 24, "swiglu", 4),
}
PATCH_VALID = (-9.5, 200.0)  # upstream's valid range of the (remapped) depth, empty pixels set to -10
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU, "elu": nn.ELU}


# --- the RGB-D ViT ---------------------------------------------------------------------------------
class RGBDViT(nn.Module):
    """DINOv2 with a second (1-channel) patch embedding for depth; image and depth tokens side by side."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown LingBot backbone {backbone!r}; known: {', '.join(BACKBONES)}")
        dim, depth, heads, ffn, registers = BACKBONES[backbone]
        self.registers, self.antialias = registers, backbone.endswith("_reg")
        self.offset = 0.0 if self.antialias else 0.1
        self.patch_embed, self.depth_patch_embed = PatchEmbed(dim, PATCH), PatchEmbed(dim, PATCH, channels=1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID ** 2 + 1, dim))
        if registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training-only, kept for strict loading
        # attention always by SDPA, as upstream runs it (no explicit form, no fused_attention flag)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn=ffn, init_values=1.0, explicit=None) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        init_weights(self)

    def patch_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """The patch position embedding (1, rows * cols, C) for a rows x cols grid: upstream's bicubic resize by
        (size + offset) / 37 (to the size, antialiased, with registers), in float32; unchanged at 37 x 37."""
        pos = resample_pos_embed(self.pos_embed, rows, cols, self.pos_embed.dtype, offset=self.offset,
                                 antialias=self.antialias)
        return pos[:, 1:]

    def tokens(self, image: torch.Tensor, depth: torch.Tensor, pos: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1 + R + 2 * rows * cols, C) tokens and which of them hold something (B, same) bool: all but
        the depth patches without a valid pixel. `depth` is remapped, empty pixels at 0."""
        b, _, h, w = image.shape
        rows, cols = h // PATCH, w // PATCH
        pos = self.patch_pos_embed(rows, cols) if pos is None else pos
        img, dep = self.patch_embed(image), self.depth_patch_embed(depth)
        # the position embedding in the patches' dtype, as upstream adds it (bf16 under its use_fp16 autocast)
        img, dep = img + (1 + pos.to(img.dtype)), dep + (2 + pos.to(dep.dtype))
        raw = torch.where(depth == 0, torch.full_like(depth, -10.0), depth)
        ok = (raw >= PATCH_VALID[0]) & (raw <= PATCH_VALID[1])
        patch_ok = ok.reshape(b, rows, PATCH, cols, PATCH).any(4).any(2).reshape(b, rows * cols)
        head = self.cls_token + self.pos_embed[:, :1]
        if self.registers:
            head = torch.cat((head, self.register_tokens), dim=1)
        head = head.expand(b, -1, -1)  # in its own dtype: the concatenation promotes, as upstream's does
        keep = torch.cat((torch.ones(b, head.shape[1] + rows * cols, dtype=torch.bool, device=img.device), patch_ok), 1)
        return torch.cat((head, img, dep), dim=1), keep

    def forward(self, image: torch.Tensor, depth: torch.Tensor, layers: Sequence[int], fixed: bool = False,
                pos: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per taken layer: (normalized image-patch tokens (B, rows * cols, C), class token (B, C)).

        fixed=False: each frame's sequence without its empty depth patches (upstream's way);
        fixed=True: every frame padded to one length, the empty patches masked out of attention.
        """
        x, keep = self.tokens(image, depth, pos)
        end = 1 + self.registers + (image.shape[-2] // PATCH) * (image.shape[-1] // PATCH)
        if fixed:
            runs = [(x, keep)]
        else:  # one sequence per frame, of its own length
            runs = [(x[i:i + 1, keep[i]], None) for i in range(x.shape[0])]
        taken: list[list[torch.Tensor]] = []
        for seq, mask in runs:
            out = []
            for k, blk in enumerate(self.blocks):
                seq = blk(seq, mask)
                if k in layers:
                    out.append(self.norm(seq)[:, :end])  # the class token, registers and image patches
            taken.append(out)
        per_layer = [torch.cat([out[j] for out in taken], dim=0) for j in range(len(layers))]
        return [(t[:, 1 + self.registers:], t[:, 0]) for t in per_layer]


class RGBDEncoder(nn.Module):
    """Colour [0, 1] and depth (m) -> dense RGB-D features (B, dim_out, rows, cols) and the class token."""

    def __init__(self, backbone: str, intermediate_layers: int | Sequence[int], dim_out: int,
                 img_depth_fuse_mode: str = "", depth_emb_mode: str = "", img_mask_ratio: float = 0.0,
                 **ignored: Any) -> None:
        super().__init__()
        if img_depth_fuse_mode != "cat_token" or depth_emb_mode != "conv_1c":
            raise ValueError("LingBot's encoder fuses by concatenating tokens with a 1-channel depth embedding "
                             f"(cat_token, conv_1c); this config has {img_depth_fuse_mode!r}, {depth_emb_mode!r}")
        self.backbone = RGBDViT(backbone)
        depth = len(self.backbone.blocks)
        self.layers = (list(range(depth - intermediate_layers, depth)) if isinstance(intermediate_layers, int)
                       else list(intermediate_layers))
        dim = self.backbone.cls_token.shape[-1]
        if img_mask_ratio > 0:  # a training-time parameter upstream creates; kept for strict loading
            self.mask_token_mae = nn.Parameter(torch.zeros(1, 1, dim))
        self.output_projections = nn.ModuleList(nn.Conv2d(dim, dim_out, 1) for _ in self.layers)
        mean, std = FAMILIES["lingbot"].mean, FAMILIES["lingbot"].std  # until the checkpoint's are loaded
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1))

    def encode(self, img: torch.Tensor, depth: torch.Tensor, fixed: bool = False,
               pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepared image and depth at the patch grid's size (preprocess.rgbd.prepare) -> (dense, cls)."""
        rows, cols = img.shape[-2] // PATCH, img.shape[-1] // PATCH
        outs = self.backbone(img, depth, self.layers, fixed, pos)
        projected = [proj(f.transpose(1, 2).unflatten(2, (rows, cols))) for proj, (f, _) in
                     zip(self.output_projections, outs, strict=True)]
        return torch.stack(projected, dim=1).sum(dim=1), outs[-1][1]  # summed in one rounding, as upstream

    def forward(self, image: torch.Tensor, depth: torch.Tensor, rows: int, cols: int, remap_depth_in: str,
                fixed: bool = False, pos: torch.Tensor | None = None,
                resize: tuple[Callable, Callable] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, 3, H, W) in [0, 1], depth (B, 1, H, W) metres -> (dense (B, dim_out, rows, cols), cls)."""
        img, d = prepare(image, depth, (rows * PATCH, cols * PATCH), remap_depth_in, self.image_mean,
                         self.image_std, resize)
        return self.encode(img, d, fixed, pos)


# --- the decoder ------------------------------------------------------------------------------------
def _norm(kind: str, channels: int) -> nn.Module:
    return {"group_norm": lambda: nn.GroupNorm(channels // 32, channels),
            "layer_norm": lambda: nn.GroupNorm(1, channels),
            "instance_norm": lambda: nn.InstanceNorm2d(channels),
            "none": nn.Identity}[kind]()


class ResidualConvBlock(nn.Module):
    def __init__(self, channels: int, hidden: int, activation: str, in_norm: str, hidden_norm: str) -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        self.layers = nn.Sequential(
            _norm(in_norm, channels), act(), nn.Conv2d(channels, hidden, 3, padding=1, padding_mode="replicate"),
            _norm(hidden_norm, hidden), act(), nn.Conv2d(hidden, channels, 3, padding=1, padding_mode="replicate"))
        self.skip_connection = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.skip_connection(x)


def resampler(kind: str, c_in: int, c_out: int) -> nn.Sequential:
    """Upstream's x2 resamplers, by name (same layer order, so the same parameter names)."""
    conv3 = lambda a, b: nn.Conv2d(a, b, 3, padding=1, padding_mode="replicate")  # noqa: E731
    if kind == "pixel_shuffle":
        return nn.Sequential(conv3(c_in, 4 * c_out), nn.PixelShuffle(2), conv3(c_out, c_out))
    if kind in ("nearest", "bilinear"):
        up = nn.Upsample(scale_factor=2, mode=kind, align_corners=False if kind == "bilinear" else None)
        return nn.Sequential(up, conv3(c_in, c_out))
    if kind == "conv_transpose":
        return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 2, stride=2), conv3(c_out, c_out))
    if kind == "pixel_unshuffle":
        return nn.Sequential(nn.PixelUnshuffle(2), conv3(4 * c_in, c_out))
    if kind in ("avg_pool", "max_pool"):
        pool = nn.AvgPool2d(2, 2) if kind == "avg_pool" else nn.MaxPool2d(2, 2)
        return nn.Sequential(conv3(c_in, c_out), pool)
    raise ValueError(f"unsupported resampler {kind!r}")


def _per_level(value: Any, n: int) -> list:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * n


class ConvStack(nn.Module):
    """Upstream's multi-level conv stack: per level a 1x1 input, residual blocks, a 1x1 output, and x2
    resamplers between levels."""

    def __init__(self, dim_in: Any, dim_res_blocks: Sequence[int], dim_out: Any, resamplers: Any,
                 dim_times_res_block_hidden: int = 1, num_res_blocks: int | Sequence[int] = 1,
                 res_block_in_norm: str = "layer_norm", res_block_hidden_norm: str = "group_norm",
                 activation: str = "relu") -> None:
        super().__init__()
        n = len(dim_res_blocks)
        ins, outs, blocks = _per_level(dim_in, n), _per_level(dim_out, n), _per_level(num_res_blocks, n)
        self.input_blocks = nn.ModuleList(nn.Conv2d(i, r, 1) if i is not None else nn.Identity()
                                          for i, r in zip(ins, dim_res_blocks, strict=False))
        self.resamplers = nn.ModuleList(resampler(kind, a, b) for a, b, kind in
                                        zip(dim_res_blocks[:-1], dim_res_blocks[1:], _per_level(resamplers, n - 1),
                                            strict=False))
        self.res_blocks = nn.ModuleList(nn.Sequential(*(
            ResidualConvBlock(r, dim_times_res_block_hidden * r, activation, res_block_in_norm, res_block_hidden_norm)
            for _ in range(k))) for r, k in zip(dim_res_blocks, blocks, strict=False))
        self.output_blocks = nn.ModuleList(nn.Conv2d(r, o, 1) if o is not None else nn.Identity()
                                           for o, r in zip(outs, dim_res_blocks, strict=False))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out, x = [], None
        for i, (inp, res, head) in enumerate(zip(self.input_blocks, self.res_blocks, self.output_blocks, strict=True)):
            f = inp(features[i])
            x = f if x is None else x + f
            x = res(x)
            out.append(head(x))
            if i < len(self.resamplers):
                x = self.resamplers[i](x)
        return out


def view_plane_uv(rows: int, cols: int, aspect: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(2, rows, cols): pixel centres on the image plane, spanning +-width/diagonal and +-height/diagonal."""
    span_x, span_y = aspect / math.hypot(aspect, 1.0), 1.0 / math.hypot(aspect, 1.0)
    u = torch.linspace(-span_x * (cols - 1) / cols, span_x * (cols - 1) / cols, cols, dtype=dtype, device=device)
    v = torch.linspace(-span_y * (rows - 1) / rows, span_y * (rows - 1) / rows, rows, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=0)


def token_grid(num_tokens: int, height: int, width: int) -> tuple[int, int]:
    """Upstream's patch grid for a frame: num_tokens patches at the frame's aspect ratio."""
    aspect = width / height
    return round((num_tokens / aspect) ** 0.5), round((num_tokens * aspect) ** 0.5)


# --- the whole model -----------------------------------------------------------------------------
HEADS = ("depth_head", "mask_head")


class LingBotDepth(nn.Module):
    """MDMModel's architecture from its model_config; forward gives depth (m) and mask probability."""

    def __init__(self, encoder: dict, neck: dict, depth_head: dict | None = None, mask_head: dict | None = None,
                 remap_depth_in: str = "log", remap_depth_out: str = "exp",
                 num_tokens_range: Sequence[int] = (1200, 3600), **ignored: Any) -> None:
        super().__init__()
        if depth_head is None or mask_head is None:
            raise ValueError("a LingBot-Depth refiner needs a depth_head and a mask_head in its model_config")
        if remap_depth_out not in ("exp", "linear"):
            raise ValueError(f"remap_depth_out must be exp or linear, got {remap_depth_out!r}")
        self.remap_depth_in, self.remap_depth_out = remap_depth_in, remap_depth_out
        self.num_tokens_range = tuple(num_tokens_range)
        self.encoder = RGBDEncoder(**encoder)
        self.neck = ConvStack(**neck)
        self.depth_head, self.mask_head = ConvStack(**depth_head), ConvStack(**mask_head)

    def features(self, image: torch.Tensor, depth: torch.Tensor, rows: int, cols: int, fixed: bool = False,
                 pos: torch.Tensor | None = None, resize: tuple[Callable, Callable] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The RGB-D encoder's (dense (B, dim_out, rows, cols), class token (B, C)): upstream's infer_feat."""
        return self.encoder(image, depth[:, None], rows, cols, self.remap_depth_in, fixed, pos, resize)

    def forward(self, image: torch.Tensor, depth: torch.Tensor, rows: int, cols: int, fixed: bool = False,
                pos: torch.Tensor | None = None, resize: tuple[Callable, Callable] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, 3, H, W) in [0, 1], depth (B, H, W) metres (0/NaN/inf: none) -> (depth (B, H, W) metres,
        mask probability (B, H, W)), for a rows x cols patch grid."""
        b, _, h, w = image.shape
        feats, cls = self.features(image, depth, rows, cols, fixed, pos, resize)
        levels = [feats + cls[..., None, None]] + [None] * 4
        for level in range(5):
            uv = view_plane_uv(rows * 2 ** level, cols * 2 ** level, w / h, image.dtype, image.device)
            uv = uv[None].expand(b, -1, -1, -1)
            levels[level] = uv if levels[level] is None else torch.cat([levels[level], uv], dim=1)
        levels = self.neck(levels)
        depth_out, mask = (F.interpolate(getattr(self, head)(levels)[-1], (h, w), mode="bilinear",
                                         align_corners=False) for head in HEADS)
        depth_out = depth_out.squeeze(1)
        return (depth_out.exp() if self.remap_depth_out == "exp" else depth_out), mask.squeeze(1).sigmoid()


def build_lingbot(config: dict[str, Any]) -> LingBotDepth:
    """A LingBotDepth from a checkpoint's model_config (the kwargs upstream's MDMModel takes)."""
    try:
        return LingBotDepth(**config)
    except TypeError as exc:
        raise ValueError(f"the checkpoint's model_config does not describe a LingBot-Depth model: {exc}") from exc


# An assumed ViT-L configuration, for random weights only (smoke runs): real checkpoints bring their own.
ASSUMED_VITL_CONFIG: dict[str, Any] = {
    "encoder": {"backbone": "dinov2_vitl14", "intermediate_layers": 4, "dim_out": 1024,
                "img_depth_fuse_mode": "cat_token", "depth_emb_mode": "conv_1c"},
    "neck": {"dim_in": [1026, 2, 2, 2, 2], "dim_res_blocks": [256, 128, 64, 32, 32], "dim_out": [None] * 5,
             "resamplers": "conv_transpose"},
    "depth_head": {"dim_in": [256, 128, 64, 32, 32], "dim_res_blocks": [256, 128, 64, 32, 32],
                   "dim_out": [None] * 4 + [1], "resamplers": "conv_transpose"},
    "mask_head": {"dim_in": [256, 128, 64, 32, 32], "dim_res_blocks": [256, 128, 64, 32, 32],
                  "dim_out": [None] * 4 + [1], "resamplers": "conv_transpose"},
}

_SMALL_HEAD = {"dim_in": [128, 64, 32, 32, 32], "dim_res_blocks": [128, 64, 32, 32, 32], "dim_out": [None] * 4 + [1],
               "resamplers": ["conv_transpose"] * 4}
# A LingBot-Depth that runs in seconds on a CPU (the upstream oracle README's): a dinov2_vits14 RGB-D encoder whose
# dim_out is the ViT width, neck and heads of [128, 64, 32, 32, 32]. For smoke runs: the tests and the refiner bench.
SMALL_CONFIG: dict[str, Any] = {
    "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": 4, "dim_out": 384,
                "img_depth_fuse_mode": "cat_token", "depth_emb_mode": "conv_1c"},
    "neck": {"dim_in": [386, 2, 2, 2, 2], "dim_res_blocks": [128, 64, 32, 32, 32], "dim_out": [None] * 5,
             "resamplers": ["conv_transpose"] * 4},
    "depth_head": _SMALL_HEAD,
    "mask_head": _SMALL_HEAD,
}


def _shortest(t: torch.Tensor) -> list[float]:
    """A float32 buffer's values as their shortest decimals (0.485, not 0.48500001430511475): the same
    float32 numbers, described as the checkpoint's authors wrote them."""
    return [float(str(v)) for v in t.flatten().float().numpy()]


class LingBotFeatures(nn.Module):
    """The RGB-D encoder alone, as a feature model: prepared input (B, 4, h, w) -> (cls (B, C), dense
    (B, dim_out, h/14, w/14)), upstream's infer_feat. `fixed`: the padded, exportable attention."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = RGBDEncoder(**config["encoder"])
        self.remap_depth_in = config.get("remap_depth_in", "log")
        self.fixed = False

    def position_embedding(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """The image and depth patches' (1, rows * cols, C) embedding (layers.PositionEmbedded); the class
        token's is added with the token."""
        return self.encoder.backbone.patch_pos_embed(rows, cols).to(dtype)

    def architecture(self) -> dict[str, Any]:
        """What came with the checkpoint and shapes the stream: the widths, and the preprocessing it was
        trained with (depth remap, image mean and std). The Encoder describes and preprocesses by it."""
        enc = self.encoder
        return {"cls_channels": enc.backbone.cls_token.shape[-1],
                "dense_channels": enc.output_projections[0].out_channels,
                "normalization": {"remap_depth_in": self.remap_depth_in, "mean": _shortest(enc.image_mean),
                                  "std": _shortest(enc.image_std)}}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self.position_embedding(x.shape[-2] // PATCH, x.shape[-1] // PATCH, x.dtype)
        dense, cls = self.encoder.encode(x[:, :3], x[:, 3:], self.fixed, pos)
        return cls, dense

    def exportable(self) -> LingBotFeatures:
        """A copy whose attention is padded to one length per frame (a static shape for ONNX)."""
        import copy

        clone = copy.deepcopy(self)
        clone.fixed = True
        return clone
