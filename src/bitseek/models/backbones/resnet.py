"""ResNets in torchvision's layout, with feature taps before or after each stage's last activation.

The networks are written in our code but use **torchvision's parameter names** (``conv1``, ``bn1``,
``layer1`` .. ``layer4``), so an ImageNet ``resnet50-*.pth`` or ``.safetensors`` file loads as it is
(``fc.*`` is ignored). PyPI torchvision does not import beside this torch build, and nothing may be
downloaded at run time: weights always come from a local file. The structure is also CVNet's pycls
ResNet (stride on the 3x3, projection shortcut when the shape changes, BN eps 1e-5), so the authors'
encoder loads after renaming (``bitseek.models.cvnet.convert``).

``resnet-mini`` is a narrow ResNet-18-style network for CPU demos on small images (its stem keeps
the resolution, so 32 px inputs give 8x8 and 4x4 maps).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bitseek.errors import ConfigError
from bitseek.models.backbones.base import Backbone, FeatureInfo, FeaturePoint, register_backbone

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _act(relu: nn.Module, x: Tensor, floor: float) -> Tensor:
    """ReLU, or with ``floor > 0`` SuperGlobal's ReLU+ ``max(x, floor)``; floor 0 runs the very same op."""
    return relu(x) if floor == 0.0 else x.clamp(min=floor)


class _Block(nn.Module):
    """Activation floors of a residual block (0 = ReLU), set by ``ResNet.set_activation_floor``; not weights."""

    out_floor: float = 0.0  # the block's final activation
    inner_floor: float = 0.0  # the activations inside the residual branch

    def activate(self, pre: Tensor) -> Tensor:
        """The block's final activation, not in place (``pre`` stays a valid pre-activation tap)."""
        return torch.relu(pre) if self.out_floor == 0.0 else pre.clamp(min=self.out_floor)


class BasicBlock(_Block):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut: ResNet-18/34."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward_pre_act(self, x: Tensor) -> Tensor:
        """The residual sum, before the block's final ReLU."""
        idt = x if self.downsample is None else self.downsample(x)
        out = _act(self.relu, self.bn1(self.conv1(x)), self.inner_floor)
        out = self.bn2(self.conv2(out))
        return out + idt

    def forward(self, x: Tensor) -> Tensor:
        return _act(self.relu, self.forward_pre_act(x), self.out_floor)


class Bottleneck(_Block):
    """1x1 -> 3x3 (strided, "ResNet v1.5" as torchvision) -> 1x1 x4: ResNet-50/101."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward_pre_act(self, x: Tensor) -> Tensor:
        """The residual sum, before the block's final ReLU (may be negative)."""
        idt = x if self.downsample is None else self.downsample(x)
        out = _act(self.relu, self.bn1(self.conv1(x)), self.inner_floor)
        out = _act(self.relu, self.bn2(self.conv2(out)), self.inner_floor)
        out = self.bn3(self.conv3(out))
        return out + idt

    def forward(self, x: Tensor) -> Tensor:
        return _act(self.relu, self.forward_pre_act(x), self.out_floor)


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


class ResNet(Backbone):
    """torchvision's ResNet, truncated after ``layer4`` (no pooling, no ``fc``).

    Feature points: 0 = stem after its ReLU (before the max-pool, timm's ``act1``), 1-4 =
    ``layer1`` .. ``layer4``. The defaults are torchvision's ImageNet network; ``stem_kernel``/
    ``stem_stride``/``maxpool``/``strides``/``widths`` make the small-image variants (``resnet-mini``).
    """

    ignored_weight_prefixes = ("fc.",)

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: int | None = None,
                 stem_kernel: int = 7, stem_stride: int = 2, maxpool: bool = True,
                 strides: Sequence[int] = (1, 2, 2, 2)) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4 or len(strides) != 4:
            raise ConfigError(f"ResNet: layers, widths and strides need 4 entries each, got "
                              f"{list(layers)}, {list(widths)}, {list(strides)}")
        if min(layers) < 1 or min(widths) < 1 or min(strides) < 1 or stem_stride < 1 or stem_kernel < 1:
            raise ConfigError(f"ResNet: layers/widths/strides/stem must be positive, got layers={list(layers)}, "
                              f"widths={list(widths)}, strides={list(strides)}, stem_kernel={stem_kernel}, "
                              f"stem_stride={stem_stride}")
        self._stem = (stem_kernel, stem_stride, stem_kernel // 2)
        self._has_maxpool = maxpool
        self._strides = tuple(int(s) for s in strides)
        self.inplanes = int(stem_width or widths[0])
        self.conv1 = nn.Conv2d(3, self.inplanes, stem_kernel, stride=stem_stride, padding=stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if maxpool else nn.Identity()
        points = [FeaturePoint(self.inplanes, stem_stride, "act1")]
        self.layer1 = self._make_layer(block, widths[0], layers[0], strides[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], strides[1])
        self.layer3 = self._make_layer(block, widths[2], layers[2], strides[2])
        self.layer4 = self._make_layer(block, widths[3], layers[3], strides[3])
        reduction = stem_stride * (2 if maxpool else 1)
        for i, (w, s) in enumerate(zip(widths, self._strides), 1):
            reduction *= s
            points.append(FeaturePoint(w * block.expansion, reduction, f"layer{i}"))
        self.feature_info = FeatureInfo(points)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        mods: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def set_activation_floor(self, floor: float, stages: Sequence[int] = (1, 2, 3),
                             inner_stages: Sequence[int] = (1,)) -> None:
        """Clamp at ``floor`` instead of 0 (SuperGlobal's ReLU+; 0 restores plain ReLU).

        ``stages``: whose blocks' output activations change; ``inner_stages``: whose blocks' inner
        ReLUs (after the first one or two convs) change too. The stem's ReLU never changes. SuperGlobal
        uses floor 0.014 on the outputs of every block of stages 1-3 and the inner ReLUs of stage 1.
        Not part of the weights: the model's config sets it after construction."""
        floor = float(floor)
        if not floor >= 0.0:
            raise ConfigError(f"ResNet: activation floor must be >= 0, got {floor}")
        for name, which in (("stages", stages), ("inner_stages", inner_stages)):
            if not set(which) <= {1, 2, 3, 4}:
                raise ConfigError(f"ResNet: {name} must be stage numbers 1-4, got {list(which)}")
        for i, stage in enumerate(self.stages, 1):
            for blk in stage:
                blk.out_floor = floor if i in stages else 0.0
                blk.inner_floor = floor if i in inner_stages else 0.0

    @property
    def stages(self) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential, nn.Sequential]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None, *,
                              pre_act: Sequence[int] = ()) -> list[Tensor]:
        idx = self.out_indices if indices is None else self.check_indices(indices, "indices")
        pre = set(int(i) for i in pre_act)
        if not pre <= set(idx) or 0 in pre:
            raise ConfigError(f"ResNet: pre_act must be a subset of the requested stage indices (1-4), "
                              f"got pre_act={sorted(pre)} for indices {list(idx)}")
        got: dict[int, Tensor] = {}
        x = self.relu(self.bn1(self.conv1(x)))
        got[0] = x
        last = max(idx)
        if last > 0:
            x = self.maxpool(x)
        for i, stage in enumerate(self.stages[:last], 1):
            if i in pre:
                for blk in stage[:-1]:
                    x = blk(x)
                got[i] = stage[-1].forward_pre_act(x)
                x = stage[-1].activate(got[i])  # not in place: the pre-activation map is returned
            else:
                x = got[i] = stage(x)
        return [got[i] for i in idx]

    def _spatial_sizes(self, hw: tuple[int, int]) -> list[tuple[int, int]]:
        """Exact conv arithmetic of the stem, max-pool and strided 3x3/1x1 convolutions."""
        k, s, p = self._stem
        sizes = [_conv_out(n, k, s, p) for n in hw]
        out = [(sizes[0], sizes[1])]
        if self._has_maxpool:
            sizes = [_conv_out(n, 3, 2, 1) for n in sizes]
        for stride in self._strides:
            sizes = [_conv_out(n, 3, stride, 1) for n in sizes]
            out.append((sizes[0], sizes[1]))
        return out


@register_backbone("resnet18")
def resnet18() -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2))


@register_backbone("resnet34")
def resnet34() -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3))


@register_backbone("resnet50")
def resnet50() -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3))


@register_backbone("resnet101")
def resnet101() -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3))


@register_backbone("resnet-mini")
def resnet_mini(widths: Sequence[int] = (16, 32, 64, 128), blocks: Sequence[int] = (1, 1, 1, 1),
                stem_stride: int = 1, strides: Sequence[int] = (1, 2, 2, 2)) -> ResNet:
    """Narrow BasicBlock ResNet with a 3x3 stem and no max-pool, for 28-64 px CPU demos.

    With the defaults a 32 px image gives an 8x8 stage-3 and a 4x4 stage-4 map (64 px: use
    ``stem_stride=2`` for the same maps).
    """
    return ResNet(BasicBlock, tuple(blocks), widths=tuple(widths), stem_kernel=3, stem_stride=stem_stride,
                  maxpool=False, strides=tuple(strides))
