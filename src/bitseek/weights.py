"""The one weights reader: safetensors and weights-only ``.pth`` files, checksums, strict loading.

A leaf module (it imports nothing from ``train/`` or ``models/``) so that models, converters,
backbones and the training engine all read weights the same way. Nothing here unpickles arbitrary
objects: ``.pth`` files go through ``torch.load(weights_only=True)`` and every failure of that,
whatever torch raises (truncated zip archives raise ``OSError``), becomes a :class:`FileFormatError`.

Model folders (``model.safetensors`` + ``config.json``) record the SHA-256 of the tensor file in
``config.json``, and loading verifies it, because safetensors only validates its header: a flipped
byte inside tensor data would otherwise load silently as different weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from bitseek.atomic import atomic_write_bytes, atomic_write_text, sweep_stale_temporaries
from bitseek.errors import FileFormatError

__all__ = [
    "MODEL_FORMAT_VERSION",
    "WRAPPER_KEYS",
    "load_state_into",
    "read_model_config",
    "read_model_weights",
    "read_safetensors",
    "read_state_dict",
    "read_torch_file",
    "save_model",
    "sha256_bytes",
    "sha256_file",
    "unwrap_state_dict",
    "write_safetensors",
]

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]

# Keys under which training scripts nest the weights in a checkpoint dict: ConMH's model.pth
# ("model_state_dict"), timm/torchvision-style files ("state_dict", "model"), WSCH's train.py ("berthash").
WRAPPER_KEYS: tuple[str, ...] = ("model_state_dict", "state_dict", "model", "berthash", "model_state")  # + pycls (CVNet .pyth)

# config.json of a model folder. Version 2 adds ``weights_sha256``; version 1 folders still load.
MODEL_FORMAT_VERSION = 2
_READABLE_MODEL_VERSIONS = (1, 2)

_HASH_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- safetensors


def _tensors_for_save(sd: Mapping[str, Tensor]) -> StateDict:
    # safetensors refuses shared storage and non-contiguous views: store independent copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, Tensor],
                      metadata: dict[str, str] | None = None) -> str:
    """Atomically write a safetensors file; returns the SHA-256 of the bytes written."""
    data = st_save(_tensors_for_save(tensors), metadata=metadata)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def read_safetensors(path: str | os.PathLike[str], sha256: str | None = None) -> StateDict:
    """Read a safetensors file; with ``sha256`` the bytes must match it exactly."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"{p}: missing weights file" if not p.exists() else f"{p}: not a file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FileFormatError(f"{p}: cannot read ({e.strerror or e})") from None
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise FileFormatError(f"{p}: checksum mismatch, the weights file is corrupt or was replaced "
                              f"(expected sha256 {sha256[:12]}…, got {sha256_bytes(data)[:12]}…)")
    try:
        return st_load(data)
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise FileFormatError(f"{p}: not a valid safetensors file ({e})") from None


# --------------------------------------------------------------------------- .pth and unwrapping


def read_torch_file(path: str | os.PathLike[str], allow_pickle: bool = False) -> Any:
    """``torch.load(weights_only=True)`` on CPU; any failure is a FileFormatError naming the file.

    A file that pickles an object weights-only loading refuses is named with that object.
    ``allow_pickle=True`` (an explicit opt-in, CLI ``--allow-pickle``) loads it with full unpickling,
    which runs any code the file carries: only for files from a source you trust.
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: checkpoint file does not exist")
    if not p.is_file():
        raise FileFormatError(f"{p}: is a directory, expected a .pth/.pt file")
    try:
        return torch.load(p, map_location="cpu", weights_only=not allow_pickle)
    except MemoryError:
        raise FileFormatError(f"{p}: asks for more memory than this machine has (corrupt or crafted file?)") from None
    except Exception as e:  # pickle errors, truncated zip archives (OSError), refused globals
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise FileFormatError(f"{p}: holds a pickled {refused[1]} object, which weights-only loading refuses; "
                                  "if you trust the file's source, load it with allow_pickle=True (--allow-pickle), "
                                  "which executes any code the file carries") from None
        raise FileFormatError(f"{p}: cannot read as a weights-only torch checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _all_tensors(obj: Mapping[str, Any]) -> bool:
    return all(isinstance(v, Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> StateDict:
    """The flat tensor state dict inside a loaded checkpoint.

    Accepts a bare state dict or one nested (possibly twice) under :data:`WRAPPER_KEYS`, and strips the
    ``module.`` prefix that ``nn.DataParallel``/DDP add to every key.
    """
    if not isinstance(obj, Mapping):
        raise FileFormatError(f"{where}: expected a dict of tensors, got {type(obj).__name__}")
    for _ in range(len(WRAPPER_KEYS)):
        if obj and _all_tensors(obj):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping) and obj.get(k)), None)
        if inner is None:
            break
        obj = inner
    if not obj:
        raise FileFormatError(f"{where}: the state dict is empty")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise FileFormatError(f"{where}: no state dict found; non-tensor entries {bad[:5]} "
                              f"(expected the weights at top level or under one of {', '.join(WRAPPER_KEYS)})")
    if all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """A flat name -> tensor mapping from ``.safetensors`` or ``.pth``/``.pt``/``.bin``/``.ckpt``."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return unwrap_state_dict(read_safetensors(p), str(p))
    if suffix in (".pth", ".pt", ".bin", ".ckpt", ".tar"):
        return unwrap_state_dict(read_torch_file(p), str(p))
    if not p.exists():
        raise FileFormatError(f"{p}: weights file does not exist")
    raise FileFormatError(f"{p}: unsupported weights format {suffix!r} (use .safetensors or .pth)")


# --------------------------------------------------------------------------- strict loading


def _fmt_keys(keys: list[str], limit: int = 12) -> str:
    more = f" … (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_into(model: torch.nn.Module, sd: Mapping[str, Tensor], source: str,
                    optional_suffixes: tuple[str, ...] = (), cast: bool = False) -> None:
    """Strict load with an error that lists what is missing, unexpected or mis-shaped.

    Keys ending in ``optional_suffixes`` may be absent from ``sd`` (BatchNorm's ``num_batches_tracked``
    in older torchvision files); ``cast`` converts tensors to the model's dtypes.
    """
    own = model.state_dict()
    missing = sorted(k for k in set(own) - set(sd) if not (optional_suffixes and k.endswith(optional_suffixes)))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
              for k in sorted(set(sd) & set(own)) if sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt_keys(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_fmt_keys(shapes, 5)}")
        raise FileFormatError(f"{source}: weights do not fit {type(model).__name__} — " + "; ".join(parts))
    if cast:
        sd = {k: v.to(dtype=own[k].dtype) for k, v in sd.items()}
    model.load_state_dict(dict(sd), strict=not optional_suffixes)


# --------------------------------------------------------------------------- model folders


def _model_config_dict(model_cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else dict(model_cfg)


def save_model(directory: str | os.PathLike[str], model: Any, model_cfg: Any,
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (model config, versions, weights checksum)."""
    import bitseek

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(d)
    cfg = _model_config_dict(model_cfg)
    digest = write_safetensors(d / "model.safetensors", model.state_dict(),
                               {"format": "bitseek", "model": str(cfg.get("name"))})
    meta = {"format_version": MODEL_FORMAT_VERSION, "bitseek_version": bitseek.__version__,
            "torch_version": torch.__version__, "model": cfg, "weights_sha256": digest, **(extra or {})}
    atomic_write_text(d / "config.json", json.dumps(meta, indent=2, sort_keys=True))
    return d


def read_model_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder (checked for version and shape)."""
    p = Path(directory) / "config.json"
    if not p.is_file():
        raise FileFormatError(f"{p}: missing model config (is {directory} a bitseek model folder?)")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"{p}: corrupt JSON ({e})") from None
    if not isinstance(meta, dict):
        raise FileFormatError(f"{p}: corrupt (expected a JSON object, got {type(meta).__name__})")
    if meta.get("format_version") not in _READABLE_MODEL_VERSIONS:
        raise FileFormatError(f"{p}: unsupported checkpoint format {meta.get('format_version')!r}")
    if not isinstance(meta.get("model"), dict):
        raise FileFormatError(f"{p}: corrupt (no 'model' section)")
    digest = meta.get("weights_sha256")
    if meta["format_version"] >= 2 and not (isinstance(digest, str) and len(digest) == 64):
        raise FileFormatError(f"{p}: corrupt (no valid 'weights_sha256')")
    return meta


def read_model_weights(directory: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> StateDict:
    """The tensors of a model folder, verified against the checksum in its ``config.json``."""
    d = Path(directory)
    meta = meta if meta is not None else read_model_config(d)
    digest = meta.get("weights_sha256")
    if digest is None:
        log.warning("%s: written before checksums (format 1); its weights cannot be verified", d)
    return read_safetensors(d / "model.safetensors", sha256=digest)
