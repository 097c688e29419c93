"""Import of the authors' CVNet ``.pyth`` files, tested on synthetic files built from the official key layout.

The layout below is written from the official model definition (pycls ResNet ``encoder_q`` with
``stem``/``s{L}.b{i}.f.{a,b,c}[_bn]``/``proj``/``bn``, ``head.pool.p``/``head.fc``, then ``conv2ds`` and
``cv_learner``), not from our model's state dict, so the test is not circular.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from bitseek.errors import FileFormatError
from bitseek.models.convert import load_official
from bitseek.models.cvnet import convert_official
from bitseek.registry import MODELS

torch.set_num_threads(1)

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def official_layout(depth: int) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor in ``CVNet_Rerank(depth, 2048).state_dict()``."""
    spec: dict[str, tuple[int, ...]] = {"encoder_q.stem.conv.weight": (64, 3, 7, 7), **_bn("encoder_q.stem.bn", 64)}
    w_in = 64
    for stage, n in enumerate(STAGE_DEPTHS[depth], 1):
        w_b, w_out = 64 * 2 ** (stage - 1), 256 * 2 ** (stage - 1)
        for i in range(1, n + 1):
            p = f"encoder_q.s{stage}.b{i}"
            cin = w_in if i == 1 else w_out
            if i == 1:
                spec[f"{p}.proj.weight"] = (w_out, cin, 1, 1)
                spec.update(_bn(f"{p}.bn", w_out))
            spec[f"{p}.f.a.weight"] = (w_b, cin, 1, 1)
            spec.update(_bn(f"{p}.f.a_bn", w_b))
            spec[f"{p}.f.b.weight"] = (w_b, w_b, 3, 3)
            spec.update(_bn(f"{p}.f.b_bn", w_b))
            spec[f"{p}.f.c.weight"] = (w_out, w_b, 1, 1)
            spec.update(_bn(f"{p}.f.c_bn", w_out))
        w_in = w_out
    spec["encoder_q.head.pool.p"] = (1,)
    spec["encoder_q.head.fc.weight"] = (2048, 2048)
    spec["encoder_q.head.fc.bias"] = (2048,)
    spec.update(rerank_layout())
    return spec


def rerank_layout() -> dict[str, tuple[int, ...]]:
    spec: dict[str, tuple[int, ...]] = {f"conv2ds.{j}.weight": (256, 1024, 3, 3) for j in range(3)}
    blocks = {1: [(9, 16, 5)], 2: [(16, 16, 3), (16, 32, 3)], 3: [(32, 32, 3), (32, 32, 3), (32, 64, 3)],
              4: [(64, 64, 3), (64, 64, 3), (64, 128, 3)]}
    for b, layers in blocks.items():
        for j, (cin, cout, k) in enumerate(layers):
            for conv in ("conv1", "conv2"):
                spec[f"cv_learner.block{b}.{3 * j}.{conv}.weight"] = (cout, cin, k, k)
                spec[f"cv_learner.block{b}.{3 * j}.{conv}.bias"] = (cout,)
            spec[f"cv_learner.block{b}.{3 * j + 1}.weight"] = (cout,)
            spec[f"cv_learner.block{b}.{3 * j + 1}.bias"] = (cout,)
    spec.update({"cv_learner.mlp.0.weight": (128, 128), "cv_learner.mlp.0.bias": (128,),
                 "cv_learner.mlp.2.weight": (2, 128), "cv_learner.mlp.2.bias": (2,)})
    return spec


def synthetic_state(depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in official_layout(depth).items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(1234, dtype=torch.int64)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.02
    return sd


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = synthetic_state(50)
    path = tmp_path_factory.mktemp("cvnet") / "CVPR2022_CVNet_R50.pyth"
    torch.save({"epoch": 20, "model_state": sd, "optimizer_state": {"state": {}, "param_groups": []},
                "cfg": "MODEL:\n  DEPTH: 50\n"}, path)
    return path, sd


def test_layout_counts() -> None:
    assert len(rerank_layout()) == 61
    assert sum(torch.Size(s).numel() for s in rerank_layout().values()) == 7_486_114
    assert len(official_layout(50)) == 318 + 3 + 61
    assert len(official_layout(101)) == 624 + 3 + 61


def test_r50_pyth_loads_every_key_onto_the_right_module(r50_file) -> None:
    path, sd = r50_file
    model = load_official(path, MODELS.config("cvnet", depth=50)).eval()
    ours = model.state_dict()
    assert len(ours) == len(sd)
    # every file tensor landed somewhere, once
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for v in ours.values():
        by_shape.setdefault(tuple(v.shape), []).append(v)
    for name, v in sd.items():
        if v.dim() == 0:
            continue
        assert sum(torch.equal(v, o) for o in by_shape[tuple(v.shape)]) == 1, name
    # and on the module the official code gives it
    m = model
    pairs = {
        "encoder_q.stem.conv.weight": m.backbone.conv1.weight,
        "encoder_q.stem.bn.running_var": m.backbone.bn1.running_var,
        "encoder_q.s1.b1.proj.weight": m.backbone.layer1[0].downsample[0].weight,
        "encoder_q.s2.b1.bn.running_mean": m.backbone.layer2[0].downsample[1].running_mean,
        "encoder_q.s3.b6.f.a.weight": m.backbone.layer3[5].conv1.weight,
        "encoder_q.s3.b6.f.b_bn.weight": m.backbone.layer3[5].bn2.weight,
        "encoder_q.s3.b6.f.c_bn.running_var": m.backbone.layer3[5].bn3.running_var,
        "encoder_q.s4.b3.f.c.weight": m.backbone.layer4[2].conv3.weight,
        "encoder_q.head.pool.p": m.pool.p,
        "encoder_q.head.fc.weight": m.whiten.weight,
        "encoder_q.head.fc.bias": m.whiten.bias,
        "conv2ds.2.weight": m.rerank.scale_convs[2].weight,
        "cv_learner.block1.0.conv1.weight": m.rerank.learner.blocks[0][0].conv.query_conv.weight,
        "cv_learner.block1.0.conv2.bias": m.rerank.learner.blocks[0][0].conv.key_conv.bias,
        "cv_learner.block3.6.conv2.weight": m.rerank.learner.blocks[2][2].conv.key_conv.weight,
        "cv_learner.block4.4.weight": m.rerank.learner.blocks[3][1].norm.weight,
        "cv_learner.block2.1.bias": m.rerank.learner.blocks[1][0].norm.bias,
        "cv_learner.mlp.0.weight": m.rerank.learner.classifier[0].weight,
        "cv_learner.mlp.2.bias": m.rerank.learner.classifier[2].bias,
    }
    for name, tensor in pairs.items():
        assert torch.equal(sd[name], tensor), name
    with torch.no_grad():
        g = model.global_descriptor(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(g).all()


def test_wrong_depth_is_named(r50_file) -> None:
    path, _ = r50_file
    with pytest.raises(FileFormatError, match=r"ResNet-50 model but the config says depth=101.*depth=50"):
        load_official(path, MODELS.config("cvnet", depth=101))


def test_unknown_and_missing_keys_are_errors(r50_file, tmp_path) -> None:
    _, sd = r50_file
    model = MODELS.create(MODELS.config("cvnet"))
    extra = dict(sd, **{"encoder_k.stem.conv.weight": torch.zeros(64, 3, 7, 7)})
    with pytest.raises(FileFormatError, match=r"encoder_k\.stem\.conv\.weight"):
        convert_official(extra, model)
    bad_index = dict(sd)
    bad_index["cv_learner.block1.2.weight"] = bad_index.pop("cv_learner.block1.1.weight")  # a ReLU has no weight
    with pytest.raises(FileFormatError, match=r"cv_learner\.block1\.2\.weight"):
        convert_official(bad_index, model)
    missing = {k: v for k, v in sd.items() if k != "cv_learner.mlp.2.bias"}
    path = tmp_path / "missing.pyth"
    torch.save({"model_state": missing}, path)
    with pytest.raises(FileFormatError, match=r"missing \['rerank\.learner\.classifier\.2\.bias'\]"):
        load_official(path, MODELS.config("cvnet", depth=50))


def test_missing_bn_counters_are_filled(r50_file) -> None:
    _, sd = r50_file
    model = MODELS.create(MODELS.config("cvnet"))
    out = convert_official({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, model)
    assert set(out) == set(model.state_dict())
    assert int(out["backbone.bn1.num_batches_tracked"]) == 0


@dataclasses.dataclass
class TrainerCfg:  # stands in for a config object a training script might pickle
    depth: int = 50


def test_pickled_object_is_named_and_opt_in_loads(r50_file, tmp_path) -> None:
    _, sd = r50_file
    path = tmp_path / "with_object.pyth"
    torch.save({"model_state": sd, "cfg": TrainerCfg()}, path)
    with pytest.raises(FileFormatError, match=r"with_object\.pyth: holds a pickled .*TrainerCfg object.*allow_pickle=True"):
        load_official(path, MODELS.config("cvnet", depth=50))
    model = load_official(path, MODELS.config("cvnet", depth=50), allow_pickle=True)
    assert torch.equal(model.pool.p, sd["encoder_q.head.pool.p"])


def test_cli_convert_writes_safetensors_that_load_back(r50_file, tmp_path, capsys) -> None:
    from safetensors.torch import load_file

    from bitseek.cli.main import main
    from bitseek.train.checkpoint import load_model

    path, sd = r50_file
    out = tmp_path / "cvnet-r50"
    assert main(["convert", "--model", "cvnet", "MODEL.DEPTH", "50", "--src", str(path), "--out", str(out)]) == 0
    tensors = load_file(str(out / "model.safetensors"))
    assert len(tensors) == len(sd)
    assert torch.equal(tensors["rerank.learner.classifier.2.weight"], sd["cv_learner.mlp.2.weight"])
    model = load_model(out).eval()
    direct = load_official(path, MODELS.config("cvnet", depth=50)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.global_descriptor(x), direct.global_descriptor(x))
    capsys.readouterr()
    assert main(["convert", "--model", "cvnet", "model.depth=101", "--src", str(path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ResNet-50" in err and "depth=101" in err
    assert not (tmp_path / "x").exists()


def test_cli_allow_pickle_flag_reaches_the_reader(tmp_path, capsys) -> None:
    from bitseek.cli.main import main

    path = tmp_path / "tiny.pyth"
    torch.save({"model_state": {"conv2ds.0.weight": torch.zeros(1)}, "cfg": TrainerCfg()}, path)
    args = ["convert", "--model", "cvnet", "--src", str(path), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "TrainerCfg object" in capsys.readouterr().err
    assert main(args + ["--allow-pickle"]) == 2  # now read: the one tensor is then refused by shape/keys
    err = capsys.readouterr().err
    assert "TrainerCfg" not in err and "missing" in err
