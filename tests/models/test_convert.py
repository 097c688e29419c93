"""The generic import path of released checkpoints (models/convert.py), on a scoped toy converter.

Model-specific layouts are tested beside each model; here the machinery itself: unwrapping, the
strict load naming what is missing, left over or mis-shaped, converters that want the model, and the
first-match renaming rule every prefix table relies on.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from bitseek.errors import FileFormatError, InputError
from bitseek.models.convert import convert_state_dict, load_official, rename_by_prefix
from bitseek.registry import CONVERTERS, MODELS

PREFIXES = (("encoder.", "enc."), ("decoder.", "dec."))


def toy_converter(sd):
    return rename_by_prefix(sd, PREFIXES, {"step_counter": "steps"}, "toy")


def _official(seed: int = 0) -> dict[str, torch.Tensor]:
    """The toy model (tests/conftest.py: Linear 6->8, Linear 8->6, a step buffer) under 'released' names."""
    g = torch.Generator().manual_seed(seed)
    return {"encoder.weight": torch.randn(8, 6, generator=g), "encoder.bias": torch.randn(8, generator=g),
            "decoder.weight": torch.randn(6, 8, generator=g), "decoder.bias": torch.randn(6, generator=g),
            "step_counter": torch.tensor(42)}


@pytest.fixture()
def toy_converter_registered():
    with CONVERTERS.registered("toy-model", toy_converter):
        yield


def test_load_official_unwraps_and_loads_every_tensor(tmp_path, toy_converter_registered) -> None:
    sd = _official()
    path = tmp_path / "released.pth"
    torch.save({"epoch": 9, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    model = load_official(path, MODELS.config("toy-model"))
    got = model.state_dict()
    assert torch.equal(got["enc.weight"], sd["encoder.weight"]) and torch.equal(got["dec.bias"], sd["decoder.bias"])
    assert int(got["steps"]) == 42
    st = tmp_path / "released.safetensors"
    save_file(sd, str(st))
    assert torch.equal(load_official(st, MODELS.config("toy-model")).state_dict()["enc.bias"], sd["encoder.bias"])


def test_load_official_names_what_does_not_fit(tmp_path, toy_converter_registered) -> None:
    cfg = MODELS.config("toy-model")
    cases = {
        "missing": ({k: v for k, v in _official().items() if k != "decoder.bias"}, r"missing \['dec.bias'\]"),
        "extra": ({**_official(), "decoder.scale": torch.ones(6)}, r"unexpected \['dec.scale'\]"),
        "unknown": ({**_official(), "pos_embed": torch.ones(3)}, r"unexpected parameter 'pos_embed'"),
        "shape": ({**_official(), "encoder.weight": torch.ones(16, 6)}, r"'enc.weight' has shape \(16, 6\)"),
    }
    for name, (sd, match) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(sd, path)
        with pytest.raises(FileFormatError, match=match):
            load_official(path, cfg)
    with pytest.raises(FileFormatError):
        load_official(tmp_path / "absent.pth", cfg)


def test_a_converter_taking_the_model_receives_it(tmp_path) -> None:
    seen = []

    def with_model(sd, model=None):
        seen.append(type(model).__name__)
        return toy_converter(sd)

    path = tmp_path / "r.pth"
    torch.save(_official(), path)
    with CONVERTERS.registered("toy-model", with_model):
        load_official(path, MODELS.config("toy-model"))
        assert convert_state_dict("toy-model", _official()).keys() == toy_converter(_official()).keys()
    assert seen == ["ToyModel", "NoneType"]  # load_official passes its model; a bare conversion has none


def test_unknown_model_has_no_converter() -> None:
    with pytest.raises(InputError, match="no converter for model 'toy-model'"):
        convert_state_dict("toy-model", _official())


def test_rename_by_prefix_exact_first_then_first_matching_prefix() -> None:
    sd = {"a.b.w": torch.zeros(1), "a.x": torch.ones(1), "keep": torch.full((1,), 2.0)}
    out = rename_by_prefix(sd, (("a.b.", "inner."), ("a.", "outer."), ("keep", "kept")), {"a.x": "special"}, "toy")
    assert set(out) == {"inner.w", "special", "kept"}
    assert torch.equal(out["special"], sd["a.x"])
    reordered = rename_by_prefix({"a.b.w": torch.zeros(1)}, (("a.", "outer."), ("a.b.", "inner.")), {}, "toy")
    assert set(reordered) == {"outer.b.w"}  # the first matching rule wins, not the longest
    with pytest.raises(FileFormatError, match="unexpected parameter 'zzz'"):
        rename_by_prefix({"zzz": torch.zeros(1)}, PREFIXES, {}, "toy")
