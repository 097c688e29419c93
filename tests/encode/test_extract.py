"""Inference in the configured precision, for codes and float descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from bitseek.encode import embed_dataset, encode_dataset, extract, save_extracted
from bitseek.errors import InputError
from bitseek.models.base import Embedder, HashModel


class Feats(Dataset):
    def __init__(self, n: int = 13) -> None:
        self.x = torch.randn(n, 3, 6, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"feats": self.x[i], "index": i}


class Recorder(HashModel, Embedder):
    """Records whether autocast was on when it ran, and returns a fixed projection."""

    def __init__(self) -> None:
        super().__init__()
        self.bits = self.dim = 8
        self.lin = torch.nn.Linear(6, 8)
        self.autocast_seen: list[bool] = []

    def training_step(self, batch, phase="train"):
        return {"loss": self.lin(batch["feats"]).sum()}

    def _out(self, batch):
        self.autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return self.lin(batch["feats"].mean(1))

    def encode(self, batch):
        return torch.sign(self._out(batch))

    def embed(self, batch):
        return self._out(batch)


def test_encoding_is_fp32_by_default_and_autocast_only_when_chosen():
    m = Recorder()
    encode_dataset(m, Feats(), batch_size=5, device="cpu")
    assert m.autocast_seen == [False, False, False]
    m.autocast_seen.clear()
    encode_dataset(m, Feats(), batch_size=5, device="cpu", precision="bf16")  # an explicit AMP choice
    assert m.autocast_seen == [True, True, True]


def test_the_pipeline_passes_eval_precision_to_the_encoder(tmp_path):
    import dataclasses

    from bitseek import pipeline
    from bitseek.config import EvalConfig, ExperimentConfig, TrainConfig
    from bitseek.data.base import RetrievalData

    @dataclasses.dataclass
    class N:
        name: str

    ds = Feats()
    data = RetrievalData(ds, ds, None, np.arange(13) % 3, None)
    m = Recorder()
    cfg = ExperimentConfig("t", N("r"), N("d"), train=TrainConfig(device="cpu", progress=False),
                           eval=EvalConfig(batch_size=13, precision="bf16", ks=[1]))
    pipeline.extract_splits(m, data, cfg)
    assert m.autocast_seen == [True]
    assert ExperimentConfig("t", N("r"), N("d")).eval.precision == "fp32"
    assert TrainConfig().precision == "fp32"  # AMP in training is an explicit choice too


def test_embed_gives_float32_rows_in_dataset_order_and_extract_picks_the_kind(tmp_path):
    m = Recorder()
    x = embed_dataset(m, Feats(), batch_size=4, device="cpu")
    with torch.no_grad():
        direct = m.lin(Feats().x.mean(1)).numpy()
    assert x.dtype == np.float32 and x.shape == (13, 8)
    np.testing.assert_allclose(x, direct, rtol=1e-5, atol=1e-6)  # batch size changes the BLAS blocking
    kind, codes = extract(m, Feats(), 4, "cpu")
    assert kind == "codes" and set(np.unique(codes)) <= {-1.0, 0.0, 1.0}
    fs = save_extracted("features", x, tmp_path / "x.feats", feature_dtype="float16")
    assert fs.dtype == "float16"


def test_bad_model_outputs_are_named():
    class Flat(Recorder):
        def embed(self, batch):
            return self._out(batch).flatten()

    with pytest.raises(InputError, match=r"returned shape \(40,\), expected \(batch, dim\)"):
        embed_dataset(Flat(), Feats(), batch_size=5, device="cpu")

    class NaNs(Recorder):
        def embed(self, batch):
            return self._out(batch) * float("nan")

    with pytest.raises(InputError, match="NaN or inf"):
        embed_dataset(NaNs(), Feats(), batch_size=5, device="cpu")


def test_old_import_path_still_works():
    from bitseek.train import encode_dataset as from_train
    from bitseek.train.encode import encode_dataset as from_module

    assert from_train is encode_dataset and from_module is encode_dataset
