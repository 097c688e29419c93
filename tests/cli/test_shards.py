"""`bitseek encode --shard`, `bitseek merge` and `bitseek index` over shards, by hand and under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitseek.cli.main import main
from bitseek.codes import CodeSet

SRC = Path(__file__).resolve().parents[2] / "src"


def test_shards_merge_into_the_unsharded_codes_and_index(run, tmp_path, capsys):
    _, cfg = run
    assert main(["encode", "--config", str(cfg), "--out", str(tmp_path / "all.codes")]) == 0
    for i in range(3):
        assert main(["encode", "--config", str(cfg), "--shard", f"{i}/3", "--out", str(tmp_path / "db.codes")]) == 0
    shards = sorted(str(p) for p in tmp_path.glob("db.shard-*-of-00003.codes"))
    assert len(shards) == 3
    assert main(["merge", *shards, "--out", str(tmp_path / "merged.codes")]) == 0
    whole, merged = CodeSet.load(tmp_path / "all.codes"), CodeSet.load(tmp_path / "merged.codes")
    np.testing.assert_array_equal(merged.codes, whole.codes)
    np.testing.assert_array_equal(merged.ids, whole.ids)
    assert [len(CodeSet.load(p)) for p in shards] == [14, 13, 13]
    # index straight from the shards: the same search results as the unsharded file's index
    assert main(["index", "--codes", *shards, "--out", str(tmp_path / "s.index")]) == 0
    assert main(["index", "--codes", str(tmp_path / "all.codes"), "--out", str(tmp_path / "a.index")]) == 0
    capsys.readouterr()
    docs = []
    for ix in ("s.index", "a.index"):
        assert main(["search", "--index", str(tmp_path / ix), "--queries", str(tmp_path / "all.codes"), "-k", "7",
                     "--json"]) == 0
        docs.append(json.loads(capsys.readouterr().out)["results"])
    assert docs[0] == docs[1]


def test_shard_mistakes_are_one_line_errors(run, tmp_path, capsys):
    _, cfg = run
    assert main(["encode", "--config", str(cfg), "--shard", "3/3", "--out", str(tmp_path / "x.codes")]) == 2
    assert "--shard 3/3" in capsys.readouterr().err
    assert main(["encode", "--config", str(cfg), "--shard", "1/2", "--out", str(tmp_path / "x.codes")]) == 0
    assert main(["merge", str(tmp_path / "x.shard-00001-of-00002.codes"), "--out", str(tmp_path / "m.codes")]) == 2
    err = capsys.readouterr().err
    assert "shards 0/2 are missing" in err and "Traceback" not in err


@pytest.mark.slow
def test_torchrun_ranks_encode_one_shard_each(run, tmp_path):
    _, cfg = run
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "bitseek", "encode", "--config", str(cfg), "--shard", "auto", "--quiet",
                        "--out", str(tmp_path / "db.codes")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    shards = sorted(str(p) for p in tmp_path.glob("db.shard-*-of-00002.codes"))
    assert len(shards) == 2
    assert main(["encode", "--config", str(cfg), "--out", str(tmp_path / "all.codes")]) == 0
    assert main(["merge", *shards, "--out", str(tmp_path / "m.codes")]) == 0
    np.testing.assert_array_equal(CodeSet.load(tmp_path / "m.codes").codes, CodeSet.load(tmp_path / "all.codes").codes)
