"""MATLAB label files: v5 via scipy, v7.3 (HDF5, column-major) via h5py, sparse, and bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse

from bitseek.data.matlabels import load_label_files, load_label_matrix, mat_version
from bitseek.errors import FileFormatError


def labels(n: int = 7, c: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = (rng.random((n, c)) < 0.3).astype(np.float64)
    lab[np.arange(n), rng.integers(0, c, n)] = 1.0
    return lab


def write_v73(path: Path, variables: dict[str, np.ndarray], cls: str = "double") -> Path:
    """Write a MAT v7.3 file the way MATLAB does: 512-byte userblock, column-major (transposed) data."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            ds = f.create_dataset(name, data=np.asarray(arr).T)
            ds.attrs["MATLAB_class"] = np.bytes_(cls)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path


def test_v5_dense_and_sparse(tmp_path):
    lab = labels()
    p = tmp_path / "l.mat"
    scipy.io.savemat(p, {"labels": lab, "other": np.arange(3)})
    assert mat_version(p) == "v5"
    got = load_label_matrix(p, "labels")
    assert got.dtype == np.float32 and got.shape == (7, 5)
    np.testing.assert_array_equal(got, lab)
    ps = tmp_path / "s.mat"
    scipy.io.savemat(ps, {"re_label": scipy.sparse.csc_matrix(lab)})
    np.testing.assert_array_equal(load_label_matrix(ps, "re_label"), lab)


def test_v73_is_transposed_back(tmp_path):
    lab = labels(n=9, c=4)
    p = write_v73(tmp_path / "q_label.mat", {"q_label": lab})
    assert mat_version(p) == "v73"
    with h5py.File(p, "r") as f:
        assert f["q_label"].shape == (4, 9)  # as MATLAB lays a 9x4 matrix out
    got = load_label_matrix(p, "q_label")
    assert got.shape == (9, 4)
    np.testing.assert_array_equal(got, lab)


def test_v73_logical_and_sparse(tmp_path):
    lab = labels(n=6, c=3)
    p = write_v73(tmp_path / "b.mat", {"labels": lab.astype(np.uint8)}, cls="logical")
    np.testing.assert_array_equal(load_label_matrix(p, "labels"), lab)
    csc = scipy.sparse.csc_matrix(lab)
    ps = tmp_path / "sp.mat"
    with h5py.File(ps, "w", userblock_size=512) as f:
        g = f.create_group("labels")
        g.attrs["MATLAB_class"] = np.bytes_("double")
        g.attrs["MATLAB_sparse"] = np.uint64(lab.shape[0])
        g.create_dataset("data", data=csc.data)
        g.create_dataset("ir", data=csc.indices.astype(np.uint64))
        g.create_dataset("jc", data=csc.indptr.astype(np.uint64))
    np.testing.assert_array_equal(load_label_matrix(ps, "labels"), lab)


def test_missing_variable_lists_what_is_there(tmp_path):
    p5 = tmp_path / "a.mat"
    scipy.io.savemat(p5, {"re_label": labels()})
    with pytest.raises(FileFormatError, match=r"a\.mat.*no variable 'labels' \(variables: re_label\)"):
        load_label_matrix(p5, "labels")
    p73 = write_v73(tmp_path / "b.mat", {"q_label": labels()})
    with pytest.raises(FileFormatError, match=r"b\.mat.*no variable 'labels' \(variables: q_label\)"):
        load_label_matrix(p73, "labels")


def test_bad_files(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        load_label_matrix(tmp_path / "none.mat", "labels")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x01\x02" * 300)
    with pytest.raises(FileFormatError, match="junk.mat"):
        load_label_matrix(junk, "labels")
    good = tmp_path / "good.mat"
    scipy.io.savemat(good, {"labels": labels(n=200, c=50)})
    cut = tmp_path / "cut.mat"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(FileFormatError, match="cut.mat"):
        load_label_matrix(cut, "labels")
    vec = tmp_path / "vec.mat"
    write_v73(vec, {"labels": np.arange(5.0)[None, None]})  # a 3-D array
    with pytest.raises(FileFormatError, match="2-D"):
        load_label_matrix(vec, "labels")
    text = tmp_path / "text.mat"
    scipy.io.savemat(text, {"labels": np.array(["a", "b"], dtype=object)})
    with pytest.raises(FileFormatError, match="not a numeric matrix"):
        load_label_matrix(text, "labels")


def test_shards_concatenate_and_must_agree_on_classes(tmp_path):
    a, b = labels(n=4, c=5, seed=1), labels(n=3, c=5, seed=2)
    pa, pb = tmp_path / "yfcc_test_labels_1.mat", tmp_path / "yfcc_test_labels_2.mat"
    scipy.io.savemat(pa, {"labels": a})
    write_v73(pb, {"labels": b})  # mixed versions are fine
    np.testing.assert_array_equal(load_label_files([pa, pb], "labels"), np.concatenate([a, b]))
    scipy.io.savemat(pb, {"labels": labels(n=3, c=6)})
    with pytest.raises(FileFormatError, match=r"yfcc_test_labels_1\.mat: 5, yfcc_test_labels_2\.mat: 6"):
        load_label_files([pa, pb], "labels")


def test_key_can_be_left_out(tmp_path):
    from bitseek.data.video_features import read_labels

    lab = labels()
    one = tmp_path / "one.mat"
    scipy.io.savemat(one, {"re_label": lab})
    np.testing.assert_array_equal(read_labels(one), lab)
    np.testing.assert_array_equal(load_label_matrix(write_v73(tmp_path / "v73.mat", {"q_label": lab})), lab)
    two = tmp_path / "two.mat"
    scipy.io.savemat(two, {"labels": lab, "names": np.arange(3)})
    np.testing.assert_array_equal(read_labels(two), lab)
    amb = tmp_path / "amb.mat"
    scipy.io.savemat(amb, {"a": lab, "b": lab})
    with pytest.raises(FileFormatError, match="say which one"):
        read_labels(amb)
