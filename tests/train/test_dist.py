"""The data layout over ranks (computed without a process group) and the launcher's no-op path."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from bitseek import collective
from bitseek.collective import BatchLayout
from bitseek.train import dist


class Items(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"index": i}


def test_global_batches_are_the_single_process_loader_batches():
    for n, bs in ((64, 16), (61, 16), (5, 8)):
        g1, g2 = torch.Generator(), torch.Generator()
        g1.manual_seed(7)
        g2.manual_seed(7)
        want = [b["index"].tolist() for b in DataLoader(Items(n), batch_size=bs, shuffle=True, generator=g1)]
        assert dist.global_batches(n, bs, True, g2) == want
    assert dist.global_batches(10, 4, False, torch.Generator()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_rank_blocks_concatenate_to_the_global_batch():
    batch = [9, 3, 5, 1, 7]
    blocks = dist.rank_blocks(batch, 2)
    assert blocks == [[9, 3, 5], [1, 7]]
    assert sum(blocks, []) == batch
    assert dist.rank_blocks([4], 2) == [[4], []]


def test_rank_pass_sets_the_layout_and_drops_ragged_batches_only_in_training():
    batches = [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    seen = []
    train = dist.RankPass(Items(9), batches, world=2, rank=1, drop_ragged=True)
    for b in train:
        seen.append((b["index"].tolist(), collective.batch_layout()))
    assert seen == [([2, 3], BatchLayout((2, 2), 1)), ([6, 7], BatchLayout((2, 2), 1))]
    assert collective.batch_layout() is None  # the layout ends with the step
    ordered = dist.RankPass(Items(9), batches, world=2, rank=1, drop_ragged=False)
    assert ordered.plan == [(2, 2), (2, 2), (1, 0)] and len(ordered) == 2  # rank 1 has no row of batch 3
    rank0 = dist.RankPass(Items(9), batches, world=2, rank=0, drop_ragged=False)
    assert [b["index"].tolist() for b in rank0] == [[0, 1], [4, 5], [8]]


def test_batch_rand_slices_the_global_draw():
    gen = torch.Generator()
    gen.manual_seed(3)
    want = torch.rand(5, 4, generator=gen)
    parts = []
    for r, sizes in ((0, (3, 2)), (1, (3, 2))):
        g = torch.Generator()
        g.manual_seed(3)
        collective.set_shared_generator(g)
        try:
            with collective.use_layout(BatchLayout(sizes, r)):
                parts.append(collective.batch_rand(sizes[r], 4))
        finally:
            collective.set_shared_generator(None)
    assert torch.equal(torch.cat(parts), want)
    torch.manual_seed(1)
    a = collective.batch_rand(2, 3)
    torch.manual_seed(1)
    assert torch.equal(a, torch.rand(2, 3))  # one process: torch.rand as before


def test_process_group_is_a_no_op_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with dist.process_group() as active:
        assert active is False
        with dist.main_only() as me:
            assert me
    assert not torch.distributed.is_initialized()


def test_trainer_refuses_torchrun_without_a_group(monkeypatch, tmp_path):
    import numpy as np
    import pytest

    from bitseek.config import load_config
    from bitseek.data.base import RetrievalData
    from bitseek.errors import ConfigError
    from bitseek.registry import create_model
    from bitseek.train.engine import Trainer

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config(raw={"name": "x", "model": {"name": "conmh", "bits": 8, "feature_dim": 8, "max_frames": 4,
                                                  "hidden_size": 16, "depth": 1, "heads": 2, "decoder_dim": 16,
                                                  "decoder_depth": 1, "decoder_heads": 2},
                           "data": {"name": "video-features"}, "train": {"out_dir": str(tmp_path)}})
    data = RetrievalData(Items(4), Items(4), None, np.zeros(4), None)
    with pytest.raises(ConfigError, match="process_group"):
        Trainer(create_model(cfg.model), cfg, data)
