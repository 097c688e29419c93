"""The seeds' own config files, read as they are: ConMH's ``configs/*.py`` and WSCH's ``Json/*.json``.

A researcher's edited ``conmh_fcv.py`` runs with ``bitseek train --config conmh_fcv.py --gpu 0``.
The Python file is **never executed**: it is parsed with :mod:`ast` and only plain assignments are
evaluated, over literals, names assigned earlier in the file, ``+``, ``str(...)`` and
``[... for i in range(a, b)]`` (what the official files use to build paths such as
``data_root + 'yfcc_train_feats_' + str(i) + '.h5'``). Anything else is an error naming the line.

CVNet's ``test.py`` takes yacs ``KEY VALUE`` pairs instead (:func:`cvnet_test_config`).

The keys are mapped onto bitseek's recipe for the same method and dataset (``conmh/fcvid-64`` ...):
every key is either used (the mapping is logged) or named as ignored with the reason; a key this
module does not know is an error with the nearest known key, so a typo never passes silently.
"""

from __future__ import annotations

import ast
import copy
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bitseek.config.typed import suggest
from bitseek.errors import ConfigError

__all__ = ["load_foreign", "read_python_assignments", "conmh_to_raw", "wsch_to_raw", "CVNetTestConfig",
           "cvnet_test_config"]

log = logging.getLogger(__name__)

_DATASETS = {"fcv": "fcvid", "fcvid": "fcvid", "act": "activitynet", "activitynet": "activitynet",
             "anet": "activitynet", "yfcc": "yfcc"}


# --------------------------------------------------------------------------- reading without executing


_MAX_RANGE = 10_000
_UNSET = object()


class _Evaluator:
    """Evaluates the right-hand sides of a config file's assignments: literals and simple path arithmetic."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, Any] = {}

    def fail(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(f"{self.path}:{getattr(node, 'lineno', '?')}: {what}; only plain assignments of "
                           "literals (numbers, strings, lists, None, True/False), earlier names, + and str() "
                           "are read (the file is not executed)")

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.eval(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.fail(node, "dict unpacking")
            return {self.eval(k): self.eval(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
        if isinstance(node, ast.Name):
            if node.id not in self.values:
                raise self.fail(node, f"name {node.id!r} is used before it is assigned")
            return copy.deepcopy(self.values[node.id])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.eval(node.operand)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.eval(node.left), self.eval(node.right)
            if type(left) is type(right) and isinstance(left, (str, int, float, list)):
                return left + right
            raise self.fail(node, f"cannot add {type(left).__name__} and {type(right).__name__}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str"
                and len(node.args) == 1 and not node.keywords):
            value = self.eval(node.args[0])
            if isinstance(value, (str, int, float)):
                return str(value)
        if isinstance(node, ast.ListComp):
            return self._range_comprehension(node)
        raise self.fail(node, f"unsupported expression {ast.dump(node)[:60]}")

    def _range_comprehension(self, node: ast.ListComp) -> list[Any]:
        """``[expr for i in range(a, b)]`` (YFCC's shard lists); nothing else iterates."""
        gen = node.generators[0] if len(node.generators) == 1 else None
        call = gen.iter if gen is not None else None
        if (gen is None or gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name)
                or not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id != "range"
                or call.keywords or not 1 <= len(call.args) <= 3):
            raise self.fail(node, "a comprehension other than [... for i in range(a, b)]")
        bounds = [self.eval(a) for a in call.args]
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            raise self.fail(node, "range() of non-integers")
        steps = range(*bounds)
        if len(steps) > _MAX_RANGE:
            raise self.fail(node, f"a range of {len(steps)} items (at most {_MAX_RANGE})")
        name = gen.target.id
        saved = self.values.get(name, _UNSET)
        out = []
        try:
            for i in steps:
                self.values[name] = i
                out.append(self.eval(node.elt))
        finally:
            if saved is _UNSET:
                self.values.pop(name, None)
            else:
                self.values[name] = saved
        return out


def read_python_assignments(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``name = value`` pairs of a config ``.py`` file, in order, without executing anything."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
    try:
        tree = ast.parse(text, filename=str(p))
    except SyntaxError as e:
        raise ConfigError(f"{p}:{e.lineno}: Python syntax error ({e.msg})") from None
    ev = _Evaluator(p)
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or a bare string
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            raise ev.fail(node, "an import")
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            ev.values[node.target.id] = ev.eval(node.value)
            continue
        if not isinstance(node, ast.Assign) or not all(isinstance(t, ast.Name) for t in node.targets):
            raise ev.fail(node, f"a {type(node).__name__} statement")
        value = ev.eval(node.value)
        for target in node.targets:
            ev.values[target.id] = value  # type: ignore[union-attr]
    return ev.values


# --------------------------------------------------------------------------- mapping helpers


class _Mapper:
    """Collects overrides onto a packaged recipe and accounts for every key of the foreign file."""

    def __init__(self, source: Path, values: dict[str, Any], known: set[str]) -> None:
        self.source = source
        self.values = values
        unknown = [k for k in values if k not in known]
        if unknown:
            k = unknown[0]
            raise ConfigError(f"{source}: unknown key {k!r}{suggest(k, sorted(known))}; bitseek maps every key "
                              "of the official file, and a key it does not know could be a typo")
        self.raw: dict[str, Any] = {}
        self.used: list[str] = []
        self.ignored: list[tuple[str, str]] = []

    def set(self, dotted: str, value: Any, *keys: str) -> None:
        node = self.raw
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        self.used.extend(f"{k} -> {dotted}" for k in keys if k)

    def take(self, key: str, dotted: str, convert: Callable[[Any], Any] = lambda v: v) -> None:
        if key in self.values:
            self.set(dotted, convert(self.values[key]), key)

    def ignore(self, key: str, reason: str) -> None:
        if key in self.values:
            self.ignored.append((key, reason))

    def report(self) -> None:
        if self.used:
            log.info("%s: mapped %s", self.source.name, ", ".join(self.used))
        for key, reason in self.ignored:
            log.info("%s: ignored %s = %r (%s)", self.source.name, key, self.values[key], reason)


def _split_root(paths: list[str], root: str) -> list[str]:
    """Paths under ``root`` become relative to it (bitseek's ``data.root`` + file names)."""
    out = []
    for p in paths:
        out.append(p[len(root):].lstrip("/") if root and p.startswith(root) else p)
    return out


def _as_list(value: Any, key: str, source: Path) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{source}: {key} must be a path or a list of paths, got {value!r}")
    return [str(v) for v in items if v]


def _dataset(value: Any, key: str, source: Path) -> str:
    name = _DATASETS.get(str(value).lower())
    if name is None:
        raise ConfigError(f"{source}: {key} = {value!r} is not a dataset bitseek has a recipe for "
                          f"({', '.join(sorted(set(_DATASETS)))})")
    return name


def _base_recipe(method: str, dataset: str, bits: int) -> dict[str, Any]:
    from bitseek.config.experiment import load_yaml, packaged_configs

    root = packaged_configs() / method
    exact = root / f"{dataset}-{bits}.yaml"
    return load_yaml(exact if exact.is_file() else root / f"_{dataset}.yaml")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --------------------------------------------------------------------------- ConMH configs/*.py

_CONMH_KEYS = {
    "model_name", "use_checkpoint", "feature_size", "hidden_size", "max_frames", "nbits", "transformer_type",
    "dataset", "workers", "batch_size", "mask_prob", "seed", "num_epochs", "a", "temperature", "tau_plus",
    "train_num_sample", "test_batch_size", "test_num_sample", "query_num_sample", "optimizer_name", "schedule",
    "lr", "min_lr", "lr_decay_rate", "lr_decay_gamma", "weight_decay", "data_root", "home_root",
    "train_feat_path", "test_feat_path", "label_path", "query_feat_path", "query_label_path", "save_dir",
    "file_path",
}
_SCHEDULES = {"steplr": "step", "step": "step", "none": "none", "cosine": "cosine"}
# the official train.py saves the checkpoint it evaluates at 0-based epoch num_epochs - 6
CONMH_EVALUATED_EPOCH_OFFSET = 5


def conmh_to_raw(values: dict[str, Any], source: Path) -> dict[str, Any]:
    """An official ConMH config (its assignments) -> a raw bitseek experiment dict."""
    m = _Mapper(source, values, _CONMH_KEYS)
    if str(values.get("model_name", "conmh")).lower() != "conmh":
        raise ConfigError(f"{source}: model_name = {values['model_name']!r}; only 'conmh' configs are ConMH's")
    if "model_name" in values:
        m.used.append("model_name -> model.name")
    dataset = _dataset(values.get("dataset", "fcv"), "dataset", source)
    if "dataset" in values:
        m.used.append(f"dataset -> data.name={dataset}")
    bits = int(values.get("nbits", 64))
    for key, dotted in (("feature_size", "model.feature_dim"), ("feature_size", "data.feature_dim"),
                        ("hidden_size", "model.hidden_size"), ("max_frames", "model.max_frames"),
                        ("max_frames", "data.max_frames"), ("nbits", "model.bits"),
                        ("transformer_type", "model.transformer_type"), ("mask_prob", "model.mask_prob"),
                        ("a", "model.a"), ("temperature", "model.temperature"), ("tau_plus", "model.tau_plus"),
                        ("workers", "train.num_workers"), ("batch_size", "data.batch_size"),
                        ("seed", "train.seed"), ("test_batch_size", "eval.batch_size"), ("lr", "optim.lr"),
                        ("min_lr", "optim.min_lr"), ("lr_decay_rate", "optim.step_size"),
                        ("lr_decay_gamma", "optim.gamma"), ("weight_decay", "optim.weight_decay")):
        m.take(key, dotted)
    m.take("optimizer_name", "optim.name", lambda v: str(v).lower())
    if "schedule" in values:
        sched = _SCHEDULES.get(str(values["schedule"]).lower())
        if sched is None:
            raise ConfigError(f"{source}: schedule = {values['schedule']!r} (bitseek has StepLR, none, cosine)")
        m.set("optim.schedule", sched, "schedule")
    if "num_epochs" in values:
        epochs = int(values["num_epochs"]) - CONMH_EVALUATED_EPOCH_OFFSET
        if epochs < 1:
            raise ConfigError(f"{source}: num_epochs = {values['num_epochs']}; the official train.py evaluates "
                              f"the checkpoint of epoch num_epochs - 6 (0-based), so it must be at least 6")
        m.set("train.epochs", epochs, f"num_epochs (the evaluated checkpoint: {values['num_epochs']} - 5)")
    root = str(values.get("data_root", ""))
    if root:
        m.set("data.root", root.rstrip("/") or "/", "data_root")
    files = {k: _split_root(_as_list(values[k], k, source), root) for k in
             ("train_feat_path", "test_feat_path", "label_path", "query_feat_path", "query_label_path")
             if k in values}
    if "train_feat_path" in files:
        m.set("data.train_files", files["train_feat_path"], "train_feat_path")
    queries_are_db = not files.get("query_feat_path")
    if queries_are_db:  # FCVID: the test set is queried against itself
        if "test_feat_path" in files:
            m.set("data.query_files", files["test_feat_path"], "test_feat_path")
        if "label_path" in files:
            m.set("data.query_labels", files["label_path"], "label_path")
    else:
        m.set("data.query_files", files["query_feat_path"], "query_feat_path")
        if "query_label_path" in files:
            m.set("data.query_labels", files["query_label_path"], "query_label_path")
        if "test_feat_path" in files:
            m.set("data.db_files", files["test_feat_path"], "test_feat_path")
        if "label_path" in files:
            m.set("data.db_labels", files["label_path"], "label_path")
    if "file_path" in values:
        m.set("train.out_dir", str(values["file_path"]), "file_path")
    if values.get("use_checkpoint") not in (None, ""):
        raise ConfigError(f"{source}: use_checkpoint = {values['use_checkpoint']!r}; import an official checkpoint "
                          "with `bitseek convert` (bitseek runs resume from their own run folder automatically)")
    m.ignore("use_checkpoint", "None: nothing to resume")
    m.ignore("home_root", "only builds save_dir/file_path")
    m.ignore("save_dir", "only builds file_path (-> train.out_dir)")
    for key in ("train_num_sample", "test_num_sample", "query_num_sample"):
        m.ignore(key, "sizes are read from the feature files")
    m.report()
    base = _base_recipe("conmh", dataset, bits)
    raw = _merge(base, m.raw)
    raw["name"] = f"conmh-{dataset}-{bits}"
    return raw


# --------------------------------------------------------------------------- WSCH Json/*.json

_WSCH_KEYS = {"dataset", "train", "train_label", "test", "test_label", "query", "query_label", "num_class",
              "hidden_size", "max_frames"}


def wsch_to_raw(values: dict[str, Any], source: Path) -> dict[str, Any]:
    """An official WSCH dataset JSON -> a raw bitseek experiment dict (64 bits, as run.py; override model.bits)."""
    m = _Mapper(source, values, _WSCH_KEYS)
    dataset = _dataset(values.get("dataset", "fcv"), "dataset", source)
    if "dataset" in values:
        m.used.append(f"dataset -> data.name={dataset}")
    m.take("hidden_size", "model.feature_dim")  # WSCH's JSON calls the input feature size hidden_size
    m.take("hidden_size", "data.feature_dim")
    m.take("max_frames", "model.max_frames")
    m.take("max_frames", "data.max_frames")
    path = lambda k: _as_list(values[k], k, source) if values.get(k) else []  # noqa: E731
    if path("train"):
        m.set("data.train_files", path("train"), "train")
    if path("query") and path("query") != path("test"):
        m.set("data.query_files", path("query"), "query")
        if path("query_label"):
            m.set("data.query_labels", path("query_label"), "query_label")
        if path("test"):
            m.set("data.db_files", path("test"), "test")
        if path("test_label"):
            m.set("data.db_labels", path("test_label"), "test_label")
    else:  # query == test: all-vs-all (FCVID)
        if path("test"):
            m.set("data.query_files", path("test"), "test")
            m.set("data.db_files", [], "query (= test: the queries are the database)")
        label = path("test_label") or path("query_label")
        if label:
            m.set("data.query_labels", label, "test_label")
        if path("query_label") and path("query_label") != path("test_label"):
            raise ConfigError(f"{source}: query == test but query_label differs from test_label")
        m.ignore("query_label", "the same file as test_label")
    m.set("data.root", ".", "")  # the JSON's ./paths are relative to the working directory, as in WSCH's run.py
    m.ignore("train_label", "training is self-supervised and opens no label files")
    m.ignore("num_class", "read from the label files")
    m.report()
    raw = _merge(_base_recipe("wsch", dataset, 64), m.raw)
    raw["name"] = f"wsch-{dataset}-{raw.get('model', {}).get('bits', 64)}"
    return raw


# --------------------------------------------------------------------------- entry point


def load_foreign(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A raw experiment dict from a ConMH ``.py`` or WSCH ``.json`` config (nothing is executed)."""
    p = Path(path)
    if p.suffix.lower() == ".py":
        return conmh_to_raw(read_python_assignments(p), p)
    try:
        values = json.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not a valid UTF-8 JSON file ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{p}: top level must be a JSON object")
    return wsch_to_raw(values, p)


# --------------------------------------------------------------------------- CVNet test.py KEY VALUE pairs


@dataclass
class CVNetTestConfig:
    """The keys CVNet's ``test.py`` reads (yacs ``core/config.py``), with the official defaults."""

    depth: int = 50  # MODEL.DEPTH
    reduction_dim: int = 2048  # MODEL.HEADS.REDUCTION_DIM
    weights: str = ""  # TEST.WEIGHTS: .pyth, a bitseek checkpoint folder, or "random"
    data_dir: str = ""  # TEST.DATA_DIR: holds <dataset>/gnd_<dataset>.pkl and <dataset>/jpg/
    dataset_list: list[str] = field(default_factory=lambda: ["roxford5k", "rparis6k"])
    scale_list: list[float] = field(default_factory=lambda: [0.7071, 1.0, 1.4142])
    topk_list: list[int] = field(default_factory=lambda: [100])
    # SuperGlobal's switches (its test.py's SupG.* keys); off = CVNet's own pooling
    gemp: bool = False  # SupG.gemp
    rgem: bool = False  # SupG.rgem
    sgem: bool = False  # SupG.sgem
    relup: bool = False  # SupG.relup


_CVNET_TEST_KEYS = {"MODEL.DEPTH": "depth", "MODEL.HEADS.REDUCTION_DIM": "reduction_dim", "TEST.WEIGHTS": "weights",
                    "TEST.DATA_DIR": "data_dir", "TEST.DATASET_LIST": "dataset_list",
                    "TEST.SCALE_LIST": "scale_list", "TEST.TOPK_LIST": "topk_list",
                    "SUPG.GEMP": "gemp", "SUPG.RGEM": "rgem", "SUPG.SGEM": "sgem", "SUPG.RELUP": "relup"}
# present in the official config but not read by its test (or fixed by it)
_CVNET_TEST_IGNORED = {
    "CUDNN.BENCHMARK": "the test always runs with cudnn.benchmark off, as the official test_model does",
    "NUM_GPUS": "test.py forces 1; bitseek's device is --device",
    "MODEL.TYPE": "vestigial (always a ResNet)", "MODEL.LOSSES.NAME": "training only",
    "MODEL.HEADS.NAME": "vestigial", "MODEL.HEADS.IN_FEAT": "fixed at 2048 by the ResNet",
    "MODEL_NAME": "vestigial", "RNG_SEED": "testing draws no random numbers (random weights use --seed)",
    "OUT_DIR": "results go to --out", "DATA_LOADER.NUM_WORKERS": "the official loader hard-codes 4; use --workers",
}


def _yacs_value(text: str) -> Any:
    """A yacs command-line value: a Python literal if it parses as one, else the string (yacs's rule)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def cvnet_test_config(items: list[str]) -> CVNetTestConfig:
    """``KEY VALUE`` pairs as CVNet's ``python test.py MODEL.DEPTH 50 TEST.WEIGHTS …`` takes them.

    Every key is used, named as ignored (logged) or refused with the nearest known key."""
    if len(items) % 2:
        raise ConfigError(f"{items[-1]!r} has no value: CVNet's options come in KEY VALUE pairs "
                          "(e.g. MODEL.DEPTH 50 TEST.WEIGHTS CVPR2022_CVNet_R50.pyth)")
    cfg = CVNetTestConfig()
    known = sorted([*_CVNET_TEST_KEYS, *_CVNET_TEST_IGNORED])
    for key, raw in zip(items[0::2], items[1::2]):
        k = key.upper()
        if k in _CVNET_TEST_IGNORED:
            log.info("ignored %s = %s (%s)", k, raw, _CVNET_TEST_IGNORED[k])
            continue
        if k not in _CVNET_TEST_KEYS:
            raise ConfigError(f"unknown key {key!r}{suggest(k, known)}")
        value = _yacs_value(raw)
        name = _CVNET_TEST_KEYS[k]
        if name in ("depth", "reduction_dim"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{k}: expected a positive whole number, got {raw!r}")
        elif name in ("weights", "data_dir"):
            value = raw  # a path is never a literal
        elif name in ("gemp", "rgem", "sgem", "relup"):
            if not isinstance(value, bool):
                raise ConfigError(f"{k}: expected True or False, got {raw!r}")
        elif name == "dataset_list":
            value = [v for v in value.split(",") if v] if isinstance(value, str) else value
            if not (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{k}: expected dataset names such as \"['roxford5k', 'rparis6k']\", got {raw!r}")
            value = list(value)
        else:
            value = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            ok = isinstance(value, (list, tuple)) and value and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
            if name == "topk_list":
                ok = ok and all(isinstance(v, int) for v in value)
            if not ok:
                want = "[0.7071, 1.0, 1.4142]" if name == "scale_list" else "[100]"
                raise ConfigError(f"{k}: expected a list of positive numbers such as \"{want}\", got {raw!r}")
            value = [float(v) for v in value] if name == "scale_list" else [int(v) for v in value]
        setattr(cfg, name, value)
    return cfg
