"""DeFM's distilled CNNs: a torchvision backbone with GroupNorm instead of BatchNorm, and a BiFPN.

Parameter names match the official checkpoints (upstream wraps the backbone with torchvision's
feature extractor, which keeps the original module paths). Backbones are built with
`weights=None`, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from ..config import DEFAULT_DENSE_LEVEL, DENSE_LEVELS
from .registry import ModelSpec

LEVELS = tuple(DENSE_LEVELS)  # P3, P4, P5 from backbone stages C3, C4, C5


def group_norm_for(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """Upstream's BatchNorm replacement: the largest power-of-two group count that divides."""
    groups = max_groups
    while groups > 1 and channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels)


def replace_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, group_norm_for(child.num_features))
        else:
            replace_batchnorm(child)
    return module


class _ResNetTrunk(nn.Module):
    def __init__(self, arch: str) -> None:
        super().__init__()
        net = getattr(tvm, arch)(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class _EfficientNetTrunk(nn.Module):
    def __init__(self, arch: str) -> None:
        super().__init__()
        self.features = nn.Sequential(*list(getattr(tvm, arch)(weights=None).features)[:7])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, stage in enumerate(self.features):
            x = stage(x)
            if i in (3, 4, 6):
                out.append(x)
        return out


class _RegNetTrunk(nn.Module):
    def __init__(self, arch: str) -> None:
        super().__init__()
        net = getattr(tvm, arch)(weights=None)
        self.stem, self.trunk_output = net.stem, net.trunk_output

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.trunk_output):
            x = block(x)
            if i >= 1:
                out.append(x)
        return out


TRUNKS: dict[str, Callable[[str], nn.Module]] = {
    "resnet": _ResNetTrunk,
    "efficientnet": _EfficientNetTrunk,
    "regnet": _RegNetTrunk,
}


class WeightedFusion(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-6)
        return w[0] * a + w[1] * b


class BiFPNLayer(nn.Module):
    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.fuse_topdown = nn.ModuleList(WeightedFusion(2) for _ in range(levels - 1))
        self.fuse_bottomup = nn.ModuleList(WeightedFusion(2) for _ in range(levels - 1))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(levels))

    def forward(self, feats: list[torch.Tensor], want: int) -> torch.Tensor:
        """Only the path that level `want` depends on is computed (its conv, not the others')."""
        n = len(feats)
        td = list(feats)
        for i in range(n - 2, -1, -1):
            up = F.interpolate(td[i + 1], size=feats[i].shape[-2:], mode="nearest")
            td[i] = self.fuse_topdown[i](feats[i], up)
        out = td[0]
        for i in range(1, want + 1):
            out = self.fuse_bottomup[i - 1](td[i], F.max_pool2d(out, kernel_size=2, stride=2))
        return self.convs[want](out)


class BiFPN(nn.Module):
    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.blocks = nn.ModuleList([BiFPNLayer(channels, len(in_channels))])

    def forward(self, feats: list[torch.Tensor], want: int) -> torch.Tensor:
        return self.blocks[0]([p(f) for p, f in zip(self.proj, feats, strict=True)], want)


class DeFMCNN(nn.Module):
    """Returns (LayerNorm(avg-pooled C5) (B, C), LayerNorm'd BiFPN level (B, C', h, w))."""

    def __init__(self, spec: ModelSpec, dense_level: str = DEFAULT_DENSE_LEVEL) -> None:
        super().__init__()
        self.level = LEVELS.index(dense_level)
        self.backbone = replace_batchnorm(TRUNKS[spec.family](spec.arch))
        with torch.no_grad():
            chans = [f.shape[1] for f in self.backbone(torch.zeros(1, 3, 64, 64))]
        self.fpn = BiFPN(chans, spec.dense_dim)
        self.norm_cls = nn.LayerNorm(chans[-1], eps=1e-6)
        self.norm_patch = nn.LayerNorm(spec.dense_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        cls = self.norm_cls(feats[-1].mean(dim=(2, 3)))
        dense = self.fpn(feats, self.level)
        dense = self.norm_patch(dense.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return cls, dense
