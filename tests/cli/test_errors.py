"""Every user mistake of the reliability audit (F1, F3, F4, F10) through the real CLI entry point.

Each case must end with exit code 2 and one ``bitseek <command>: error: …`` line naming the file or
flag, and no Python traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from bitseek.cli.main import main

T, D = 8, 16  # frames and feature size of the tiny dataset in conftest.py


def _codes(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {"q": np.sign(rng.standard_normal((6, 16))).astype(np.float32),
             "db": np.sign(rng.standard_normal((12, 16))).astype(np.float32),
             "ql": rng.integers(0, 3, 6), "dbl": rng.integers(0, 3, 12)}
    out = {}
    for k, v in files.items():
        out[k] = tmp_path / f"{k}.npy"
        np.save(out[k], v)
    return out


def assert_user_error(capsys, rc: int, *needles: str) -> str:
    cap = capsys.readouterr()
    assert rc == 2, cap.err
    assert "Traceback" not in cap.err, cap.err
    lines = [ln for ln in cap.err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and lines[0].startswith("bitseek "), cap.err
    for n in needles:
        assert n in cap.err, (n, cap.err)
    return cap.err


# --------------------------------------------------------------------------- F1: damaged .mat headers

MAT_DAMAGE = {
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("this is not a MATLAB file\n"),
    "header-truncated": lambda p: p.write_bytes(p.read_bytes()[:60]),
}


@pytest.mark.parametrize("damage", list(MAT_DAMAGE))
def test_damaged_mat_at_eval(run, capsys, damage):
    base, cfg = run
    MAT_DAMAGE[damage](base / "data" / "ql.mat")
    rc = main(["eval", "--config", str(cfg)])
    assert_user_error(capsys, rc, "ql.mat", "bitseek eval: error:")


@pytest.mark.parametrize("damage", list(MAT_DAMAGE))
def test_damaged_mat_in_eval_codes(tmp_path, capsys, damage):
    f = _codes(tmp_path)
    mat = tmp_path / "ql.mat"
    scipy.io.savemat(mat, {"labels": np.eye(3)[np.load(f["ql"])]})
    MAT_DAMAGE[damage](mat)
    rc = main(["eval-codes", "--ks", "5", "--query", str(f["q"]), "--db", str(f["db"]), "--query-labels", str(mat),
               "--db-labels", str(f["dbl"])])
    assert_user_error(capsys, rc, "ql.mat")


# --------------------------------------------------------------------------- F3: bad .npy inputs and paths


def _evil_object_array(path: Path, marker: Path) -> None:
    code = (f"import numpy as np, os\nclass E:\n    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\n"
            f"np.save({str(path)!r}, np.array([E(), E()], dtype=object), allow_pickle=True)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


NPY_DAMAGE = {
    "object-array": "holds Python objects",
    "1-D": "2-D (n, bits)",
    "empty": "truncated or not a .npy",
    "garbage": "not a valid .npy",
    "missing": "no such codes file",
}


@pytest.mark.parametrize("damage", list(NPY_DAMAGE))
def test_bad_npy_codes(tmp_path, capsys, damage):
    f = _codes(tmp_path)
    q = tmp_path / "bad.npy"
    marker = tmp_path / "pwned"
    if damage == "object-array":
        _evil_object_array(q, marker)
    elif damage == "1-D":
        np.save(q, np.ones(16, np.float32))
    elif damage == "empty":
        q.write_bytes(b"")
    elif damage == "garbage":
        q.write_bytes(b"\x93NUMPY\x09\x00garbage garbage")
    rc = main(["eval-codes", "--ks", "5", "--query", str(q), "--db", str(f["db"]), "--query-labels", str(f["ql"]),
               "--db-labels", str(f["dbl"])])
    assert_user_error(capsys, rc, "bad.npy", NPY_DAMAGE[damage])
    assert not marker.exists()


def test_object_array_labels_are_refused(tmp_path, capsys):
    f = _codes(tmp_path)
    marker = tmp_path / "pwned"
    _evil_object_array(tmp_path / "evil_labels.npy", marker)
    rc = main(["eval-codes", "--ks", "5", "--query", str(f["q"]), "--db", str(f["db"]),
               "--query-labels", str(tmp_path / "evil_labels.npy"), "--db-labels", str(f["dbl"])])
    assert_user_error(capsys, rc, "evil_labels.npy", "holds Python objects")
    assert not marker.exists()


def test_ks_not_numbers_is_a_usage_error(tmp_path, capsys):
    f = _codes(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["eval-codes", "--ks", "5,abc", "--query", str(f["q"]), "--query-labels", str(f["ql"])])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--ks" in err and "5,abc" in err and "Traceback" not in err


def test_out_is_a_directory_refused_before_work(tmp_path, capsys):
    f = _codes(tmp_path)
    (tmp_path / "ec").mkdir()
    rc = main(["eval-codes", "--ks", "5", "--query", str(f["q"]), "--db", str(f["db"]), "--query-labels",
               str(f["ql"]), "--db-labels", str(f["dbl"]), "--out", str(tmp_path / "ec")])
    err = assert_user_error(capsys, rc, "--out", "ec:")
    assert "mAP" not in capsys.readouterr().out and err


def test_index_paths(tmp_path, capsys):
    from bitseek.codes import CodeSet

    CodeSet.from_signed(np.sign(np.random.default_rng(0).standard_normal((20, 16)))).save(tmp_path / "db.codes")
    (tmp_path / "dir.codes").mkdir()
    (tmp_path / "outdir").mkdir()
    assert_user_error(capsys, main(["index", "--codes", str(tmp_path / "dir.codes"), "--out", str(tmp_path / "x")]),
                      "dir.codes")
    assert_user_error(capsys, main(["index", "--codes", str(tmp_path / "db.codes"), "--out",
                                    str(tmp_path / "outdir")]), "outdir", "is a directory")
    assert_user_error(capsys, main(["index", "--codes", str(tmp_path / "db.codes"), "--out",
                                    "/proc/nope/x.index"]), "/proc/nope")


# --------------------------------------------------------------------------- F4: truncated .pth


def test_truncated_pth_in_convert(run, capsys):
    base, cfg = run
    pth = base / "official.pth"
    torch.save({"model_state_dict": {"binary.weight": torch.zeros(16, 32)}}, pth)
    data = pth.read_bytes()
    pth.write_bytes(data[: len(data) // 2])
    rc = main(["convert", "--config", str(cfg), "--src", str(pth), "--out", str(base / "conv")])
    assert_user_error(capsys, rc, "official.pth", "cannot read as a weights-only torch checkpoint")


# --------------------------------------------------------------------------- F10: data and run-folder damage


def test_hdf5_with_zero_videos(run, capsys):
    base, cfg = run
    with h5py.File(base / "data" / "train.h5", "w") as f:
        f.create_dataset("feats", shape=(0, T, D), dtype=np.float32)
    rc = main(["train", "--config", str(cfg), f"train.out_dir={base / 'fresh'}"])
    assert_user_error(capsys, rc, "train.h5", "0 videos")


def test_zero_video_query_file_at_eval(run, capsys):
    base, cfg = run
    with h5py.File(base / "data" / "q.h5", "w") as f:
        f.create_dataset("feats", shape=(0, T, D), dtype=np.float32)
    assert_user_error(capsys, main(["eval", "--config", str(cfg)]), "q.h5", "0 videos")


TRAINER_DAMAGE = {
    "no-optimizer": lambda s: s.pop("optimizer"),
    "short-numpy-rng": lambda s: s["rng"]["numpy"].__setitem__(1, s["rng"]["numpy"][1][:10]),
    "string-epoch": lambda s: s.__setitem__("epoch", "thirty"),
}


@pytest.mark.parametrize("damage", list(TRAINER_DAMAGE))
def test_malformed_trainer_json_falls_back_to_previous(run, capsys, damage):
    base, cfg = run
    tj = base / "run" / "checkpoints" / "epoch-0002" / "trainer.json"
    state = json.loads(tj.read_text())
    TRAINER_DAMAGE[damage](state)
    tj.write_text(json.dumps(state))
    rc = main(["train", "--config", str(cfg), "train.epochs=3"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    assert "epoch-0001" in err and "trainer.json: corrupt" in err  # said so
    events = [json.loads(x) for x in (base / "run" / "log.jsonl").read_text().splitlines()]
    resume = [e for e in events if e["event"] == "resume"][-1]
    assert resume["epoch"] == 1 and resume["skipped"]


@pytest.mark.parametrize("damage", list(TRAINER_DAMAGE))
def test_malformed_trainer_json_without_fallback_is_clear(run, capsys, damage):
    base, cfg = run
    shutil.rmtree(base / "run" / "checkpoints" / "epoch-0001")
    tj = base / "run" / "checkpoints" / "epoch-0002" / "trainer.json"
    state = json.loads(tj.read_text())
    TRAINER_DAMAGE[damage](state)
    tj.write_text(json.dumps(state))
    assert_user_error(capsys, main(["train", "--config", str(cfg), "train.epochs=3"]),
                      "trainer.json: corrupt", "no usable checkpoint")


@pytest.mark.parametrize("pointer", ["[]", "{broken", '{"name": "epoch-0099"}'])
def test_malformed_last_json_uses_newest_valid(run, capsys, pointer):
    base, cfg = run
    (base / "run" / "checkpoints" / "last.json").write_text(pointer)
    rc = main(["train", "--config", str(cfg), "train.epochs=3"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err and "epoch-0002" in err and "last.json" in err
    assert json.loads((base / "run" / "checkpoints" / "last.json").read_text())["epoch"] == 3


# --------------------------------------------------------------------------- YAML


def test_non_utf8_yaml(tmp_path, capsys):
    p = tmp_path / "binary.yaml"
    p.write_bytes(b"name: x\nmodel: {name: conmh}\n\xff\xfe\x00bad")
    assert_user_error(capsys, main(["train", "--config", str(p)]), "binary.yaml", "UTF-8")


def test_base_cycle(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\nname: b\n")
    assert_user_error(capsys, main(["train", "--config", str(tmp_path / "a.yaml")]), "a.yaml", "cycle")


def test_yaml_alias_bomb(tmp_path, capsys):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    p = tmp_path / "laughs.yaml"
    p.write_text("\n".join(lines) + "\nname: *a9\n")
    assert_user_error(capsys, main(["train", "--config", str(p)]), "laughs.yaml", "aliases expand")


# --------------------------------------------------------------------------- tracebacks only with --debug


def test_debug_shows_the_traceback(tmp_path, capsys):
    args = ["eval-codes", "--query", str(tmp_path / "missing.npy"), "--query-labels", str(tmp_path / "x.npy")]
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "bitseek eval-codes: error:" in err.splitlines()[-1]
    assert main([*args, "--debug"]) == 2  # after the command too
    assert "Traceback" in capsys.readouterr().err


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.Popen([sys.executable, "-m", "bitseek", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def test_output_piped_into_head_is_quiet():
    """The reader of stdout goes away before bitseek writes (``bitseek list models | head -0``)."""
    p = _cli("list", "models")
    p.stdout.close()  # nobody reads: every write hits EPIPE
    err = p.stderr.read().decode()
    rc = p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert rc == 141
