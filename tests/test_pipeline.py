"""The pipeline's two output paths (codes, features), its protocols, and what it saves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from bitseek import pipeline
from bitseek.config import EvalConfig, ExperimentConfig, TrainConfig
from bitseek.data.base import GndRelevance, LabelRelevance, RetrievalData
from bitseek.eval import map_at_k, map_at_k_ranked, map_at_topk, revisited
from bitseek.models.base import Embedder, HashModel, TrainableModel

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "revisitop"


class Rows(Dataset):
    def __init__(self, x: np.ndarray) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"feats": self.x[i], "index": i}


class MeanEmbedder(Embedder, TrainableModel):
    """L2-normalised projection of the frame mean."""

    def __init__(self, d_in: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = torch.nn.Linear(d_in, dim, bias=False)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def training_step(self, batch, phase="train"):
        return {"loss": self.proj(batch["feats"].mean(1)).pow(2).mean()}

    def embed(self, batch):
        return torch.nn.functional.normalize(self.proj(batch["feats"].mean(1)), dim=1)


class EvenFrameHasher(HashModel):
    """sign(mean of ±1 frame codes) over an even number of frames: ternary codes, as ConMH on ActivityNet."""

    def __init__(self, d_in: int, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.proj = torch.nn.Linear(d_in, bits, bias=False)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(1))

    def training_step(self, batch, phase="train"):
        return {"loss": self.proj(batch["feats"]).pow(2).mean()}

    def encode(self, batch):
        return torch.sign(torch.sign(self.proj(batch["feats"])).mean(1))


@dataclasses.dataclass
class _Named:
    name: str


def Cfg(out: Path, **ev) -> ExperimentConfig:
    """An experiment config for toy models and data (the parts evaluation reads)."""
    return ExperimentConfig(name="toy", model=_Named("toy"), data=_Named("toy-data"),
                            train=TrainConfig(device="cpu", progress=False, out_dir=str(out)), eval=EvalConfig(**ev))


def _labelled(n_q=12, n_db=60, frames=4, d=10, seed=0, info=None, same=False):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_q, frames, d)).astype(np.float32)
    db = rng.standard_normal((n_db, frames, d)).astype(np.float32)
    ql, dl = rng.integers(0, 3, n_q), rng.integers(0, 3, n_db)
    if same:
        return RetrievalData(Rows(q), Rows(q), None, ql, None, info=dict(info or {}))
    return RetrievalData(Rows(q), Rows(q), Rows(db), ql, dl, info=dict(info or {}))


def _evaluate(cfg, model, data, out=None):
    return pipeline.evaluate(cfg, model, data, out_dir=out)


def test_float_features_are_ranked_by_inner_product_and_saved_as_a_featureset(tmp_path):
    from bitseek.codes import FeatureSet

    data = _labelled()
    model = MeanEmbedder(10, 16)
    cfg = Cfg(tmp_path, protocol="map_at_k", ks=[1, 5, 20])
    rows = _evaluate(cfg, model, data, tmp_path / "eval")
    with torch.no_grad():
        q = model.embed({"feats": data.query.x}).numpy()
        db = model.embed({"feats": data.database.x}).numpy()
    order = np.argsort(-(q @ db.T), axis=1, kind="stable")
    exp = map_at_k_ranked(order[:, :20], data.query_labels, data.db_labels, ks=[1, 5, 20])
    got = {r["metric"]: r["value"] for r in rows}
    assert got == pytest.approx({f"mAP@{k}": v for k, v in exp.items()}, abs=1e-12)
    assert rows[0]["bits"] == 16  # the descriptor dimension
    saved = FeatureSet.load(tmp_path / "eval" / "database.feats")
    np.testing.assert_array_equal(np.asarray(saved.features), db)
    assert not (tmp_path / "eval" / "database.codes").exists()


def test_codes_keep_the_evaluators_exact_path_and_numbers():
    data = _labelled(seed=3)
    model = EvenFrameHasher(10, 16)
    rows = _evaluate(Cfg(Path("."), protocol="map_at_k", ks=[5, 10], ties="numpy"), model, data)
    with torch.no_grad():
        q = model.encode({"feats": data.query.x}).numpy()
        db = model.encode({"feats": data.database.x}).numpy()
    exp = map_at_k(q, db, data.query_labels, data.db_labels, ks=[5, 10], ties="numpy")
    assert [r["value"] for r in rows] == [exp[5], exp[10]]


def test_image_datasets_carry_their_cutoff_into_evaluation_unless_the_config_says_otherwise():
    data = _labelled(info={"topk": 7})  # what image_lists/cifar/image_folder put in info
    model = EvenFrameHasher(10, 16)
    rows = _evaluate(Cfg(Path(".")), model, data)  # eval.protocol auto, eval.topk unset
    with torch.no_grad():
        q = model.encode({"feats": data.query.x}).numpy()
        db = model.encode({"feats": data.database.x}).numpy()
    assert [r["metric"] for r in rows] == ["mAP@7"]
    assert rows[0]["value"] == map_at_topk(q, db, data.query_labels, data.db_labels, topk=7)
    # explicit settings win
    assert [r["metric"] for r in _evaluate(Cfg(Path("."), protocol="map_at_topk", topk=0), model, data)] == ["mAP@all"]
    assert [r["metric"] for r in _evaluate(Cfg(Path("."), protocol="map_at_k", ks=[5]), model, data)] == ["mAP@5"]
    # CIFAR-10's 0 means mAP@all; video data (no topk in info) keeps the video mAP@K
    assert [r["metric"] for r in _evaluate(Cfg(Path(".")), model, _labelled(info={"topk": 0}))] == ["mAP@all"]
    assert [r["metric"] for r in _evaluate(Cfg(Path("."), ks=[5]), model, _labelled())] == ["mAP@5"]


def test_resolve_eval_names_the_protocol_and_refuses_unknown_ones():
    from bitseek.errors import ConfigError

    ev = pipeline.resolve_eval(EvalConfig(), _labelled(info={"topk": 1000}))
    assert (ev.protocol, ev.topk) == ("map_at_topk", 1000)
    with pytest.raises(ConfigError, match="eval.protocol"):
        EvalConfig(protocol="map@k")


def _gnd():
    p = FIXTURES / "gnd_roxford5k.pkl"
    if not p.is_file():
        pytest.skip(f"revisitop fixture {p} not available")
    from bitseek.data.revisited import load_gnd

    return load_gnd(p)


@pytest.mark.parametrize("kind", ["features", "codes"])
def test_revisited_protocol_runs_from_the_pipeline(kind):
    gnd = _gnd()
    n_q, n_db = len(gnd["qimlist"]), len(gnd["imlist"])
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n_q, 2, 10)).astype(np.float32)
    db = rng.standard_normal((n_db, 2, 10)).astype(np.float32)
    data = RetrievalData(Rows(q[:1]), Rows(q), Rows(db), None, None, gnd=gnd)
    assert isinstance(data.relevance, GndRelevance)
    model = MeanEmbedder(10, 32) if kind == "features" else EvenFrameHasher(10, 32)
    rows = _evaluate(Cfg(Path(".")), model, data)  # auto -> revisited
    with torch.no_grad():
        fn = model.embed if kind == "features" else model.encode
        qx, dx = fn({"feats": data.query.x}).numpy(), fn({"feats": data.database.x}).numpy()
    if kind == "features":
        ranks = np.argsort(-(qx @ dx.T), axis=1, kind="stable").T
    else:
        ranks = np.argsort(0.5 * (32 - qx @ dx.T), axis=1, kind="stable").T
    exp = revisited.evaluate(ranks, gnd)
    got = {r["metric"]: r["value"] for r in rows}
    for proto, res in exp.items():
        s = proto[0].upper()
        assert got[f"mAP-{s}"] == res.map
        assert [got[f"mP@{k}-{s}"] for k in (1, 5, 10)] == list(res.mp_at_k.values())


def test_revisited_needs_a_ground_truth_and_labels_need_a_label_protocol():
    from bitseek.errors import ConfigError

    data = _labelled()
    with pytest.raises(ConfigError, match="revisitop ground truth"):
        _evaluate(Cfg(Path("."), protocol="revisited"), EvenFrameHasher(10, 8), data)
    with pytest.raises(ConfigError, match="use eval.protocol=revisited"):
        pipeline.evaluate_outputs("codes", np.ones((2, 8)), None, GndRelevance({"gnd": []}),
                                  EvalConfig(protocol="map_at_k"), "d", "m")


def test_saved_ternary_codes_reproduce_the_pipelines_numbers(tmp_path):
    """bitseek eval-codes on what eval saved gives eval's numbers (zeros used to pack as -1)."""
    from bitseek.codes import CodeSet

    data = _labelled(n_q=30, n_db=80, frames=2, seed=5)
    model = EvenFrameHasher(10, 16)
    cfg = Cfg(tmp_path, protocol="map_at_k", ks=[5, 10, 20])
    rows = _evaluate(cfg, model, data, tmp_path / "eval")
    q = CodeSet.load(tmp_path / "eval" / "query.codes")
    db = CodeSet.load(tmp_path / "eval" / "database.codes")
    assert q.ternary and db.ternary  # two frames: many exact zeros
    again = pipeline.evaluate_outputs("codes", q.for_eval(), db.for_eval(), LabelRelevance(data.query_labels, data.db_labels),
                                      cfg.eval, "toy-data", "toy")
    assert [r["value"] for r in again] == [r["value"] for r in rows]
    packed = map_at_k(q.codes, db.codes, data.query_labels, data.db_labels, ks=[5, 10, 20])
    assert list(packed.values()) != [r["value"] for r in rows]  # what the old files gave


def test_encode_splits_keeps_the_old_contract():
    data = _labelled(same=True)
    q, db = pipeline.encode_splits(EvenFrameHasher(10, 8), data, Cfg(Path(".")))
    assert db is q and q.shape == (12, 8)
