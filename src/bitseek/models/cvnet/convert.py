"""The authors' ``CVPR2022_CVNet_R{50,101}.pyth`` -> :class:`~bitseek.models.cvnet.model.CVNet` names.

The released files are pycls checkpoints (``{"model_state": {...}, ...}``) of the official
``CVNet_Rerank`` module. Every key is renamed by one rule below, or the import fails:

============================================  ==================================================
official                                      ours
============================================  ==================================================
``encoder_q.stem.conv`` / ``.stem.bn``        ``backbone.conv1`` / ``backbone.bn1``
``encoder_q.s{L}.b{i}.f.{a,b,c}``             ``backbone.layer{L}.{i-1}.conv{1,2,3}``
``encoder_q.s{L}.b{i}.f.{a,b,c}_bn``          ``backbone.layer{L}.{i-1}.bn{1,2,3}``
``encoder_q.s{L}.b1.proj`` / ``.b1.bn``       ``backbone.layer{L}.0.downsample.0`` / ``.1``
``encoder_q.head.pool.p``                     ``pool.p``
``encoder_q.head.fc``                         ``whiten``
``conv2ds.{j}``                               ``rerank.scale_convs.{j}``
``cv_learner.block{b}.{3j}.conv1`` / conv2    ``rerank.learner.blocks.{b-1}.{j}.conv.query_conv`` / key_conv
``cv_learner.block{b}.{3j+1}`` (GroupNorm)    ``rerank.learner.blocks.{b-1}.{j}.norm``
``cv_learner.mlp.{0,2}``                      ``rerank.learner.classifier.{0,2}``
============================================  ==================================================

The re-ranker has 61 keys (7,486,114 parameters) for both depths; the backbone 318 (R50) or 624
(R101) with BatchNorm's ``num_batches_tracked``.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import torch
from torch import Tensor

from bitseek.errors import FileFormatError
from bitseek.registry import CONVERTERS

__all__ = ["RERANK_KEYS", "convert_official", "depth_of_official", "to_official"]

RERANK_KEYS = 61
_STAGE3_BLOCKS = {6: 50, 23: 101}

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
Rule = Callable[[re.Match[str]], "str | None"]  # official key match -> our key (None: not a real key)
_RULES: tuple[tuple[re.Pattern[str], Rule], ...] = tuple((re.compile(p + r"$"), r) for p, r in (
    (r"encoder_q\.stem\.conv\.weight", lambda m: "backbone.conv1.weight"),
    (rf"encoder_q\.stem\.bn\.{_BN}", lambda m: f"backbone.bn1.{m[1]}"),
    (r"encoder_q\.s([1-4])\.b(\d+)\.f\.([abc])\.weight",
     lambda m: f"backbone.layer{m[1]}.{int(m[2]) - 1}.conv{'abc'.index(m[3]) + 1}.weight"),
    (rf"encoder_q\.s([1-4])\.b(\d+)\.f\.([abc])_bn\.{_BN}",
     lambda m: f"backbone.layer{m[1]}.{int(m[2]) - 1}.bn{'abc'.index(m[3]) + 1}.{m[4]}"),
    (r"encoder_q\.s([1-4])\.b1\.proj\.weight", lambda m: f"backbone.layer{m[1]}.0.downsample.0.weight"),
    (rf"encoder_q\.s([1-4])\.b1\.bn\.{_BN}", lambda m: f"backbone.layer{m[1]}.0.downsample.1.{m[2]}"),
    (r"encoder_q\.head\.pool\.p", lambda m: "pool.p"),
    (r"encoder_q\.head\.fc\.(weight|bias)", lambda m: f"whiten.{m[1]}"),
    (r"conv2ds\.(\d+)\.weight", lambda m: f"rerank.scale_convs.{m[1]}.weight"),
    (r"cv_learner\.block([1-9])\.(\d+)\.conv([12])\.(weight|bias)",  # Conv4d at 3j
     lambda m: f"rerank.learner.blocks.{int(m[1]) - 1}.{int(m[2]) // 3}.conv."
               f"{'query_conv' if m[3] == '1' else 'key_conv'}.{m[4]}" if int(m[2]) % 3 == 0 else None),
    (r"cv_learner\.block([1-9])\.(\d+)\.(weight|bias)",  # GroupNorm at 3j + 1
     lambda m: f"rerank.learner.blocks.{int(m[1]) - 1}.{int(m[2]) // 3}.norm.{m[3]}"
               if int(m[2]) % 3 == 1 else None),
    (r"cv_learner\.mlp\.([02])\.(weight|bias)", lambda m: f"rerank.learner.classifier.{m[1]}.{m[2]}"),
))


def _rename(key: str) -> str | None:
    for pattern, rule in _RULES:
        m = pattern.match(key)
        if m:
            return rule(m)
    return None


def depth_of_official(state_dict: Mapping[str, Tensor]) -> int | None:
    """ResNet depth of an official state dict, from its number of stage-3 blocks (None if unknown)."""
    blocks = {int(m[1]) for k in state_dict if (m := re.match(r"encoder_q\.s3\.b(\d+)\.", k))}
    return _STAGE3_BLOCKS.get(len(blocks))


@CONVERTERS.register("cvnet")
def convert_official(state_dict: Mapping[str, Tensor], model: torch.nn.Module | None = None) -> dict[str, Tensor]:
    """Official ``CVNet_Rerank`` state dict -> :class:`CVNet` state dict, every key accounted for.

    With ``model`` given, a file of another ResNet depth is refused by name, and BatchNorm
    ``num_batches_tracked`` counters missing from the file (unused at inference) are filled with 0.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise FileFormatError(f"CVNet checkpoint: {len(unknown)} key(s) that are not part of the official "
                              f"CVNet_Rerank model, e.g. {unknown[:5]}")
    if model is not None:
        want = getattr(getattr(model, "cfg", None), "depth", None)
        got = depth_of_official(state_dict)
        if want is not None and got is not None and got != want:
            raise FileFormatError(f"CVNet checkpoint is a ResNet-{got} model but the config says depth={want}: "
                                  f"build it with MODELS.config('cvnet', depth={got}) (model.depth={got})")
        for name, buf in model.state_dict().items():
            if name.endswith("num_batches_tracked") and name not in out:
                out[name] = torch.zeros_like(buf)
    return out


def to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our :class:`CVNet` state dict under the official names (the inverse of :func:`convert_official`)."""
    inverse: dict[str, str] = {}
    for key in _official_names(state_dict):
        inverse[_rename(key) or ""] = key
    missing = [k for k in state_dict if k not in inverse]
    if missing:
        raise FileFormatError(f"to_official: no official name for {missing[:5]}")
    return {inverse[k]: v for k, v in state_dict.items()}


def _official_names(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Candidate official names for every key of our state dict (built from its layer indices)."""
    names = []
    for k in state_dict:
        if m := re.match(r"backbone\.layer(\d)\.(\d+)\.(conv|bn)(\d)\.(.+)$", k):
            part = "abc"[int(m[4]) - 1] + ("_bn" if m[3] == "bn" else "")
            names.append(f"encoder_q.s{m[1]}.b{int(m[2]) + 1}.f.{part}.{m[5]}")
        elif m := re.match(r"backbone\.layer(\d)\.0\.downsample\.([01])\.(.+)$", k):
            names.append(f"encoder_q.s{m[1]}.b1.{'proj' if m[2] == '0' else 'bn'}.{m[3]}")
        elif m := re.match(r"backbone\.(conv1|bn1)\.(.+)$", k):
            names.append(f"encoder_q.stem.{'conv' if m[1] == 'conv1' else 'bn'}.{m[2]}")
        elif k == "pool.p":
            names.append("encoder_q.head.pool.p")
        elif m := re.match(r"whiten\.(.+)$", k):
            names.append(f"encoder_q.head.fc.{m[1]}")
        elif m := re.match(r"rerank\.scale_convs\.(\d+)\.weight$", k):
            names.append(f"conv2ds.{m[1]}.weight")
        elif m := re.match(r"rerank\.learner\.blocks\.(\d+)\.(\d+)\.conv\.(query|key)_conv\.(.+)$", k):
            names.append(f"cv_learner.block{int(m[1]) + 1}.{3 * int(m[2])}.conv{1 if m[3] == 'query' else 2}.{m[4]}")
        elif m := re.match(r"rerank\.learner\.blocks\.(\d+)\.(\d+)\.norm\.(.+)$", k):
            names.append(f"cv_learner.block{int(m[1]) + 1}.{3 * int(m[2]) + 1}.{m[3]}")
        elif m := re.match(r"rerank\.learner\.classifier\.(\d)\.(.+)$", k):
            names.append(f"cv_learner.mlp.{m[1]}.{m[2]}")
    return names
