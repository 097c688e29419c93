"""Checkpoints: ``safetensors`` tensors + JSON, never pickle, every tensor file checksummed.

Layout of a run folder::

    out_dir/config.yaml                    the settings the run was trained with
    out_dir/checkpoints/epoch-0005/{model.safetensors, config.json, trainer.safetensors, trainer.json}
    out_dir/checkpoints/last.json          -> {"name": "epoch-0005", "epoch": 5}

A checkpoint folder is complete before ``last.json`` is atomically switched to it, so a crash at any
moment leaves the previous checkpoint usable. ``config.json`` carries the SHA-256 of
``model.safetensors`` and ``trainer.json`` that of ``trainer.safetensors``; a checkpoint whose bytes
do not match is treated as corrupt. On resume a corrupt or missing last checkpoint is not fatal: the
newest valid one is used and the fallback is reported, because silently restarting at epoch 0 (or
refusing while a good checkpoint sits on disk) loses work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml

import bitseek
from bitseek import safe_yaml
from bitseek.atomic import atomic_write_text, sweep_stale_temporaries
from bitseek.errors import ConfigError, FileFormatError
from bitseek.weights import (
    load_state_into,
    read_model_config,
    read_model_weights,
    read_safetensors,
    save_model,
    write_safetensors,
)

__all__ = [
    "TrainingState",
    "apply_training_state",
    "check_run_folder",
    "describe_model_folder",
    "find_resume_state",
    "last_checkpoint",
    "list_checkpoints",
    "load_model",
    "load_state_into",
    "next_free_run_dir",
    "read_model_config",
    "read_training_state",
    "save_model",
    "save_training_state",
]

log = logging.getLogger(__name__)

TRAINER_FORMAT_VERSION = 2
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Atomically write a safetensors file; returns its SHA-256."""
    return write_safetensors(path, tensors, metadata)


def read_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    return read_safetensors(path, sha256=sha256)


def load_model(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a registered model from a model folder (config.json + checksum-verified model.safetensors)."""
    from bitseek.config import from_dict
    from bitseek.registry import MODELS

    d = Path(directory)
    meta = read_model_config(d)
    mcfg = dict(meta["model"])
    entry = MODELS.get(str(mcfg.get("name")))
    cfg = from_dict(entry.config_cls, mcfg, f"{d / 'config.json'}:model")
    model = entry.factory(cfg)  # no initialisation weights are read: the folder holds every weight
    load_state_into(model, read_model_weights(d, meta), str(d / "model.safetensors"))
    return model.to(map_location)


def describe_model_folder(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What a metrics file should record about the weights it scored (path, epoch, checksum, versions)."""
    d = Path(directory)
    meta = read_model_config(d)
    return {
        "path": str(d.resolve()),
        "epoch": meta.get("epoch"),
        "weights_sha256": meta.get("weights_sha256"),
        "model": meta["model"].get("name"),
        "written_by_bitseek": meta.get("bitseek_version"),
        "written_by_torch": meta.get("torch_version"),
        "bitseek_version": bitseek.__version__,
        "torch_version": torch.__version__,
    }


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


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
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
    pyst = random.getstate()
    plain = {
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
        "python": [pyst[0], list(pyst[1]), pyst[2]],
    }
    return tensors, plain


def _restore_rng(tensors: Mapping[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    n = plain["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = plain["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(epoch, folder)`` of every ``checkpoints/epoch-N`` folder, oldest first (by number, not name)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _EPOCH_DIR.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _prune(ckroot: Path, epoch: int, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints up to ``epoch``; anything newer is from an abandoned history."""
    older: list[Path] = []
    for e, p in list_checkpoints(ckroot.parent):
        if e > epoch:
            log.info("removing stale checkpoint %s (newer than the resumed history)", p)
            shutil.rmtree(p, ignore_errors=True)
        elif e < epoch:
            older.append(p)
    for p in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)


def save_training_state(run_dir: Path, model: torch.nn.Module, model_cfg: Any, optimizer: torch.optim.Optimizer,
                        epoch: int, global_step: int, extra: dict[str, Any] | None = None,
                        keep: int = 2, extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a complete checkpoint for ``epoch`` (epochs done) and switch ``last.json`` to it.

    ``extra_tensors`` (``rng.*`` names) hold state only the engine knows, e.g. every DDP rank's generators.
    """
    ckroot = Path(run_dir) / "checkpoints"
    ckroot.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(ckroot)
    name = f"epoch-{epoch:04d}"
    d = ckroot / name
    if d.exists():
        shutil.rmtree(d)
    save_model(d, model, model_cfg, extra={"epoch": epoch})
    otensors, oplain = _flatten_optimizer(optimizer)
    rtensors, rplain = _rng_state()
    digest = write_tensors(d / "trainer.safetensors", {**otensors, **rtensors, **(extra_tensors or {})})
    state = {"format_version": TRAINER_FORMAT_VERSION, "epoch": epoch, "global_step": global_step,
             "tensors_sha256": digest, "optimizer": oplain, "rng": rplain, **(extra or {})}
    atomic_write_text(d / "trainer.json", json.dumps(state))
    atomic_write_text(ckroot / "last.json", json.dumps({"name": name, "epoch": epoch}))
    _prune(ckroot, epoch, keep)
    return d


def _read_pointer(run_dir: Path) -> tuple[str | None, str | None]:
    """(folder name in last.json, problem) — problem is None when the pointer is fine or absent."""
    ptr = Path(run_dir) / "checkpoints" / "last.json"
    if not ptr.exists():
        return None, None
    try:
        doc = json.loads(ptr.read_text(encoding="utf-8"))
        name = doc["name"]
        if not isinstance(name, str) or not _EPOCH_DIR.match(name):
            raise ValueError(f"bad folder name {name!r}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        return None, f"{ptr}: corrupt checkpoint pointer ({type(e).__name__}: {e})"
    return name, None


def last_checkpoint(run_dir: Path) -> Path | None:
    """The folder ``last.json`` points to, or None without a pointer (no validation of its contents)."""
    name, problem = _read_pointer(run_dir)
    if problem:
        raise FileFormatError(problem)
    if name is None:
        return None
    d = Path(run_dir) / "checkpoints" / name
    if not (d / "trainer.json").exists():
        raise FileFormatError(f"{Path(run_dir) / 'checkpoints' / 'last.json'}: points to {d}, which is incomplete "
                              "or missing")
    return d


@dataclasses.dataclass
class TrainingState:
    """A checkpoint read and verified, not yet applied to a model."""

    directory: Path
    epoch: int
    global_step: int
    model: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]
    plain: dict[str, Any]


def _check_state_json(state: Any, where: Path) -> None:
    """Structural checks so that a damaged but parseable trainer.json is an error, not a traceback."""
    def bad(what: str) -> FileFormatError:
        return FileFormatError(f"{where}: corrupt ({what})")

    if not isinstance(state, dict):
        raise bad(f"expected a JSON object, got {type(state).__name__}")
    for key in ("epoch", "global_step"):
        v = state.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"{key!r} must be a whole number >= 0, got {v!r}")
    opt = state.get("optimizer")
    if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list) \
            or not isinstance(opt.get("state"), dict):
        raise bad("no valid 'optimizer' section")
    if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in opt["param_groups"]):
        raise bad("optimizer param_groups are malformed")
    try:
        for pid in opt["state"]:
            int(pid)
    except ValueError:
        raise bad("optimizer state keys must be parameter numbers") from None
    rng = state.get("rng")
    if not isinstance(rng, dict):
        raise bad("no 'rng' section")
    n, p = rng.get("numpy"), rng.get("python")
    if not (isinstance(n, list) and len(n) == 5 and isinstance(n[1], list) and len(n[1]) == 624):
        raise bad("numpy RNG state is malformed")
    if not (isinstance(p, list) and len(p) == 3 and isinstance(p[1], list) and len(p[1]) == 625):
        raise bad("python RNG state is malformed")


def read_training_state(d: Path) -> TrainingState:
    """Read and verify a checkpoint folder (checksums, JSON structure); raises FileFormatError if damaged."""
    d = Path(d)
    if not d.is_dir():
        raise FileFormatError(f"{d}: checkpoint folder is missing")
    meta = read_model_config(d)
    model_sd = read_model_weights(d, meta)
    tj = d / "trainer.json"
    if not tj.is_file():
        raise FileFormatError(f"{tj}: missing (the checkpoint is incomplete)")
    try:
        state = json.loads(tj.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{tj}: corrupt ({e})") from None
    _check_state_json(state, tj)
    digest = state.get("tensors_sha256")
    if digest is None and state.get("format_version", 1) >= 2:
        raise FileFormatError(f"{tj}: corrupt (no 'tensors_sha256')")
    if digest is None:
        log.warning("%s: written before checksums; its optimizer state cannot be verified", d)
    tensors = read_tensors(d / "trainer.safetensors", sha256=digest)
    if "rng.torch" not in tensors:
        raise FileFormatError(f"{d / 'trainer.safetensors'}: corrupt (no 'rng.torch' state)")
    return TrainingState(d, int(state["epoch"]), int(state["global_step"]), model_sd, tensors, state)


def apply_training_state(st: TrainingState, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a verified checkpoint into ``model``/``optimizer`` and restore the RNGs."""
    load_state_into(model, st.model, str(st.directory / "model.safetensors"))
    try:
        optimizer.load_state_dict(_unflatten_optimizer(st.tensors, st.plain["optimizer"]))
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise FileFormatError(f"{st.directory / 'trainer.json'}: the optimizer state does not fit this model "
                              f"and optimiser ({e}); use a new train.out_dir") from None
    try:
        _restore_rng(st.tensors, st.plain["rng"])
    except (ValueError, TypeError, RuntimeError, KeyError) as e:
        raise FileFormatError(f"{st.directory / 'trainer.json'}: corrupt RNG state ({e})") from None


def find_resume_state(run_dir: Path) -> tuple[TrainingState | None, list[str]]:
    """The newest valid checkpoint of a run and the problems met on the way (empty if the last one was fine).

    ``last.json`` is authoritative when it is readable: folders newer than it belong to a save that never
    completed and are not considered. Without a usable pointer every ``epoch-N`` folder is a candidate.
    Raises FileFormatError when checkpoints exist but none is valid.
    """
    run_dir = Path(run_dir)
    folders = list_checkpoints(run_dir)
    for d in (run_dir, run_dir / "model", run_dir / "checkpoints", *(p for _, p in folders)):
        sweep_stale_temporaries(d)  # leftovers of a killed save, whichever file it was writing
    name, problem = _read_pointer(run_dir)
    problems: list[str] = [problem] if problem else []
    if name is None and not problem and folders:
        problems.append(f"{run_dir / 'checkpoints' / 'last.json'} is missing")
    if name is not None:
        pointed = _EPOCH_DIR.match(name)
        limit = int(pointed.group(1)) if pointed else math.inf
        folders = [(e, p) for e, p in folders if e <= limit]
        if not any(p.name == name for _, p in folders):
            problems.append(f"last.json points to {name}, which is missing")
    for _, d in reversed(folders):
        try:
            return read_training_state(d), problems
        except FileFormatError as e:
            problems.append(str(e))
    if problems:
        raise FileFormatError("no usable checkpoint in " + str(run_dir / "checkpoints") + ": " + "; ".join(problems)
                              + " — delete that folder to start the run afresh, or use a new train.out_dir")
    return None, problems


# --------------------------------------------------------------------------- run identity

# Settings that may differ when a run is resumed: they change neither the model nor what it is trained on.
RESUME_SAFE_KEYS: tuple[str, ...] = (
    "train.epochs", "train.progress", "train.log_every", "train.num_workers", "train.device",
    "train.checkpoint_every", "train.compile", "train.out_dir", "data.root", "data.ram_budget", "eval.",
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: d}


def _safe_key(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in RESUME_SAFE_KEYS)


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs and is not resume-safe."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for k in sorted(set(a) | set(b)):
        if _safe_key(k):
            continue
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if va != vb:
            out.append(f"{k}: {va!r} -> {vb!r}")
    return out


def check_run_folder(cfg_dict: dict[str, Any], out_dir: Path) -> None:
    """Refuse to continue a run folder that holds a run with different settings; writes nothing."""
    path = Path(out_dir) / "config.yaml"
    if not path.exists():
        return
    try:
        old = safe_yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: unreadable ({type(e).__name__}); cannot tell whether this run folder holds "
                          "the same run — use a new train.out_dir or `bitseek train --new-run`") from None
    if not isinstance(old, dict):
        raise ConfigError(f"{path}: not a run config; use a new train.out_dir or `bitseek train --new-run`")
    new = yaml.safe_load(yaml.safe_dump(cfg_dict, sort_keys=False))  # same types as the file
    changed = changed_settings(old, new)
    if changed:
        more = f" (+{len(changed) - 10} more)" if len(changed) > 10 else ""
        raise ConfigError(f"{out_dir} holds a run trained with other settings: " + "; ".join(changed[:10]) + more
                          + ". Use a new train.out_dir, or `bitseek train --new-run` to train into a fresh folder")


def next_free_run_dir(out_dir: Path) -> Path:
    """``out_dir`` if unused, else the first free ``out_dir-2``, ``out_dir-3`` …"""
    out_dir = Path(out_dir)
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return out_dir
    i = 2
    while True:
        cand = out_dir.with_name(f"{out_dir.name}-{i}")
        if not cand.exists():
            return cand
        i += 1
