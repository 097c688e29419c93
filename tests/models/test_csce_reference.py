"""CSCE-Net against the released ``ResNet_DOLG`` (NetEase-Media/CSCE-Net ``network_patch_global.py``).

The reference checkpoint layout is written out here from the released module definitions (names and
shapes), not derived from our own state dict, and the reference forward is restated with plain
tensor ops (tests/models/reference_nets.py). So a wrong concatenation order ``[f_c, f_o]``, a wrong
window-scale order, windows detached inside the attention-guided extraction, or a renaming that
only happens to be self-consistent all fail here. The quantisation wiring (``2·hardtanh(v)`` and
the DSF target taken from it) is checked at model level with losses computed from the paper's
formulas.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from bitseek.errors import InputError
from bitseek.models.csce import convert_reference_state_dict
from bitseek.registry import create_model

torch.set_num_threads(1)


def _load_reference():
    spec = importlib.util.spec_from_file_location("bitseek_test_reference_nets",
                                                  Path(__file__).with_name("reference_nets.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()


# --------------------------------------------------------------------------- the released layout


def _bn(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {prefix + "weight": (n,), prefix + "bias": (n,), prefix + "running_mean": (n,),
            prefix + "running_var": (n,), prefix + "num_batches_tracked": ()}


def torchvision_resnet_shapes(bottleneck: bool, layers: list[int], widths: list[int],
                              stem_kernel: int = 7) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of torchvision's ResNet (without ``fc``), from its definition."""
    exp = 4 if bottleneck else 1
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (widths[0], 3, stem_kernel, stem_kernel),
                                          **_bn("bn1.", widths[0])}
    inplanes = widths[0]
    for i, (n, planes) in enumerate(zip(layers, widths), start=1):
        for j in range(n):
            p = f"layer{i}.{j}."
            stride = 1 if (i == 1 or j > 0) else 2
            if bottleneck:
                shapes[p + "conv1.weight"] = (planes, inplanes, 1, 1)
                shapes[p + "conv2.weight"] = (planes, planes, 3, 3)
                shapes[p + "conv3.weight"] = (planes * 4, planes, 1, 1)
                shapes.update(_bn(p + "bn1.", planes) | _bn(p + "bn2.", planes) | _bn(p + "bn3.", planes * 4))
            else:
                shapes[p + "conv1.weight"] = (planes, inplanes, 3, 3)
                shapes[p + "conv2.weight"] = (planes, planes, 3, 3)
                shapes.update(_bn(p + "bn1.", planes) | _bn(p + "bn2.", planes))
            if stride != 1 or inplanes != planes * exp:
                shapes[p + "downsample.0.weight"] = (planes * exp, inplanes, 1, 1)
                shapes.update(_bn(p + "downsample.1.", planes * exp))
            inplanes = planes * exp
    return shapes


def resnet_dolg_shapes(c3: int, c4: int, dim: int, n_windows: int, bits: int, classes: int) -> dict[str, tuple]:
    """The head of ``ResNet_DOLG``: released sizes are c3=dim=1024, c4=2048, 52 windows."""
    return {
        "localmodel.conv1.weight": (dim, c3, 1, 1), "localmodel.conv1.bias": (dim,), **_bn("localmodel.bn.", dim),
        "localmodel.conv2.weight": (1, dim, 1, 1), "localmodel.conv2.bias": (1,),
        "conv_f4_s1.weight": (dim // 4, c4, 1, 1), "conv_f4_s1.bias": (dim // 4,),
        "conv_f4_s2.weight": (dim // 16, c4, 1, 1), "conv_f4_s2.bias": (dim // 16,),
        "conv_last.weight": (1, n_windows, 1), "conv_last.bias": (1,),
        "fc.weight": (bits, 2 * dim), "fc.bias": (bits,),
        "fc_t.weight": (1, 2 * dim), "fc_t.bias": (1,),
        "ce_fc.centroids": (classes, bits),
    }


def random_state(shapes: dict[str, tuple], seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Random tensors for ``shapes``; BN variances positive, weights scaled by fan-in so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(s, generator=g, dtype=dtype)
        elif k.endswith("running_mean") or k.endswith("bias"):
            sd[k] = 0.1 * torch.randn(s, generator=g, dtype=dtype)
        elif k.startswith(("bn", "localmodel.bn")) or ".bn" in k or "downsample.1" in k:
            sd[k] = 0.5 + 0.5 * torch.rand(s, generator=g, dtype=dtype)
        else:
            fan_in = max(1, math.prod(s[1:])) if len(s) > 1 else 1
            sd[k] = torch.randn(s, generator=g, dtype=dtype) / math.sqrt(fan_in)
    return sd


def with_sequential_duplicates(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``ResNet_DOLG.input`` is an ``nn.Sequential(conv1, bn1, relu, maxpool, layer1, layer2)``
    sharing those modules, so its state dict holds them a second time under ``input.<i>.``."""
    out = dict(sd)
    for index, prefix in ((0, "conv1."), (1, "bn1."), (4, "layer1."), (5, "layer2.")):
        for k, v in sd.items():
            if k.startswith(prefix):
                out[f"input.{index}." + k[len(prefix):]] = v
    return out


MINI = dict(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1])  # BasicBlock: c3 = 32, c4 = 64; 32 px -> 4x4 stage 4


def _mini_reference(bits: int = 16, classes: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    shapes = torchvision_resnet_shapes(False, MINI["blocks"], MINI["widths"], stem_kernel=3)
    shapes |= resnet_dolg_shapes(c3=32, c4=64, dim=32, n_windows=3 * 3 + 1 * 1, bits=bits, classes=classes)
    return random_state(shapes, seed)


def _mini_model(bits: int = 16, classes: int = 4, signt: float = 10.0, **kw):
    return create_model("csce", bits=bits, num_classes=classes, backbone="resnet-mini", image_size=32,
                        backbone_args=dict(MINI), local_branch="attention", signt=signt, **kw)


def _reference_forward(x: torch.Tensor, sd: dict[str, torch.Tensor], signt: float) -> dict[str, torch.Tensor]:
    f3, f4 = ref.resnet_stages(x, sd, stem_stride=1, maxpool=False)
    return ref.resnet_dolg_head(f3, f4, sd, signt)


# --------------------------------------------------------------------------- names and shapes


def test_released_resnet50_layout_loads_strictly() -> None:
    """Every tensor of a 64-bit ImageNet-100 ``ResNet_DOLG`` (ResNet-50, 224 px) has a place in CSCENet."""
    shapes = torchvision_resnet_shapes(True, [3, 4, 6, 3], [64, 128, 256, 512])
    shapes |= resnet_dolg_shapes(c3=1024, c4=2048, dim=1024, n_windows=52, bits=64, classes=100)
    sd = with_sequential_duplicates({k: torch.zeros(s) if s else torch.tensor(0) for k, s in shapes.items()})
    sd = {"module." + k: v for k, v in sd.items()}  # DataParallel, as the released training script saves
    model = create_model("csce", bits=64, num_classes=100, backbone="resnet50", local_branch="attention")
    converted = convert_reference_state_dict(sd)
    own = model.state_dict()
    assert sorted(converted) == sorted(own)
    bad = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in converted.items() if v.shape != own[k].shape}
    assert not bad
    model.load_state_dict(converted, strict=True)


def test_unknown_reference_keys_are_errors() -> None:
    sd = _mini_reference()
    convert_reference_state_dict(sd)
    with pytest.raises(InputError, match="pool_g.p"):
        convert_reference_state_dict({**sd, "pool_g.p": torch.ones(1)})  # GeM-P is not part of ResNet_DOLG


# --------------------------------------------------------------------------- forward and gradients


def _loaded_pair(seed: int = 0):
    sd = _mini_reference(seed=seed)
    model = _mini_model().double()
    model.load_state_dict(convert_reference_state_dict(with_sequential_duplicates(sd)), strict=True)
    return model.eval(), sd


def test_forward_equals_the_released_network() -> None:
    model, sd = _loaded_pair()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        want = _reference_forward(x, sd, signt=10.0)
    for key, tol in (("codes", 1e-9), ("threshold", 1e-9), ("logits", 1e-6)):  # logits: float32 by design
        scale = want[key].abs().max().item()
        assert scale > 0, key
        assert (got[key].double() - want[key]).abs().max().item() <= tol * max(scale, 1.0), key
    assert want["threshold"].abs().max().item() < 10.0  # unclamped, so fc_t's wiring is compared too


def test_gradients_equal_the_released_network() -> None:
    """Gradients reach the window convolutions through both the fusion (f_c) and the projection (f_o)."""
    model, sd = _loaded_pair(seed=2)
    leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in sd.items()}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    r = torch.randn(2, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = model(x)
    (got["codes"] * r).sum().backward()
    want = _reference_forward(x, leaves, signt=10.0)
    (want["codes"] * r).sum().backward()
    pairs = {"windows.convs.0.weight": "conv_f4_s1.weight", "windows.convs.1.weight": "conv_f4_s2.weight",
             "window_fuse.weight": "conv_last.weight", "local.attention.conv1.weight": "localmodel.conv1.weight",
             "local.attention.conv2.weight": "localmodel.conv2.weight", "hash_fc.weight": "fc.weight",
             "backbone.layer4.0.conv1.weight": "layer4.0.conv1.weight"}
    params = dict(model.named_parameters())
    for ours, theirs in pairs.items():
        g_ref = leaves[theirs].grad
        scale = g_ref.abs().max().item()
        assert scale > 0, theirs
        assert (params[ours].grad - g_ref).abs().max().item() <= 1e-9 * scale, ours


# --------------------------------------------------------------------------- quantisation wiring

# 16 continuous code values chosen so each wiring choice changes the result: |v| > 0.5 (clipped by
# 2·hardtanh), v in (t/2, t) (ambiguous for the DSF of raw v, not of 2·hardtanh(v)), and 12 positives
# (> bits/2 = 8, so ambiguous bits fill with -1).
V = [0.9, 1.3, 0.7, 0.6, 0.8, 0.2, 0.3, 0.4, 0.1, 0.007, 0.008, -0.003, -0.6, -1.2, -0.9, 0.002]
T = 0.01


def _fixed_code_model():
    model = _mini_model(signt=T, elastic_std=0.0).double()
    with torch.no_grad():
        model.hash_fc.weight.zero_()
        model.hash_fc.bias.copy_(torch.tensor(V, dtype=torch.float64))
        model.thresh_fc.weight.zero_()
        model.thresh_fc.bias.fill_(1.0)  # clamped to signt = T
    return model


def _spec_dsf(x: list[float], t: float, balance: float) -> list[float]:
    fill = -1.0 if sum(1 for a in x if a > 0) > balance else 1.0
    return [fill if -t < a < t else math.copysign(1.0, a) if a != 0 else 0.0 for a in x]


def test_training_losses_follow_the_paper_formulas() -> None:
    model = _fixed_code_model()
    labels = torch.eye(4, dtype=torch.float64)[[0, 2]]
    batch = {"image": torch.randn(2, 3, 32, 32, dtype=torch.float64), "label": labels}
    out = model.training_step(batch)
    # quantisation: c = 2·hardtanh(v) clipped to ±1, b = DSF(c, t) with balance bits/2; 1 - cos(c, b)
    c = [2 * max(-0.5, min(0.5, a)) for a in V]
    b = _spec_dsf(c, T, 8.0)
    cos_cb = sum(x * y for x, y in zip(c, b)) / math.sqrt(sum(x * x for x in c) * sum(y * y for y in b))
    assert out["quan"].item() == pytest.approx(1 - cos_cb, rel=1e-6)  # the loss runs in float32
    # classification: ArcFace margin m = 0.15 on the true class, scale s = 10, cross-entropy
    centres = model.centers.tolist()
    norm_v = math.sqrt(sum(a * a for a in V))
    cls = []
    for y in (0, 2):
        cosines = [sum(a * w for a, w in zip(V, row)) / norm_v / math.sqrt(sum(w * w for w in row))
                   for row in centres]
        logits = [10 * (math.cos(math.acos(max(-0.99999, min(0.99999, cs))) + (0.15 if j == y else 0.0)))
                  for j, cs in enumerate(cosines)]
        m = max(logits)
        cls.append(m + math.log(sum(math.exp(z - m) for z in logits)) - logits[y])
    assert out["cls"].item() == pytest.approx(sum(cls) / 2, rel=1e-6)
    assert out["loss"].item() == pytest.approx(sum(cls) / 2 + (1 - cos_cb), rel=1e-6)


def test_retrieval_codes_are_the_dsf_of_the_raw_code() -> None:
    model = _fixed_code_model().eval()
    codes = model.encode({"image": torch.randn(2, 3, 32, 32, dtype=torch.float64)})
    expected = _spec_dsf(V, T, 8.0)
    assert expected == [1.0] * 9 + [-1.0] * 7
    assert codes.tolist() == [expected, expected]
