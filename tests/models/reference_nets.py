"""From-scratch reference forwards written with plain tensor ops, used as test oracles.

Nothing here imports bitseek: each function restates a published network from its description and
reads its weights by the *published* parameter names, so a test comparing bitseek's modules with
these catches structural slips (a stride on the wrong convolution, a ReLU in the wrong place, a
concatenation in the wrong order) that shape and parameter-count checks cannot see.

* :func:`resnet_stages` — torchvision's ResNet ("v1.5": the stride of a bottleneck sits on its 3x3
  convolution; the residual is added before the block's last ReLU), returning stages 3 and 4.
* :func:`spatial_attention` — DOLG's / CSCE-Net's ``SpatialAttention2d``: BN output L2-normalised
  over channels *before* the ReLU, weighted by a Softplus score.
* :func:`multi_atrous` — DOLG's ASPP: [image-pool, 1x1, dilated 3x3 ...] concatenated, 1x1 + ReLU.
* :func:`resnet_dolg_head` — CSCE-Net's ``ResNet_DOLG.forward`` after the backbone, by its names
  (``localmodel``, ``conv_f4_s1``/``conv_f4_s2``, ``conv_last``, ``fc``, ``fc_t``, ``ce_fc``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def batch_norm_eval(x: Tensor, sd: dict[str, Tensor], prefix: str, eps: float = 1e-5) -> Tensor:
    """Inference batch norm: (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
    shape = (1, -1, 1, 1)
    mean, var = sd[prefix + "running_mean"].view(shape), sd[prefix + "running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + eps) * sd[prefix + "weight"].view(shape) + sd[prefix + "bias"].view(shape)


def conv(x: Tensor, sd: dict[str, Tensor], prefix: str, stride: int = 1, padding: int = 0,
         dilation: int = 1) -> Tensor:
    return torch.nn.functional.conv2d(x, sd[prefix + "weight"], sd.get(prefix + "bias"), stride=stride,
                                      padding=padding, dilation=dilation)


def _block(x: Tensor, sd: dict[str, Tensor], p: str, stride: int) -> Tensor:
    relu = torch.relu
    bottleneck = p + "conv3.weight" in sd
    if bottleneck:  # 1x1 -> 3x3 (strided) -> 1x1
        out = relu(batch_norm_eval(conv(x, sd, p + "conv1."), sd, p + "bn1."))
        out = relu(batch_norm_eval(conv(out, sd, p + "conv2.", stride=stride, padding=1), sd, p + "bn2."))
        out = batch_norm_eval(conv(out, sd, p + "conv3."), sd, p + "bn3.")
    else:  # 3x3 (strided) -> 3x3
        out = relu(batch_norm_eval(conv(x, sd, p + "conv1.", stride=stride, padding=1), sd, p + "bn1."))
        out = batch_norm_eval(conv(out, sd, p + "conv2.", padding=1), sd, p + "bn2.")
    if p + "downsample.0.weight" in sd:
        idt = batch_norm_eval(conv(x, sd, p + "downsample.0.", stride=stride), sd, p + "downsample.1.")
    else:
        idt = x
    return relu(out + idt)


def resnet_stages(x: Tensor, sd: dict[str, Tensor], stem_stride: int = 2, maxpool: bool = True,
                  strides: tuple[int, ...] = (1, 2, 2, 2)) -> tuple[Tensor, Tensor]:
    """(layer3, layer4) outputs of a torchvision-named ResNet state dict, inference mode."""
    k = sd["conv1.weight"].shape[-1]
    x = torch.relu(batch_norm_eval(conv(x, sd, "conv1.", stride=stem_stride, padding=k // 2), sd, "bn1."))
    if maxpool:
        x = torch.nn.functional.max_pool2d(x, 3, stride=2, padding=1)
    outs = []
    for layer, stride in enumerate(strides, start=1):
        j = 0
        while f"layer{layer}.{j}.conv1.weight" in sd:
            x = _block(x, sd, f"layer{layer}.{j}.", stride if j == 0 else 1)
            j += 1
        outs.append(x)
    return outs[2], outs[3]


def spatial_attention(x: Tensor, sd: dict[str, Tensor], prefix: str = "") -> tuple[Tensor, Tensor]:
    """(score * normalize(BN(conv1 x)), score) with score = softplus(conv2(relu(BN(conv1 x))))."""
    h = batch_norm_eval(conv(x, sd, prefix + "conv1."), sd, prefix + "bn.")
    normed = h / h.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
    score = torch.nn.functional.softplus(conv(torch.relu(h), sd, prefix + "conv2."))
    return score * normed, score


def multi_atrous(x: Tensor, weights: list[tuple[Tensor, Tensor]], dilations: list[int],
                 pool: tuple[Tensor, Tensor], fuse: tuple[Tensor, Tensor]) -> Tensor:
    """DOLG's ASPP: relu(fuse([up(relu(conv1x1(avgpool x))), conv1x1 x, conv3x3_d x ...]))."""
    f = torch.nn.functional
    h, w = x.shape[-2:]
    pooled = torch.relu(f.conv2d(x.mean(dim=(2, 3), keepdim=True), *pool))
    branches = [f.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False)]
    branches.append(f.conv2d(x, *weights[0]))
    for (wt, b), d in zip(weights[1:], dilations):
        branches.append(f.conv2d(x, wt, b, padding=d, dilation=d))
    return torch.relu(f.conv2d(torch.cat(branches, dim=1), *fuse))


def _unfold_windows(x: Tensor, k: int) -> Tensor:
    """Stride-1 k x k windows of (B, C, H, W), each flattened channel-major: (B, C*k*k, N)."""
    b, c, h, w = x.shape
    cols = []
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            cols.append(x[:, :, i:i + k, j:j + k].reshape(b, c * k * k))
    return torch.stack(cols, dim=2)


def resnet_dolg_head(f3: Tensor, f4: Tensor, sd: dict[str, Tensor], signt: float) -> dict[str, Tensor]:
    """CSCE-Net's released head on the stage-3/4 maps: hash code v, threshold t, cosine logits.

    local map fl = attention(f3); windows fg = [2x2 windows of conv_f4_s1(f4), 4x4 windows of
    conv_f4_s2(f4)]; fo = avgpool(fl - fg fgᵀ fl / ||fg||²_F); fc = conv_last(fgᵀ);
    feature = [fc, fo]; v = fc(feature); t = clamp(fc_t(feature), ±signt); logits = cos(v, centroids).
    """
    fl, _ = spatial_attention(f3, sd, "localmodel.")
    fg = torch.cat([_unfold_windows(conv(f4, sd, "conv_f4_s1."), 2),
                    _unfold_windows(conv(f4, sd, "conv_f4_s2."), 4)], dim=2)  # (B, D, N)
    b, d = fl.shape[:2]
    flat = fl.reshape(b, d, -1)
    norm2 = fg.pow(2).sum(dim=(1, 2)).view(b, 1, 1)
    orth = flat - fg @ (fg.transpose(1, 2) @ flat) / norm2
    fo = orth.mean(dim=2)
    w, bias = sd["conv_last.weight"], sd["conv_last.bias"]  # Conv1d(N, 1, 1) over the window axis
    fc = (fg * w.view(1, 1, -1)).sum(dim=2) + bias
    feat = torch.cat([fc, fo], dim=1)
    v = feat @ sd["fc.weight"].t() + sd["fc.bias"]
    t = (feat @ sd["fc_t.weight"].t() + sd["fc_t.bias"]).clamp(-signt, signt)
    cent = sd["ce_fc.centroids"]
    logits = (v / v.norm(dim=1, keepdim=True)) @ (cent / cent.norm(dim=1, keepdim=True)).t()
    return {"codes": v, "threshold": t, "logits": logits}
