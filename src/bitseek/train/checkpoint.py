"""Checkpoints: ``safetensors`` tensors + JSON, never pickle.

Layout of a run folder::

    out_dir/checkpoints/epoch-0005/{model.safetensors, config.json, trainer.safetensors, trainer.json}
    out_dir/checkpoints/last.json         -> {"name": "epoch-0005", "epoch": 5}

A checkpoint folder is complete before ``last.json`` is atomically switched to it, so a crash at any
moment leaves the previous checkpoint usable. ``save_model``/``load_model`` handle the portable part
(weights + model config) used for release, import and inference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import bitseek
from bitseek.atomic import atomic_write_bytes, atomic_write_text
from bitseek.errors import FileFormatError

FORMAT_VERSION = 1


def _tensors_for_save(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous views: store independent copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    atomic_write_bytes(path, st_save(_tensors_for_save(tensors), metadata=metadata))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileFormatError(f"{path}: missing checkpoint file")
    try:
        return st_load(path.read_bytes())
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise FileFormatError(f"{path}: not a valid safetensors file ({e})") from None


def _model_config_dict(model_cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else dict(model_cfg)


def save_model(directory: str | os.PathLike[str], model: torch.nn.Module, model_cfg: Any,
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (model name, bits, all hyper-parameters)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = _model_config_dict(model_cfg)
    write_tensors(d / "model.safetensors", model.state_dict(), {"format": "bitseek", "model": str(cfg.get("name"))})
    meta = {"format_version": FORMAT_VERSION, "bitseek_version": bitseek.__version__, "model": cfg, **(extra or {})}
    atomic_write_text(d / "config.json", json.dumps(meta, indent=2, sort_keys=True))
    return d


def read_model_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(directory) / "config.json"
    if not p.exists():
        raise FileFormatError(f"{p}: missing model config (is {directory} a bitseek checkpoint?)")
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{p}: corrupt JSON ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(f"{p}: unsupported checkpoint format {meta.get('format_version')!r}")
    return meta


def _fmt_keys(keys: list[str], limit: int = 12) -> str:
    more = f" … (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str,
                    optional_suffixes: tuple[str, ...] = (), cast: bool = False) -> None:
    """Strict load with an error that lists what is missing, unexpected or mis-shaped.

    Keys ending in ``optional_suffixes`` may be absent from ``sd`` (e.g. BatchNorm's
    ``num_batches_tracked`` in older torchvision files); ``cast`` converts tensors to the model's dtypes.
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
    model.load_state_dict(sd, strict=not optional_suffixes)


def load_model(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a registered model from a checkpoint folder (config.json + model.safetensors)."""
    from bitseek.registry import MODELS

    d = Path(directory)
    meta = read_model_config(d)
    mcfg = dict(meta["model"])
    if mcfg.get("weights"):  # pretrained-backbone path: the checkpoint already holds every weight
        mcfg["weights"] = ""
    entry = MODELS.get(str(mcfg.get("name")))
    from bitseek.config import from_dict

    cfg = from_dict(entry.config_cls, mcfg, f"{d / 'config.json'}:model")
    model = entry.factory(cfg)
    sd = read_tensors(d / "model.safetensors")
    load_state_into(model, sd, str(d / "model.safetensors"))
    return model.to(map_location)


# --------------------------------------------------------------------------- trainer state


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        entry: dict[str, Any] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                entry[k] = v
        plain["state"][str(pid)] = entry
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in plain["state"].items()}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = t
    return {"state": state, "param_groups": plain["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    npst = np.random.get_state()
    plain = {
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    return tensors, plain


def _restore_rng(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    n = plain["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = plain["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_training_state(run_dir: Path, model: torch.nn.Module, model_cfg: Any, optimizer: torch.optim.Optimizer,
                        epoch: int, global_step: int, extra: dict[str, Any] | None = None,
                        keep: int = 2) -> Path:
    """Write a complete checkpoint for ``epoch`` (epochs done) and switch ``last.json`` to it."""
    ckroot = run_dir / "checkpoints"
    name = f"epoch-{epoch:04d}"
    d = ckroot / name
    if d.exists():
        shutil.rmtree(d)
    save_model(d, model, model_cfg, extra={"epoch": epoch})
    otensors, oplain = _flatten_optimizer(optimizer)
    rtensors, rplain = _rng_state()
    write_tensors(d / "trainer.safetensors", {**otensors, **rtensors})
    state = {"epoch": epoch, "global_step": global_step, "optimizer": oplain, "rng": rplain, **(extra or {})}
    atomic_write_text(d / "trainer.json", json.dumps(state))
    atomic_write_text(ckroot / "last.json", json.dumps({"name": name, "epoch": epoch}))
    old = sorted(p for p in ckroot.glob("epoch-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return d


def last_checkpoint(run_dir: Path) -> Path | None:
    ptr = run_dir / "checkpoints" / "last.json"
    if not ptr.exists():
        return None
    try:
        name = json.loads(ptr.read_text())["name"]
    except (json.JSONDecodeError, KeyError) as e:
        raise FileFormatError(f"{ptr}: corrupt checkpoint pointer ({e})") from None
    d = run_dir / "checkpoints" / name
    if not (d / "trainer.json").exists():
        raise FileFormatError(f"{ptr}: points to {d}, which is incomplete or missing")
    return d


def load_training_state(d: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimiser and RNG state; returns the trainer.json dict (epoch, step …)."""
    load_state_into(model, read_tensors(d / "model.safetensors"), str(d / "model.safetensors"))
    tensors = read_tensors(d / "trainer.safetensors")
    try:
        state = json.loads((d / "trainer.json").read_text())
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{d / 'trainer.json'}: corrupt ({e})") from None
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    _restore_rng(tensors, state["rng"])
    return state
