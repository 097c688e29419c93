"""Import of the authors' released checkpoints: their parameter names -> ours.

Each model file registers its converter (``state_dict -> state_dict``, timm's
``checkpoint_filter_fn``) in :data:`bitseek.registry.CONVERTERS` under its model name, beside the
model it converts to. :func:`load_official` reads a ``.pth`` file *without* unpickling arbitrary
objects (``torch.load(..., weights_only=True)``), unwraps the usual wrappers and loads the converted
weights strictly into a freshly built model.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from bitseek.errors import FileFormatError, InputError
from bitseek.registry import CONVERTERS, MODELS
from bitseek.weights import WRAPPER_KEYS, read_state_dict, read_torch_file, unwrap_state_dict

StateDict = dict[str, Tensor]
Converter = Callable[[Mapping[str, Tensor]], StateDict]

__all__ = ["WRAPPER_KEYS", "convert_state_dict", "load_official", "read_checkpoint", "register_converter",
           "rename_by_prefix", "unwrap_checkpoint"]


def register_converter(name: str) -> Callable[[Converter], Converter]:
    """Register ``fn`` as the converter of official checkpoints for model ``name``."""
    return CONVERTERS.register(name)


def unwrap_checkpoint(obj: Any, where: str = "checkpoint") -> StateDict:
    """The flat tensor state dict inside a loaded checkpoint (:func:`bitseek.weights.unwrap_state_dict`:
    one list of wrapper keys, ``module.`` prefixes stripped)."""
    return unwrap_state_dict(obj, where)


def convert_state_dict(name: str, state_dict: Mapping[str, Tensor], model: torch.nn.Module | None = None) -> StateDict:
    """Map an official state dict of model ``name`` onto bitseek's parameter names."""
    if name not in CONVERTERS:
        raise InputError(f"no converter for model {name!r} (known: {', '.join(CONVERTERS.names()) or 'none'}); "
                         "only models with a released checkpoint layout have one")
    fn = CONVERTERS.get(name).factory
    sd = unwrap_checkpoint(dict(state_dict))
    if model is not None and len(inspect.signature(fn).parameters) > 1:
        return fn(sd, model)
    return fn(sd)


def read_checkpoint(path: str | os.PathLike[str], allow_pickle: bool = False) -> StateDict:
    """Read a released ``.pth``/``.pt``/``.pyth`` (weights-only, whatever its suffix) or ``.safetensors``
    file, unwrapped. ``allow_pickle``: see :func:`bitseek.weights.read_torch_file` (trusted files only)."""
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        return read_state_dict(p)
    return unwrap_state_dict(read_torch_file(p, allow_pickle=allow_pickle), str(p))


def load_official(path: str | os.PathLike[str], cfg: Any, allow_pickle: bool = False) -> torch.nn.Module:
    """Build the model for ``cfg`` (a registered model config) and load an official checkpoint into it.

    Every parameter must be present with the right shape and nothing may be left over; a mismatch
    (e.g. a 32-bit checkpoint with a 64-bit config) raises FileFormatError naming the tensor.
    A converter taking a second argument also gets the freshly built model (timm's
    ``checkpoint_filter_fn(state_dict, model)``), so it can name a wrong variant. ``allow_pickle``:
    see :func:`read_checkpoint`.
    """
    name = getattr(cfg, "name", None)
    if name is None:
        raise InputError(f"load_official: config {type(cfg).__name__} has no 'name'")
    model = MODELS.create(cfg)  # no initialisation weights: the released checkpoint holds every one
    converted = convert_state_dict(name, read_checkpoint(path, allow_pickle), model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise FileFormatError(f"{path}: does not match model {name!r}: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for key, tensor in expected.items():
        if tuple(converted[key].shape) != tuple(tensor.shape):
            raise FileFormatError(f"{path}: tensor {key!r} has shape {tuple(converted[key].shape)}, the config "
                                  f"expects {tuple(tensor.shape)} (check bits / feature_dim / sizes)")
    model.load_state_dict(converted, strict=True)
    return model


def rename_by_prefix(state_dict: Mapping[str, Tensor], prefixes: tuple[tuple[str, str], ...],
                     exact: Mapping[str, str], model: str) -> StateDict:
    """Rename keys by exact match or first matching prefix; an unknown key is an error, not a skip."""
    out: StateDict = {}
    for key, value in state_dict.items():
        if key in exact:
            new = exact[key]
        else:
            new = next((ours + key[len(theirs):] for theirs, ours in prefixes if key.startswith(theirs)), None)
            if new is None:
                raise FileFormatError(f"{model} checkpoint: unexpected parameter {key!r} (not part of the "
                                      f"official {model} model; learnable positions or another model?)")
        out[new] = value
    return out
