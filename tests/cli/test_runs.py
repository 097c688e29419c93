"""Run folders through the CLI: what eval scored, refused re-runs, checksums, recovery, crash leftovers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitseek.cli.main import main
from bitseek.weights import sha256_file


def folder_digest(root: Path) -> str:
    """Names, sizes and contents of every file below ``root`` (mtimes excluded: content is what matters)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _flip_tensor_byte(path: Path) -> None:
    import struct

    b = bytearray(path.read_bytes())
    header = struct.unpack("<Q", b[:8])[0]
    b[8 + header + 5] ^= 0x80  # first tensor's data; the header stays valid
    path.write_bytes(bytes(b))


# --------------------------------------------------------------------------- item 1: what eval scored


def test_eval_with_a_missing_checkpoint_is_an_error(run, capsys):
    base, cfg = run
    rc = main(["eval", "--config", str(cfg), "--checkpoint", str(base / "run" / "checkpoints" / "epoch-0007")])
    err = capsys.readouterr().err
    assert rc == 2 and "--checkpoint" in err and "epoch-0007" in err and "does not exist" in err
    assert not (base / "run" / "eval").exists()


def test_eval_checkpoint_that_is_not_a_model_folder(run, capsys):
    base, cfg = run
    rc = main(["eval", "--config", str(cfg), "--checkpoint", str(base / "run")])
    assert rc == 2 and "not a model folder" in capsys.readouterr().err


def test_metrics_record_what_was_scored(run, capsys):
    import torch

    import bitseek

    base, cfg = run
    ck = base / "run" / "checkpoints" / "epoch-0001"
    assert main(["eval", "--config", str(cfg), "--checkpoint", str(ck), "--out", str(base / "e1")]) == 0
    assert main(["eval", "--config", str(cfg), "--out", str(base / "final")]) == 0
    s1 = json.loads((base / "e1" / "metrics.json").read_text())["scored"]
    sf = json.loads((base / "final" / "metrics.json").read_text())["scored"]
    assert s1["path"] == str(ck.resolve()) and s1["epoch"] == 1
    assert s1["weights_sha256"] == sha256_file(ck / "model.safetensors")
    assert sf["path"] == str((base / "run" / "model").resolve()) and sf["epoch"] == 2
    assert sf["bitseek_version"] == bitseek.__version__ and sf["torch_version"] == torch.__version__
    assert s1["weights_sha256"] != sf["weights_sha256"]


# --------------------------------------------------------------------------- item 2: refused re-runs


def test_rerun_with_changed_settings_is_refused_and_leaves_the_folder_identical(run, capsys):
    base, cfg = run
    before = folder_digest(base / "run")
    rc = main(["train", "--config", str(cfg), "model.bits=32", "optim.lr=0.01"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "model.bits: 16 -> 32" in err and "optim.lr: 0.001 -> 0.01" in err and "--new-run" in err
    assert folder_digest(base / "run") == before


def test_refused_resume_on_a_shape_mismatch_leaves_the_folder_identical(run, capsys):
    """config.yaml gone (older run): the checkpoint itself refuses the 32-bit model, still writing nothing."""
    base, cfg = run
    (base / "run" / "config.yaml").unlink()
    before = folder_digest(base / "run")
    assert main(["train", "--config", str(cfg), "model.bits=32", "train.epochs=3"]) == 2
    assert "weights do not fit" in capsys.readouterr().err
    assert folder_digest(base / "run") == before


def test_new_run_goes_to_a_fresh_folder(run, capsys):
    base, cfg = run
    before = folder_digest(base / "run")
    assert main(["train", "--config", str(cfg), "model.bits=32", "train.epochs=1", "--new-run"]) == 0
    assert "training into" in capsys.readouterr().err
    assert folder_digest(base / "run") == before
    fresh = base / "run-2"
    assert "bits: 32" in (fresh / "config.yaml").read_text() and (fresh / "DONE").exists()


def test_resume_safe_settings_may_change(run, capsys):
    base, cfg = run
    assert main(["train", "--config", str(cfg), "train.epochs=3", "train.log_every=1", "eval.ks=[5]"]) == 0
    assert json.loads((base / "run" / "DONE").read_text())["epochs"] == 3


# --------------------------------------------------------------------------- item 3: checksums


def test_flipped_byte_in_model_weights_fails_eval(run, capsys):
    base, cfg = run
    _flip_tensor_byte(base / "run" / "model" / "model.safetensors")
    rc = main(["eval", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and "checksum mismatch" in err and "model.safetensors" in err


@pytest.mark.parametrize("which", ["model.safetensors", "trainer.safetensors"])
def test_flipped_byte_in_last_checkpoint_resumes_from_the_previous(run, capsys, which):
    base, cfg = run
    _flip_tensor_byte(base / "run" / "checkpoints" / "epoch-0002" / which)
    assert main(["train", "--config", str(cfg), "train.epochs=3"]) == 0
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "epoch-0001" in err


# --------------------------------------------------------------------------- item 12: recovery, pruning


def test_missing_last_json_resumes_from_newest_valid_and_prunes(run, capsys):
    base, cfg = run
    ck = base / "run" / "checkpoints"
    (ck / "last.json").unlink()
    assert main(["train", "--config", str(cfg), "train.epochs=3"]) == 0
    err = capsys.readouterr().err
    assert "last.json is missing" in err and "epoch-0002" in err
    assert sorted(p.name for p in ck.iterdir() if p.is_dir()) == ["epoch-0002", "epoch-0003"]
    log = [json.loads(x) for x in (base / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log if e["event"] == "epoch"][-1] == 2  # only epoch index 2 was trained


def test_pruning_drops_checkpoints_of_an_abandoned_history(run, capsys):
    """Epoch 2 is corrupt, so the run resumes at 1; the new epoch 2 replaces it and nothing stale stays."""
    base, cfg = run
    ck = base / "run" / "checkpoints"
    stale = ck / "epoch-0010"  # a leftover newer than anything this history reaches
    (ck / "epoch-0002").rename(stale)
    (ck / "last.json").write_text(json.dumps({"name": "epoch-0001", "epoch": 1}))
    assert main(["train", "--config", str(cfg), "train.epochs=2"]) == 0
    assert sorted(p.name for p in ck.iterdir() if p.is_dir()) == ["epoch-0001", "epoch-0002"]


# --------------------------------------------------------------------------- item 13: kill -9 leftovers


def test_sigkill_during_a_save_leaves_no_temporary_for_good(tmp_path):
    """A real process killed with SIGKILL mid-write; the next save of the same file sweeps its temporary."""
    target = tmp_path / "big.bin"
    code = ("import sys, time\nfrom bitseek.atomic import atomic_open\n"
            f"with atomic_open({str(target)!r}) as fh:\n"
            "    fh.write(b'x' * 1_000_000); fh.flush(); print('writing', flush=True); time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert p.stdout.readline().strip() == b"writing"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    leftovers = list(tmp_path.glob(".big.bin.*.tmp"))
    assert len(leftovers) == 1 and not target.exists()
    from bitseek.atomic import atomic_write_bytes

    atomic_write_bytes(target, b"done")
    assert target.read_bytes() == b"done" and list(tmp_path.glob(".*.tmp")) == []


def test_live_writers_temporary_is_never_swept(tmp_path):
    from bitseek.atomic import atomic_open, sweep_stale_temporaries

    with atomic_open(tmp_path / "f.bin") as fh:
        fh.write(b"x")
        assert sweep_stale_temporaries(tmp_path) == []
        assert len(list(tmp_path.glob(".f.bin.*.tmp"))) == 1
    assert (tmp_path / "f.bin").read_bytes() == b"x"


def test_stale_checkpoint_temporaries_are_removed_when_the_run_is_opened(run, capsys):
    base, cfg = run
    ck = base / "run" / "checkpoints" / "epoch-0002"
    planted = ck / ".trainer.safetensors.deadhost-999999.abcd1234.tmp"
    planted.write_bytes(b"partial")
    old = ck / ".model.safetensors.k3j4h5g6.tmp"  # no owner recorded: stale once old enough
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    from bitseek.atomic import _host

    mine = ck / f".trainer.json.{_host()}-999999.abcd1234.tmp"  # this host, dead pid
    mine.write_bytes(b"partial")
    assert main(["train", "--config", str(cfg), "train.epochs=3"]) == 0
    assert not mine.exists() and not old.exists()
    assert planted.exists()  # another host's temporary may belong to a live writer: kept until it is old
