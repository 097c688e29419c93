"""Image backbones that expose their stage-3 and stage-4 feature maps.

CSCE-Net (like DOLG) reads two maps from the backbone: stage 3 (``layer3`` of a ResNet, stride 16)
feeds the local branch and stage 4 (``layer4``, stride 32) the global sliding windows. The ResNets
here are written in our code but use **torchvision's parameter names** (``conv1``, ``bn1``,
``layer1`` .. ``layer4``), so an ImageNet ``resnet50-*.pth`` or ``.safetensors`` file loads as it is
(``fc.*`` is ignored). PyPI torchvision does not import beside this torch build, and nothing may be
downloaded at run time: weights always come from a local file.

``resnet-mini`` is a narrow ResNet-18-style network for CPU demos on small images (its stem keeps
the resolution, so 32 px inputs give 8x8 and 4x4 maps). ``gcvit_*`` wrap timm's GC ViT (optional
extra ``bitseek[timm]``).

Use :func:`build_backbone` (``name``, optional ``weights`` path, backbone keyword arguments).
"""

from __future__ import annotations

import abc

import difflib
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from bitseek.errors import ConfigError, FileFormatError
from bitseek.train.checkpoint import load_state_into

__all__ = [
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "TimmGCViT",
    "build_backbone",
    "list_backbones",
    "load_backbone_weights",
    "read_state_dict",
    "register_backbone",
]


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """A network returning ``(stage3, stage4)`` feature maps, NCHW.

    ``out_channels`` gives their channel counts; ``feature_sizes(image_size)`` their spatial sizes,
    which heads with a fixed number of spatial windows (CSCE-Net) need at construction time.
    ``ignored_weight_prefixes`` are classifier keys a pretrained file may carry but we do not use.
    """

    out_channels: tuple[int, int]
    ignored_weight_prefixes: tuple[str, ...] = ()

    @abc.abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(stage-3 map, stage-4 map) of a batch of images."""

    @abc.abstractmethod
    def feature_sizes(self, image_size: int | Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Spatial sizes of the two maps for an input of ``image_size``."""

    def load_pretrained(self, path: str | Path) -> None:
        """Load weights in this backbone's own (torchvision/timm) naming from a local file."""
        load_backbone_weights(self, path, ignore_prefixes=self.ignored_weight_prefixes)


# --------------------------------------------------------------------------- ResNet (torchvision layout)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
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

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
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

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


class ResNet(Backbone):
    """torchvision's ResNet, truncated after ``layer4`` (no pooling, no ``fc``).

    The defaults are torchvision's ImageNet network; ``stem_kernel``/``stem_stride``/``maxpool``/
    ``strides``/``widths`` make the small-image variants (``resnet-mini``).
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
        self.layer1 = self._make_layer(block, widths[0], layers[0], strides[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], strides[1])
        self.layer3 = self._make_layer(block, widths[2], layers[2], strides[2])
        self.layer4 = self._make_layer(block, widths[3], layers[3], strides[3])
        self.out_channels = (widths[2] * block.expansion, widths[3] * block.expansion)
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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f3 = self.layer3(self.layer2(self.layer1(x)))
        return f3, self.layer4(f3)

    def feature_sizes(self, image_size: int | Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Exact conv arithmetic of the stem, max-pool and strided 3x3/1x1 convolutions."""
        hw = _pair(image_size)
        k, s, p = self._stem
        sizes = [_conv_out(n, k, s, p) for n in hw]
        if self._has_maxpool:
            sizes = [_conv_out(n, 3, 2, 1) for n in sizes]
        out = []
        for stride in self._strides:
            sizes = [_conv_out(n, 3, stride, 1) for n in sizes]
            out.append((sizes[0], sizes[1]))
        return out[2], out[3]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ConfigError(f"image size must be an int or (height, width), got {size!r}")
    return (int(size[0]), int(size[1]))


# --------------------------------------------------------------------------- GC ViT through timm


class TimmGCViT(Backbone):
    """timm's Global Context ViT; stage 3 (stride 16) and stage 4 (stride 32) outputs, NCHW.

    GC ViT has window sizes fixed by its input size, so ``image_size`` must match the data's crop.
    The pretrained file is in timm's naming (``head.*`` ignored).
    """

    ignored_weight_prefixes = ("head.",)

    def __init__(self, variant: str, image_size: int = 224, **timm_kwargs: Any) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ConfigError(f"backbone {variant!r} needs the optional package timm: "
                              "pip install bitseek[timm]") from None
        self.image_size = _pair(image_size)
        self.net = timm.create_model(variant, pretrained=False, num_classes=0, img_size=self.image_size,
                                     **timm_kwargs)
        if len(self.net.stages) != 4:
            raise ConfigError(f"backbone {variant!r}: expected 4 stages, got {len(self.net.stages)}")
        self.out_channels = (int(self.net.stages[2].dim), int(self.net.stages[3].dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.net.stem(x)
        x = self.net.stages[1](self.net.stages[0](x))
        f3 = self.net.stages[2](x)
        return f3, self.net.stages[3](f3)

    def feature_sizes(self, image_size: int | Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        hw = _pair(image_size)
        if hw != self.image_size:
            raise ConfigError(f"GC ViT was built for {self.image_size} inputs, not {hw}")
        return (hw[0] // 16, hw[1] // 16), (hw[0] // 32, hw[1] // 32)

    def load_pretrained(self, path: str | Path) -> None:
        # timm keys are relative to the bare model; ours sit under ``net.``
        load_backbone_weights(self.net, path, ignore_prefixes=self.ignored_weight_prefixes)


# --------------------------------------------------------------------------- weights


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a flat name -> tensor mapping from ``.safetensors`` or ``.pth``/``.pt``/``.bin``.

    ``.pth`` files are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling). A file
    holding ``{"state_dict": {...}}`` or ``{"model": {...}}`` is unwrapped, and a ``module.`` prefix
    that every key carries (DataParallel checkpoints) is stripped.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"{p}: weights file does not exist")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(p), device="cpu")
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise FileFormatError(f"{p}: not a valid safetensors file ({e})") from None
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors, truncated zip archives, non-tensor objects
            raise FileFormatError(f"{p}: cannot read as a PyTorch weights file ({e})") from None
    else:
        raise FileFormatError(f"{p}: unsupported weights format {suffix!r} (use .safetensors or .pth)")
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise FileFormatError(f"{p}: expected a mapping of parameter names to tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def load_backbone_weights(module: nn.Module, path: str | Path, ignore_prefixes: Iterable[str] = ()) -> None:
    """Strictly load ``path`` into ``module``; list missing/unexpected/mis-shaped keys on failure.

    Keys under ``ignore_prefixes`` (the ImageNet classifier) are dropped. ``num_batches_tracked``
    buffers may be absent (torchvision's original ResNet files predate them).
    """
    sd = read_state_dict(path)
    prefixes = tuple(ignore_prefixes)
    sd = {k: v for k, v in sd.items() if not (prefixes and k.startswith(prefixes))}
    load_state_into(module, sd, str(path), optional_suffixes=("num_batches_tracked",), cast=True)


# --------------------------------------------------------------------------- registry

_BACKBONES: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    def deco(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _BACKBONES and _BACKBONES[name] is not fn:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def build_backbone(name: str, weights: str | Path | None = None, *, image_size: int | None = None,
                   **kwargs: Any) -> Backbone:
    """Build a registered backbone, optionally loading local pretrained ``weights``.

    ``image_size`` is passed only to backbones with a fixed input size (GC ViT); fully
    convolutional ResNets accept any size. Unknown keyword arguments are a ConfigError.
    """
    if name not in _BACKBONES:
        near = difflib.get_close_matches(name, list(_BACKBONES), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"unknown backbone {name!r}{hint} (known: {', '.join(list_backbones())})")
    factory = _BACKBONES[name]
    params = inspect.signature(factory).parameters
    bad = sorted(k for k in kwargs if k not in params)
    if bad:
        valid = [k for k in params if k != "image_size"]
        raise ConfigError(f"backbone {name!r}: unknown argument(s) {bad} (valid: {', '.join(valid) or 'none'})")
    if image_size is not None and "image_size" in params:
        kwargs["image_size"] = image_size
    net = factory(**kwargs)
    if weights:
        net.load_pretrained(weights)
    return net


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


def _gcvit(variant: str) -> Callable[..., Backbone]:
    def factory(image_size: int = 224, drop_path_rate: float = 0.0) -> Backbone:
        return TimmGCViT(variant, image_size=image_size, drop_path_rate=drop_path_rate)

    factory.__name__ = variant
    return factory


for _v in ("gcvit_xxtiny", "gcvit_xtiny", "gcvit_tiny", "gcvit_small", "gcvit_base"):
    register_backbone(_v)(_gcvit(_v))

