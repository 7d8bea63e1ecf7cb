"""The model zoo: one spec per published checkpoint, named as upstream names its files.

Three families share the Encoder, the node and the tools: DeFM (depth, Apache-2.0), Theia (colour; its
code and weights are for non-commercial research only) and LingBot-Depth (aligned colour + depth,
Apache-2.0), whose refiners (REFINERS) complete raw sensor depth and whose RGB-D encoder is a feature model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import DEFAULT_DENSE_LEVEL, DEFAULT_INPUT_SIZE, DENSE_LEVELS, check_choice

Modality = Literal["depth", "color", "rgbd"]
DEFM_REPO = "leggedrobotics/defm"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# transformers 5 renamed ViTModel's parameters (its conversion_mapping.py, "ViTModel"); Theia's published files
# hold transformers 4's names, which the backbone keeps. One rule per block, (our name, the newer name), first match.
TRANSFORMERS5_VIT = (
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"layers.\1.attention.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"layers.\1.attention.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"layers.\1.attention.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.o_proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.", r"layers.\1."),
)


@dataclass(frozen=True)
class Family:
    """What every variant of one architecture family shares: how it is built (`builder`: the models/ module
    whose `build(spec, dense_level, config)` makes it), what it takes, how its input is standardized
    (`mean`, `std`: the network input's channels), its patch (ViTs; 0: a padded CNN), where its checkpoints
    are and under which licence. `config_in_checkpoint`: the architecture comes with each checkpoint."""

    builder: str
    modality: Modality
    mean: tuple[float, ...]
    std: tuple[float, ...]
    license: str
    patch: int = 0
    hub_file: str = ""  # one file name for every variant (a folder each); "": <variant>.pth
    default_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    config_in_checkpoint: bool = False
    unexpected_keys_hint: str = ""  # said when a checkpoint has keys the model lacks
    # (pattern on our parameter name, its name in a newer layout) for re.sub, first match wins: files saved in
    # either layout load (models/weights.py maps the newer names onto ours)
    newer_names: tuple[tuple[str, str], ...] = ()
    newer_layout: str = ""  # what the newer layout is, as errors and logs name it

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std), as a Preprocess takes them."""
        return self.mean, self.std


DEFM = dict(modality="depth", mean=(0.248880, 0.495620, 0.492858), std=(0.139357, 0.271314, 0.297177),
            license="Apache-2.0")
FAMILIES: dict[str, Family] = {
    "vit": Family("vit", patch=14, **DEFM),
    "resnet": Family("cnn", **DEFM),
    "efficientnet": Family("cnn", **DEFM),
    "regnet": Family("cnn", **DEFM),
    # Theia's image processor (facebook/deit-*): mean = std = 0.5, not ImageNet's
    "theia": Family("theia", "color", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), patch=16, hub_file="model.safetensors",
                    license="non-commercial research only (Theia's code and weights, The AI Institute's licence: "
                            "https://huggingface.co/theaiinstitute/theia-base-patch16-224-cdiv)",
                    newer_names=TRANSFORMERS5_VIT, newer_layout="transformers 5's ViTModel names"),
    # LingBot's default input: its 1200-token grid at 4:3 (30 x 40 patches), what upstream picks for 640x480
    "lingbot": Family("lingbot", "rgbd", *IMAGENET, patch=14, hub_file="model.pt", default_size=(420, 560),
                      license="Apache-2.0 (LingBot-Depth, Robbyant)", config_in_checkpoint=True,
                      unexpected_keys_hint="Upstream loads with strict=False, which would ignore the unexpected keys "
                                           "silently."),
}


@dataclass(frozen=True)
class ModelSpec:
    """What a variant is, independent of its weights; what its family shares is in `fam` (FAMILIES).

    `align` is what the input size must be a multiple of (ViTs: cropped down to the patch size, CNNs:
    padded up to 32). Checkpoints: `hub_file` in the Hub repo `hub_repo`, or `local_file` below the
    package's models/ folder; their parameters sit under `checkpoint_prefix`, and keys under
    `skipped_prefixes` (training-time heads) are accounted for by name and left out, grouped by prefix.
    """

    name: str
    family: str
    arch: str
    cls_dim: int
    dense_dim: int
    params_m: float
    # ViT only
    depth: int = 0
    num_heads: int = 0
    hub_repo: str = DEFM_REPO
    checkpoint_prefix: str = ""
    skipped_prefixes: tuple[str, ...] = ()
    skipped_together: bool = False  # a file holds the keys of every skipped prefix, or of none

    @property
    def fam(self) -> Family:
        return FAMILIES[self.family]

    @property
    def modality(self) -> Modality:
        return self.fam.modality

    @property
    def license(self) -> str:
        return self.fam.license

    @property
    def mean(self) -> tuple[float, ...]:
        return self.fam.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.fam.std

    @property
    def is_vit(self) -> bool:
        return self.patch > 0

    @property
    def patch(self) -> int:
        return self.fam.patch

    @property
    def align(self) -> int:
        return self.patch or 32

    @property
    def default_size(self) -> tuple[int, int]:
        """The input size used when none is given: what the model was trained at."""
        return self.fam.default_size

    @property
    def hub_file(self) -> str:
        return self.fam.hub_file or f"{self.name}.pth"

    @property
    def local_file(self) -> str:
        """Below models/: DeFM's files by their own names; Theia's and LingBot's share one name per family,
        so one folder each (as `huggingface-cli download ... --local-dir models/<name>` puts them)."""
        return f"{self.name}/{self.hub_file}" if self.fam.hub_file else self.hub_file


# The teachers each Theia release was distilled from (Theia's configs/training/target_models/<tag>.yaml), in the
# names its translator heads carry: translator.translator_heads.<teacher>.*
_CDIV = ("google/vit-huge-patch14-224-in21k", "facebook/dinov2-large", "openai/clip-vit-large-patch14")
THEIA_TEACHERS = {"cdiv": _CDIV, "cddsv": _CDIV + ("facebook/sam-vit-huge", "LiheYoung/depth-anything-large-hf")}


def _theia(size: str, dim: int, heads: int, params_m: float, tag: str) -> ModelSpec:
    """`tag`: the teachers (cdiv: CLIP, DINOv2, ViT, the paper's models, named theia_<size>; cddsv: all five,
    theia_<size>_cddsv). The training-time translator heads are left out by teacher, and a file holds all of
    its release's heads or none (a backbone alone)."""
    heads_ = tuple(f"translator.translator_heads.{t}." for t in THEIA_TEACHERS[tag])
    return ModelSpec(f"theia_{size}" + ("" if tag == "cdiv" else f"_{tag}"), "theia", f"deit_{size}", dim, dim,
                     params_m, depth=12, num_heads=heads, hub_repo=f"theaiinstitute/theia-{size}-patch16-224-{tag}",
                     checkpoint_prefix="backbone.model.", skipped_prefixes=heads_, skipped_together=True)


_SPECS = [
    ModelSpec("defm_vit_l14", "vit", "vit_large", 1024, 1024, 307.0, depth=24, num_heads=16),
    ModelSpec("defm_vit_s14", "vit", "vit_small", 384, 384, 22.1, depth=12, num_heads=6),
    ModelSpec("defm_resnet18", "resnet", "resnet18", 512, 128, 11.7),
    ModelSpec("defm_resnet34", "resnet", "resnet34", 512, 256, 21.8),
    ModelSpec("defm_resnet50", "resnet", "resnet50", 2048, 256, 26.2),
    ModelSpec("defm_efficientnet_b0", "efficientnet", "efficientnet_b0", 192, 64, 3.01),
    ModelSpec("defm_efficientnet_b2", "efficientnet", "efficientnet_b2", 208, 128, 4.95),
    ModelSpec("defm_efficientnet_b4", "efficientnet", "efficientnet_b4", 272, 256, 14.16),
    ModelSpec("defm_efficientnet_b6", "efficientnet", "efficientnet_b6", 344, 256, 28.98),
    ModelSpec("defm_regnet_y_400mf", "regnet", "regnet_y_400mf", 440, 64, 4.1),
    ModelSpec("defm_regnet_y_800mf", "regnet", "regnet_y_800mf", 784, 128, 6.3),
    ModelSpec("defm_regnet_y_1_6gf", "regnet", "regnet_y_1_6gf", 888, 256, 12.4),
    *(_theia(size, dim, heads, params_m, tag) for tag in THEIA_TEACHERS
      for size, dim, heads, params_m in (("tiny", 192, 3, 5.5), ("small", 384, 6, 21.7), ("base", 768, 12, 85.8))),
]

def _lingbot(name: str, repo: str, params_m: float, decoder: bool) -> ModelSpec:
    """The architecture comes from each checkpoint's model_config; the widths are the published ViT-L's.
    Heads that upstream's config names but its model never builds are left out by name; the feature
    model leaves out the decoder too."""
    skipped = ("normal_head.", "scale_head.") + (() if decoder else ("neck.", "depth_head.", "mask_head."))
    return ModelSpec(name, "lingbot", "dinov2_vitl14", 1024, 1024, params_m, depth=24, num_heads=16,
                     hub_repo=f"robbyant/{repo}", skipped_prefixes=skipped)


_SPECS.append(_lingbot("lingbot_rgbd_vitl14", "lingbot-depth-pretrain-vitl-14", 304.4, decoder=False))
MODELS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
# Refiners: raw sensor depth + aligned colour -> complete metric depth (refiner.Refiner), not encoders.
REFINERS: dict[str, ModelSpec] = {s.name: s for s in (
    _lingbot("lingbot_depth_vitl14", "lingbot-depth-pretrain-vitl-14", 321.0, decoder=True),
    _lingbot("lingbot_depth_dc_vitl14", "lingbot-depth-postrain-dc-vitl14", 321.0, decoder=True),
)}


def get_spec(name: str, zoo: dict[str, ModelSpec] = MODELS) -> ModelSpec:
    """Look a variant up by name (in MODELS, or REFINERS); the error lists the valid names."""
    try:
        return zoo[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(zoo)}") from None


def dense_stride(spec: ModelSpec, dense_level: str = DEFAULT_DENSE_LEVEL) -> int:
    """Stride of the dense map: the patch size for ViTs, the BiFPN level's stride for CNNs."""
    stride = DENSE_LEVELS[check_choice("dense_level", dense_level, list(DENSE_LEVELS))]
    return spec.patch or stride
