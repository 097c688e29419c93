"""timm's Global Context ViT as a backbone (optional extra ``bitseek[timm]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from torch import Tensor

from bitseek.errors import ConfigError
from bitseek.models.backbones.base import (Backbone, FeatureInfo, FeaturePoint, _pair, load_backbone_state,
                                           register_backbone)

__all__ = ["TimmGCViT"]


class TimmGCViT(Backbone):
    """timm's GC ViT; feature points 0 = stem (stride 4), 1-4 = ``stages[0..3]`` (strides 4-32), NCHW.

    GC ViT has window sizes fixed by its input size, so ``image_size`` must match the data's crop.
    The pretrained file is in timm's naming (``head.*`` ignored). Its blocks end in a residual sum
    with no activation after it, so ``pre_act`` taps do not exist here.
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
        dims = [int(s.dim) for s in self.net.stages]
        self.feature_info = FeatureInfo(
            [FeaturePoint(dims[0], 4, "stem")]
            + [FeaturePoint(d, r, f"stages.{i}") for i, (d, r) in enumerate(zip(dims, (4, 8, 16, 32)))])

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None, *,
                              pre_act: Sequence[int] = ()) -> list[Tensor]:
        idx = self.out_indices if indices is None else self.check_indices(indices, "indices")
        if pre_act:
            raise ConfigError("GC ViT has no activation after its blocks; pre_act taps exist only for ResNets")
        got = {0: self.net.stem(x)}
        x = got[0]
        for i, stage in enumerate(self.net.stages[:max(idx)], 1):
            x = got[i] = stage(x)
        return [got[i] for i in idx]

    def _spatial_sizes(self, hw: tuple[int, int]) -> list[tuple[int, int]]:
        if hw != self.image_size:
            raise ConfigError(f"GC ViT was built for {self.image_size} inputs, not {hw}")
        return [(hw[0] // r, hw[1] // r) for r in self.feature_info.reduction()]

    def load_pretrained_state(self, sd: dict[str, Tensor], source: str = "pretrained weights") -> None:
        # timm keys are relative to the bare model; ours sit under ``net.``
        load_backbone_state(self.net, sd, source, self.ignored_weight_prefixes)


def _gcvit(variant: str) -> Callable[..., Backbone]:
    def factory(image_size: int = 224, drop_path_rate: float = 0.0) -> Backbone:
        return TimmGCViT(variant, image_size=image_size, drop_path_rate=drop_path_rate)

    factory.__name__ = variant
    return factory


for _v in ("gcvit_xxtiny", "gcvit_xtiny", "gcvit_tiny", "gcvit_small", "gcvit_base"):
    register_backbone(_v)(_gcvit(_v))
