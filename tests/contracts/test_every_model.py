"""Every registered model through one contract (the shared promises the engine, encoder and
checkpoint code rely on), so a new model cannot land without meeting them.

For each name in ``MODELS.names()``, deep and shallow alike:

* it builds from a small config (below) or, without an entry, from its defaults;
* deep models: every phase of ``training_step`` returns a finite scalar ``"loss"`` without a host
  synchronisation, and its gradient reaches every trainable parameter; closed-form models fit;
* ``encode`` gives (B, bits) float32 codes in {-1, 0, +1} (``embed`` gives (B, dim) finite float32
  rows), row by row independent of the batch and repeatable;
* a saved model folder loads back into a model with identical state and outputs;
* where a converter of released checkpoints is registered, a checkpoint in the released layout
  (written out in the model's own tests from the authors' module definitions) converts into a state
  dict that loads strictly, keeps every released value, and an unknown key is refused.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from bitseek.errors import BitseekError
from bitseek.models.base import EpochContext
from bitseek.models.convert import convert_state_dict
from bitseek.registry import CONVERTERS, MODELS
from bitseek.train.checkpoint import load_model, save_model

torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parents[1]

# Small configs (CPU seconds, not minutes). A model missing here runs at its default config.
SMALL: dict[str, dict[str, Any]] = {
    "conmh": dict(bits=16, feature_dim=12, max_frames=6, hidden_size=16, depth=1, heads=2, decoder_dim=8,
                  decoder_depth=1, decoder_heads=2, mask_prob=0.5),
    "wsch": dict(bits=16, feature_dim=12, max_frames=6, hidden_size=16, decoder_size=16, expand=2, d_state=4,
                 headdim=8, heads=2, n_clusters=4, pretrain_epochs=1, kmeans_niter=2),
    "csce": dict(bits=16, num_classes=4, backbone="resnet-mini", image_size=32,
                 backbone_args={"widths": [8, 16, 32, 64]}, aspp_dilations=[1, 2, 3]),
    "lsh": dict(bits=8), "pcah": dict(bits=8), "itq": dict(bits=8, iterations=5), "sh": dict(bits=8),
    "cvnet": dict(reduction_dim=32, rerank_dim=16),
    "cvnet-global": dict(reduction_dim=32, rerank_dim=16, num_classes=3, queue_size=16),
    "cvnet-rerank": dict(reduction_dim=32, rerank_dim=16),
}
# Inputs of models whose config does not carry the input size (fully convolutional ones).
IMAGE_SIZE: dict[str, int] = {"cvnet": 32, "cvnet-global": 32, "cvnet-rerank": 32}
# Models trained on pairs of images (the re-ranker): their batch also holds both sides and a target.
PAIRS = ("cvnet-rerank",)
N = 12  # batch / training-set size
VIDEO_DIM, VIDEO_FRAMES = 12, 6  # for closed-form models, whose feature_dim is learnt by fit()


def _names() -> list[str]:
    return MODELS.names()


def _build(name: str, **override: Any) -> Any:
    torch.manual_seed(0)
    return MODELS.create(name, **{**SMALL.get(name, {}), **override})


def _kind(model: Any) -> str:
    """deep (trained by the engine), closed-form (``fit``) or pretrained (weights come from a converter)."""
    if isinstance(model, torch.nn.Module) and _has_method(model, "training_step"):
        return "deep"
    return "closed-form" if _has_method(model, "fit") else "pretrained"


def make_batch(cfg: Any, n: int = N, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs the config describes: images (+ labels) for image models, frame features for video ones."""
    g = torch.Generator().manual_seed(seed)
    if hasattr(cfg, "image_size") or cfg.name in IMAGE_SIZE:
        size = int(getattr(cfg, "image_size", 0) or IMAGE_SIZE[cfg.name])
        classes = int(getattr(cfg, "num_classes", 2))
        labels = torch.eye(classes)[torch.arange(n) % classes]
        batch = {"image": torch.randn(n, 3, size, size, generator=g), "label": labels, "index": torch.arange(n)}
        if cfg.name in PAIRS:
            batch.update(query_image=batch["image"], key_image=batch["image"].roll(1, 0),
                         target=torch.arange(n) % 2, query_mask=torch.ones(n, 2, 2), key_mask=torch.ones(n, 2, 2))
        return batch
    if hasattr(cfg, "feature_dim"):
        dim = int(cfg.feature_dim) or VIDEO_DIM
        frames = int(getattr(cfg, "max_frames", 0)) or VIDEO_FRAMES
        return {"feats": torch.randn(n, frames, dim, generator=g), "index": torch.arange(n)}
    raise AssertionError(f"model config {type(cfg).__name__} declares neither image_size nor feature_dim: "
                         f"add its inputs to make_batch in {Path(__file__).name}")


def _context(batch: dict[str, torch.Tensor]) -> EpochContext:
    def loader(shuffle: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        for s in range(0, N, 4):
            yield {k: v[s:s + 4] for k, v in batch.items()}

    return EpochContext(torch.device("cpu"), loader)


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Make every tensor -> Python conversion an error (each is a device sync on a GPU)."""
    saved = {}

    def refuse(name: str) -> Callable[..., Any]:
        def f(self: torch.Tensor, *a: Any, **k: Any) -> Any:
            raise AssertionError(f"training_step called Tensor.{name}() (a host synchronisation on a GPU)")
        return f

    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        saved[name] = getattr(torch.Tensor, name)
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def _has_method(model: Any, name: str) -> bool:
    """A method of the class (ConMH's ``embed`` is a Linear submodule, not the float contract)."""
    return callable(getattr(type(model), name, None))


def _outputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    with torch.no_grad():
        if _has_method(model, "encode"):
            out["codes"] = torch.as_tensor(model.encode(batch))
        if _has_method(model, "embed"):
            out["features"] = torch.as_tensor(model.embed(batch))
    return out


def _trained(name: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """A model after one pass of every training phase (or fitted), in eval mode, and its batch."""
    model = _build(name)
    batch = make_batch(model.cfg)
    kind = _kind(model)
    if kind == "deep":
        params = [p for p in model.parameters() if p.requires_grad]
        for epoch in range(_epochs_to_cover_phases(model)):
            model.before_epoch(epoch, _context(batch))
            for phase in model.epoch_phases(epoch):
                grads = torch.autograd.grad(model.training_step(batch, phase)["loss"], params)
                with torch.no_grad():  # one plain SGD step
                    for p, g in zip(params, grads):
                        p -= 1e-3 * g
        model.eval()
    elif kind == "closed-form":
        model.fit(batch["feats"])
    else:
        model.eval()
    return model, batch


def _epochs_to_cover_phases(model: Any, limit: int = 4) -> int:
    """Epochs until every distinct phase has run at least once (models switch phases by epoch)."""
    seen: list[tuple[str, ...]] = []
    for epoch in range(limit):
        phases = tuple(model.epoch_phases(epoch))
        if phases not in seen:
            seen.append(phases)
            last = epoch
    return last + 1


# --------------------------------------------------------------------------- the contract


def test_the_builtin_models_are_all_here() -> None:
    """The contract runs over the registry; this pins that the registry is not short of a built-in."""
    assert {"conmh", "wsch", "csce", "lsh", "pcah", "itq", "sh"} <= set(_names())


@pytest.mark.parametrize("name", _names())
def test_builds_from_its_config(name: str) -> None:
    model = _build(name)
    assert model.cfg.name == name
    assert _has_method(model, "encode") or _has_method(model, "embed"), f"{name} has neither encode() nor embed()"
    if _has_method(model, "encode"):
        assert model.bits == model.cfg.bits == SMALL.get(name, {}).get("bits", model.cfg.bits)


@pytest.mark.parametrize("name", _names())
def test_training_gives_finite_losses_and_gradients(name: str) -> None:
    model = _build(name)
    batch = make_batch(model.cfg)
    if _kind(model) == "pretrained":
        pytest.skip(f"{name} is inference-only (neither training_step nor fit): its weights come from a converter")
    if _kind(model) == "closed-form":  # fitting is the training
        model.fit(batch["feats"])
        assert model.fitted
        for key, value in model.state_dict().items():
            assert torch.isfinite(value.float()).all(), key
        return
    model.train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for epoch in range(_epochs_to_cover_phases(model)):
        model.before_epoch(epoch, _context(batch))
        for phase in model.epoch_phases(epoch):
            model.zero_grad(set_to_none=True)
            with no_host_sync():
                out = model.training_step(batch, phase)
            loss = out["loss"]
            assert loss.dim() == 0 and loss.requires_grad, phase
            assert torch.isfinite(loss.detach()), f"phase {phase}: loss {loss.detach()}"
            for key, value in out.items():
                assert value.dim() == 0, f"phase {phase}: {key!r} is not a scalar"
            loss.backward()
            missing = [n for n, p in trainable.items() if p.grad is None]
            assert not missing, f"phase {phase}: no gradient reaches {missing[:6]}"
            bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
            assert not bad, f"phase {phase}: non-finite gradients in {bad[:6]}"
            assert any(p.grad.abs().sum() > 0 for p in trainable.values()), phase


@pytest.mark.parametrize("name", _names())
def test_encode_and_embed_shapes_dtypes_and_values(name: str) -> None:
    model, batch = _trained(name)
    out = _outputs(model, batch)
    assert out, f"{name} has neither encode() nor embed()"
    if "codes" in out:
        codes = out["codes"]
        assert codes.shape == (N, model.bits) and codes.dtype == torch.float32 and not codes.requires_grad
        assert set(codes.unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert (codes != 0).any()
    if "features" in out:
        feats = out["features"]
        assert feats.dim() == 2 and feats.shape[0] == N and feats.dtype == torch.float32 and not feats.requires_grad
        assert torch.isfinite(feats).all()
        if hasattr(model, "embed_dim"):
            assert feats.shape[1] == model.embed_dim
    # repeatable, and one row does not depend on the others in its batch
    again = _outputs(model, batch)
    first = _outputs(model, {k: v[:1] for k, v in batch.items()})
    for key, value in out.items():
        assert torch.equal(again[key], value), key
        if key == "codes":  # a sign can flip on rounding only if a pre-sign value is ~0: compare exactly
            assert torch.equal(first[key], value[:1]), key
        else:
            torch.testing.assert_close(first[key], value[:1], msg=key)


@pytest.mark.parametrize("name", _names())
def test_save_then_load_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    model, batch = _trained(name)
    save_model(tmp_path / "m", model, model.cfg)
    loaded = load_model(tmp_path / "m")
    loaded.eval()
    assert type(loaded) is type(model)
    own, back = model.state_dict(), loaded.state_dict()
    assert sorted(own) == sorted(back)
    for key in own:
        assert torch.equal(own[key], back[key]), key
    want, got = _outputs(model, batch), _outputs(loaded, batch)
    for key in want:
        assert torch.equal(got[key], want[key]), key


# --------------------------------------------------------------------------- released checkpoints


def _module(relpath: str) -> Any:
    """Another test module, loaded by path (the suite runs with --import-mode=importlib)."""
    path = TESTS / relpath
    name = "bitseek_contract_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _conmh_layout() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    overrides = dict(SMALL["conmh"], heads=3, hidden_size=12)  # head width 4: the inner-width quirk off
    cfg = MODELS.config("conmh", **overrides)
    return overrides, _module("models/test_conmh.py").official_state_dict(cfg, seed=1)


def _wsch_layout() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    mod = _module("models/test_wsch.py")
    # the sizes of mod.official_shapes(): hidden 32, feature 24, 16 bits, head dim 16, 6 clusters, state 4
    overrides = dict(bits=16, feature_dim=24, max_frames=6, hidden_size=32, decoder_size=32, expand=2,
                     headdim=16, d_state=4, d_conv=4, heads=4, n_clusters=6)
    return overrides, mod.official_state(seed=1)


def _csce_layout() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    mod = _module("models/test_csce_reference.py")
    overrides = dict(bits=16, num_classes=4, backbone="resnet-mini", image_size=32,
                     backbone_args=dict(mod.MINI), local_branch="attention")
    return overrides, mod.with_sequential_duplicates(
        {k: v.float() if v.is_floating_point() else v for k, v in mod._mini_reference(seed=1).items()})


# Released layouts, written from the authors' module definitions in each model's own tests.
def _cvnet_layout() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    mod = _module("models/test_cvnet_convert.py")
    return dict(depth=50, reduction_dim=2048, rerank_dim=256), mod.synthetic_state(50, seed=1)


RELEASED_LAYOUTS: dict[str, Callable[[], tuple[dict[str, Any], dict[str, torch.Tensor]]]] = {
    "conmh": _conmh_layout, "wsch": _wsch_layout, "csce": _csce_layout, "cvnet": _cvnet_layout,
}


def test_every_converter_has_a_released_layout_to_test_it() -> None:
    assert set(CONVERTERS.names()) <= set(RELEASED_LAYOUTS), "add a released layout for each new converter"
    models = set(_names())
    no_converter = {n for n in RELEASED_LAYOUTS if n in models and n not in CONVERTERS}
    assert not no_converter, f"models with a released layout but no registered converter: {sorted(no_converter)}"


def _same_float_values(converted: dict[str, torch.Tensor], released: dict[str, torch.Tensor]) -> bool:
    """Whether the float tensors hold the same values as a multiset (renamed, stacked or split alike).

    Tensors that moved unchanged are matched by their bytes; whatever is left (fused or split
    tensors) must agree value by value after sorting. Tensors shared under two names count once.
    """
    def floats(sd: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return list({id(t): t for t in sd.values() if t.is_floating_point()}.values())

    def digest(t: torch.Tensor) -> str:
        return hashlib.sha1(t.detach().contiguous().view(-1).numpy().tobytes()).hexdigest() + str(t.dtype)

    left = collections.Counter(digest(t) for t in floats(released))
    rest_conv = []
    for t in floats(converted):
        d = digest(t)
        if left[d] > 0:
            left[d] -= 1
        else:
            rest_conv.append(t)
    by_digest = {digest(t): t for t in floats(released)}
    rest_rel = [by_digest[d] for d, n in left.items() for _ in range(n)]
    if not rest_conv and not rest_rel:
        return True
    if not rest_conv or not rest_rel:
        return False
    a = torch.sort(torch.cat([t.reshape(-1).double() for t in rest_conv])).values
    b = torch.sort(torch.cat([t.reshape(-1).double() for t in rest_rel])).values
    return a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("name", [n for n in _names() if n in CONVERTERS])
def test_released_checkpoint_converts_loads_and_keeps_every_value(name: str, tmp_path: Path) -> None:
    overrides, released = RELEASED_LAYOUTS[name]()
    converted = convert_state_dict(name, {"module." + k: v for k, v in released.items()})
    model = _build(name, **overrides)
    own = model.state_dict()
    assert sorted(converted) == sorted(own), "converted keys differ from the model's"
    model.load_state_dict(converted, strict=True)
    # nothing invented, nothing lost: the float values are the released ones, as a multiset
    assert _same_float_values(converted, released)
    # and the converted model survives its own save/load with the same outputs
    model.eval()
    batch = make_batch(model.cfg, n=4)
    save_model(tmp_path / "m", model, model.cfg)
    loaded = load_model(tmp_path / "m").eval()
    want, got = _outputs(model, batch), _outputs(loaded, batch)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    with pytest.raises(BitseekError):
        convert_state_dict(name, {**released, "not_in_the_release.weight": torch.zeros(1)})


def test_no_model_entry_leaks_out_of_a_test() -> None:
    """Test-only entries (the toy model) live only inside the test that registered them."""
    assert "toy-model" in MODELS  # registered for this test by tests/conftest.py
    assert "toy-model" not in _names_at_collection


_names_at_collection = frozenset(_names())
