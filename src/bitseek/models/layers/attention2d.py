"""Local-branch layers of DOLG / CSCE-Net: multi-atrous convolutions and spatial attention.

* :class:`MultiAtrous` is DOLG's ASPP: a 1x1 branch, three dilated 3x3 branches and an image-pool
  branch, concatenated and fused by a 1x1 conv + ReLU. The CSCE-Net paper figure puts it before the
  attention; the released CSCE-Net code leaves it out.
* :class:`SpatialAttention2d` is DOLG's attention: 1x1 conv -> BN -> ReLU -> 1x1 conv -> Softplus
  gives a non-negative score per position, which weights the channel-wise L2-normalised BN feature
  map (normalised *before* the ReLU, as in the reference code).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import ConfigError

__all__ = ["MultiAtrous", "SpatialAttention2d", "resnet_style_init_"]


def resnet_style_init_(conv: nn.Conv2d) -> None:
    """N(0, sqrt(2 / fan_out)) weights (pycls/DOLG ``init_weights``); biases keep PyTorch's default."""
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))


class SpatialAttention2d(nn.Module):
    """Softplus spatial attention over an L2-normalised feature map.

    Returns ``(attended map (B, channels, H, W), score (B, 1, H, W))``. ``bn_momentum`` defaults to
    the released CSCE-Net value 0.9 (PyTorch convention: weight of the new batch statistics).
    """

    def __init__(self, in_channels: int, channels: int, bn_momentum: float = 0.9, bn_eps: float = 1e-5) -> None:
        super().__init__()
        if in_channels < 1 or channels < 1:
            raise ConfigError(f"SpatialAttention2d: channels must be positive, got {in_channels} -> {channels}")
        self.conv1 = nn.Conv2d(in_channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, 1, 1)
        self.softplus = nn.Softplus(beta=1, threshold=20)
        resnet_style_init_(self.conv1)
        resnet_style_init_(self.conv2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.bn(self.conv1(x))
        normed = F.normalize(x, p=2, dim=1)
        score = self.softplus(self.conv2(self.act(x)))
        return score * normed, score


class MultiAtrous(nn.Module):
    """DOLG's atrous spatial pyramid: 1x1 + dilated 3x3 branches + image pooling, fused by 1x1 + ReLU.

    DOLG uses ``branch_channels=512``, ``out_channels=1024``, dilations (6, 12, 18) on a 1024-channel
    stage-3 map. Branches have no BN and no activation (only the pooled branch and the fusion have a
    ReLU), as in the reference.
    """

    def __init__(self, in_channels: int, out_channels: int, branch_channels: int | None = None,
                 dilations: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        bc = int(branch_channels or max(1, out_channels // 2))
        if in_channels < 1 or out_channels < 1 or bc < 1:
            raise ConfigError(f"MultiAtrous: channels must be positive, got in={in_channels}, out={out_channels}, "
                              f"branch={bc}")
        if not dilations or min(dilations) < 1:
            raise ConfigError(f"MultiAtrous: dilations must be positive integers, got {list(dilations)}")
        self.branches = nn.ModuleList([nn.Conv2d(in_channels, bc, 1)])
        for d in dilations:
            self.branches.append(nn.Conv2d(in_channels, bc, 3, padding=int(d), dilation=int(d)))
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, bc, 1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(bc * (len(self.branches) + 1), out_channels, 1), nn.ReLU())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                resnet_style_init_(m)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        # Bilinear up-sampling of a 1x1 map is a constant map: broadcast instead.
        pooled = self.image_pool(x).expand(-1, -1, h, w)
        return self.fuse(torch.cat([pooled] + [b(x) for b in self.branches], dim=1))
