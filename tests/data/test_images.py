"""Image datasets: transforms, list files, CIFAR batches and splits, class folders, damaged files."""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bitseek.data.base import RetrievalData, load_data
from bitseek.data.cifar import PROTOCOLS, cifar_split, read_cifar_batch, safe_unpickle
from bitseek.data.image_dataset import ImageFiles
from bitseek.data.image_folder import allocate, folder_split
from bitseek.data.image_io import CorruptImageError, SkippedImageWarning, check_image, load_image
from bitseek.data.image_lists import read_image_list
from bitseek.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, resized_size
from bitseek.errors import ConfigError, FileFormatError, InputError
from bitseek.registry import DATASETS

torch.set_num_threads(1)


# --------------------------------------------------------------------------- file makers


def _rgb(seed: int, w: int = 48, h: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_png(path: Path, seed: int = 0, w: int = 48, h: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(seed, w, h)).save(path, format="PNG")
    return path


def jpeg_bytes(seed: int = 0, w: int = 48, h: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(seed, w, h)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_truncated_jpeg(path: Path) -> Path:
    data = jpeg_bytes(7)
    path.write_bytes(data[: len(data) // 2])
    return path


def bomb_png_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~70-byte PNG whose header claims width x height pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


# --------------------------------------------------------------------------- transforms


def test_resized_size_follows_torchvision_rule():
    assert resized_size(500, 375, 256) == (341, 256)  # int(256 * 500 / 375) = 341
    assert resized_size(375, 500, 256) == (256, 341)
    assert resized_size(32, 32, 224) == (224, 224)


def test_test_transform_centre_crop_and_normalisation():
    img = Image.new("RGB", (60, 40), (255, 0, 128))
    out = ImageTransform(resize=36, crop=32)(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    want = (torch.tensor([255, 0, 128]) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, 16, 16], want.float())


def test_centre_crop_picks_the_middle_window():
    arr = np.zeros((40, 50, 3), np.uint8)
    arr[4:36, 9:41] = 200  # the centred 32x32 window of a 40x50 image (offsets 4 and 9)
    out = ImageTransform(resize=0, crop=32)(Image.fromarray(arr))
    assert torch.all(out[0] == out[0, 0, 0])  # uniform: exactly the bright window


def test_train_transform_reproducible_with_generator_and_matches_slicing():
    img = Image.fromarray(_rgb(3, 50, 44))
    tf = ImageTransform(resize=40, crop=32, train=True)
    a = tf(img, torch.Generator().manual_seed(5))
    b = tf(img, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    # redo the draws by hand: flip, then crop row, then crop column (torchvision's order)
    g = torch.Generator().manual_seed(5)
    flip = bool(torch.rand(1, generator=g) < 0.5)
    resized = np.asarray(img.resize(resized_size(50, 44, 40), Image.Resampling.BILINEAR))
    if flip:
        resized = resized[:, ::-1]
    h, w = resized.shape[:2]
    top = int(torch.randint(0, h - 32 + 1, (1,), generator=g))
    left = int(torch.randint(0, w - 32 + 1, (1,), generator=g))
    ref = ImageTransform(resize=0, crop=0)(Image.fromarray(np.ascontiguousarray(resized[top : top + 32, left : left + 32])))
    torch.testing.assert_close(a, ref)


def test_transform_rejects_bad_sizes():
    with pytest.raises(ConfigError):
        ImageTransform(resize=20, crop=32)


# --------------------------------------------------------------------------- safe image loading


def test_load_image_reports_each_kind_of_damage(tmp_path):
    good = write_png(tmp_path / "good.png")
    assert load_image(good).size == (48, 40)
    (tmp_path / "notes.jpg").write_bytes(b"this is not an image at all")
    write_truncated_jpeg(tmp_path / "half.jpg")
    (tmp_path / "bomb.png").write_bytes(bomb_png_bytes())
    cases = {
        "notes.jpg": "not an image",
        "half.jpg": "truncated",
        "bomb.png": "decompression bomb",
        "missing.png": "missing file",
    }
    for name, reason in cases.items():
        with pytest.raises(CorruptImageError, match=reason) as e:
            load_image(tmp_path / name)
        assert e.value.path.endswith(name)
    check_image(tmp_path / "half.jpg", "header")  # truncation is invisible in the header...
    with pytest.raises(CorruptImageError, match="truncated"):
        check_image(tmp_path / "half.jpg", "decode")  # ...and caught by a full decode


def test_max_pixels_and_pillow_bomb_warning_become_errors(tmp_path, monkeypatch):
    p = write_png(tmp_path / "a.png", w=40, h=40)
    with pytest.raises(CorruptImageError, match="max_pixels=1000"):
        load_image(p, max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow only *warns* between 1x and 2x this
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # make sure the error does not depend on the caller's filters
        with pytest.raises(CorruptImageError, match="decompression bomb"):
            load_image(p, max_pixels=10**9)


# --------------------------------------------------------------------------- list files


def _write_list(path: Path, rows: list[tuple[str, list[int]]]) -> Path:
    path.write_text("".join(f"{p} {' '.join(map(str, lab))}\n" for p, lab in rows))
    return path


def test_read_image_list_parses_and_checks(tmp_path):
    lst = _write_list(tmp_path / "a.txt", [("img/x.jpg", [0, 1, 1]), ("img/y.jpg", [1, 0, 0])])
    paths, labels = read_image_list(lst)
    assert paths == ["img/x.jpg", "img/y.jpg"]
    assert labels.dtype == np.uint8 and labels.tolist() == [[0, 1, 1], [1, 0, 0]]
    with pytest.raises(FileFormatError, match="expected 4"):
        read_image_list(lst, num_classes=4)

    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg 0 1 0\n\nb.jpg 0 1\n")
    with pytest.raises(FileFormatError, match=r"bad\.txt, line 3: label vector has 2 entries, expected 3"):
        read_image_list(bad)
    bad.write_text("a.jpg 0 2 0\n")
    with pytest.raises(FileFormatError, match="line 1: label 2 at position 2 is not 0 or 1"):
        read_image_list(bad)
    bad.write_text("a.jpg 0 x 0\n")
    with pytest.raises(FileFormatError, match="line 1: label 'x' is not an integer"):
        read_image_list(bad)
    bad.write_text("a.jpg\n")
    with pytest.raises(FileFormatError, match="has no label vector"):
        read_image_list(bad)
    with pytest.raises(FileFormatError, match="list file not found"):
        read_image_list(tmp_path / "nope.txt")
    _write_list(bad, [("/old/home/data/img/x.jpg", [1, 0])])
    assert read_image_list(bad, strip_prefix="/old/home/data/")[0] == ["img/x.jpg"]


def make_list_dataset(root: Path, n_train: int = 6, n_query: int = 3, n_db: int = 8, classes: int = 3) -> dict:
    """Tiny DeepHash-layout dataset; returns {split: [(rel path, label row)]}."""
    rows: dict[str, list[tuple[str, list[int]]]] = {}
    k = 0
    for split, n, fname in (("train", n_train, "train.txt"), ("query", n_query, "test.txt"),
                            ("database", n_db, "database.txt")):
        rows[split] = []
        for i in range(n):
            rel = f"images/{split}_{i}.png"
            write_png(root / rel, seed=k)
            lab = [int(c == i % classes) for c in range(classes)]
            if i % 4 == 3:
                lab[(i + 1) % classes] = 1  # some multi-label rows
            rows[split].append((rel, lab))
            k += 1
        _write_list(root / fname, rows[split])
    return rows


def _list_cfg(folder: Path, **kw):
    base = dict(root=str(folder), image_size=32, resize=36, num_classes=0)
    return DATASETS.config("nuswide", **{**base, **kw})


def test_list_dataset_end_to_end(tmp_path):
    rows = make_list_dataset(tmp_path)
    data = load_data(_list_cfg(tmp_path))
    assert isinstance(data, RetrievalData)
    assert data.info["sizes"] == {"train": 6, "query": 3, "database": 8}
    assert data.info["topk"] == 5000 and data.info["num_classes"] == 3
    np.testing.assert_array_equal(data.query_labels, np.array([r[1] for r in rows["query"]], np.float32))
    np.testing.assert_array_equal(data.db_labels, np.array([r[1] for r in rows["database"]], np.float32))
    item = data.searched[4]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.float32 and item["index"] == 4
    torch.testing.assert_close(item["label"], torch.tensor(rows["database"][4][1], dtype=torch.float32))
    # query/database use the deterministic test transform
    torch.testing.assert_close(data.query[1]["image"], data.query[1]["image"])
    batch = next(iter(torch.utils.data.DataLoader(data.train, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].shape == (4, 3)
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_list_dataset_paths_are_relative_to_image_root_like_deephash(tmp_path):
    make_list_dataset(tmp_path / "imgs")
    lists = tmp_path / "lists"
    lists.mkdir()
    for f in ("train.txt", "test.txt", "database.txt"):
        text = (tmp_path / "imgs" / f).read_text().replace("images/", "/images/")  # leading slash
        (lists / f).write_text(text)
    data = load_data(_list_cfg(lists, image_root=str(tmp_path / "imgs")))
    assert data.train.paths[0] == str(tmp_path / "imgs" / "images" / "train_0.png")


def test_list_files_must_agree_on_the_number_of_classes(tmp_path):
    make_list_dataset(tmp_path)
    _write_list(tmp_path / "test.txt", [("images/query_0.png", [1, 0, 0, 0])])
    with pytest.raises(FileFormatError, match=r"test\.txt, line 1: label vector has 4 entries, expected 3"):
        load_data(_list_cfg(tmp_path))
    with pytest.raises(FileFormatError, match="expected 100"):
        load_data(DATASETS.config("imagenet100", root=str(tmp_path), image_size=32, resize=36))


def test_image_config_validation(tmp_path):
    make_list_dataset(tmp_path)
    for kw, msg in (
        (dict(resize=30), "resize"),
        (dict(on_corrupt="ignore"), "on_corrupt"),
        (dict(check="full"), "check"),
        (dict(max_pixels=10**12), "MAX_IMAGE_PIXELS"),
        (dict(root=""), "root"),
    ):
        with pytest.raises(ConfigError, match=msg):
            load_data(_list_cfg(tmp_path, **kw))
    with pytest.raises(ConfigError, match="did you mean 'image_size'"):
        DATASETS.config("coco", root=str(tmp_path), image_sise=32)


# --------------------------------------------------------------------------- damaged files in a dataset


def _damage(root: Path) -> None:
    (root / "images" / "train_1.png").write_bytes(b"<html>not found</html>")  # not an image
    (root / "images" / "train_2.png").write_bytes(bomb_png_bytes())  # decompression bomb
    (root / "images" / "database_5.png").unlink()  # missing
    write_truncated_jpeg(root / "images" / "train_4.png")  # passes the header check
    write_truncated_jpeg(root / "images" / "query_2.png")


def test_on_corrupt_error_names_the_files(tmp_path):
    make_list_dataset(tmp_path)
    _damage(tmp_path)
    with pytest.raises(FileFormatError) as e:
        load_data(_list_cfg(tmp_path))
    msg = str(e.value)
    assert "2 of 6 images are unusable" in msg and "train_1.png" in msg and "train_2.png" in msg
    (tmp_path / "images" / "train_1.png").unlink()
    write_png(tmp_path / "images" / "train_1.png")
    write_png(tmp_path / "images" / "train_2.png")
    write_png(tmp_path / "images" / "database_5.png")
    data = load_data(_list_cfg(tmp_path))  # only the truncated files are left: found on load
    with pytest.raises(CorruptImageError, match=r"train_4\.png: corrupt or truncated"):
        data.train[4]


def test_on_corrupt_skip_keeps_labels_aligned(tmp_path):
    rows = make_list_dataset(tmp_path)
    _damage(tmp_path)
    with pytest.warns(SkippedImageWarning) as rec:
        data = load_data(_list_cfg(tmp_path, on_corrupt="skip"))
    assert any("skipped 2 of 6" in str(w.message) for w in rec)
    assert data.info["sizes"] == {"train": 4, "query": 3, "database": 7}
    assert {Path(p).name for p, _ in data.info["skipped"]["train"]} == {"train_1.png", "train_2.png"}
    want_db = [lab for rel, lab in rows["database"] if rel != "images/database_5.png"]
    np.testing.assert_array_equal(data.db_labels, np.array(want_db, np.float32))
    assert [Path(p).name for p in data.searched.paths][5] == "database_6.png"
    # every train path still carries its own label row
    lab_of = {str(tmp_path / rel): lab for rel, lab in rows["train"]}
    for p, lab in zip(data.train.paths, data.train.labels):
        assert lab.tolist() == lab_of[p]
    # a truncated training image met on load is replaced by the next item, with that item's label
    pos = [Path(p).name for p in data.train.paths].index("train_4.png")
    with pytest.warns(SkippedImageWarning, match="train_4.png"):
        item = data.train[pos]
    nxt = (pos + 1) % len(data.train)
    assert item["index"] == nxt
    torch.testing.assert_close(item["label"], torch.from_numpy(data.train.labels[nxt]))
    assert "train_4.png" in " ".join(data.train.skipped)
    # a query cannot be dropped after its label row was fixed: clear error with the remedy
    with pytest.raises(CorruptImageError, match="check: decode"):
        data.query[2]
    # check: decode removes it up front
    with pytest.warns(SkippedImageWarning):
        data = load_data(_list_cfg(tmp_path, on_corrupt="skip", check="decode"))
    assert data.info["sizes"] == {"train": 3, "query": 2, "database": 7}
    assert all(data.query[i]["image"].shape == (3, 32, 32) for i in range(2))


def test_set_epoch_gives_order_independent_augmentation(tmp_path):
    make_list_dataset(tmp_path)
    data = load_data(_list_cfg(tmp_path))
    data.train.set_epoch(0)
    a = [data.train[i]["image"] for i in range(6)]
    torch.manual_seed(123)  # the global RNG no longer matters
    b = [data.train[i]["image"] for i in reversed(range(6))][::-1]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    data.train.set_epoch(1)
    c = [data.train[i]["image"] for i in range(6)]
    assert any(not torch.equal(x, y) for x, y in zip(a, c))


def test_image_files_rejects_mismatched_labels(tmp_path):
    with pytest.raises(InputError, match="2 paths but 1 label rows"):
        ImageFiles(["a", "b"], np.zeros((1, 3)), ImageTransform(0, 0), "x", max_pixels=100)


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_batch(labels: list[int], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": labels,
        b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }


def _py2_style(obj: dict) -> bytes:
    """Protocol-2 pickle naming numpy.core as the real (Python 2 era) CIFAR files do."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def make_cifar(root: Path, per_class_train: int = 10, per_class_test: int = 2) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    train_labels = [c for c in range(10) for _ in range(per_class_train)]
    np.random.default_rng(0).shuffle(train_labels)
    chunks = np.array_split(np.array(train_labels), 5)
    for i, chunk in enumerate(chunks, start=1):
        (d / f"data_batch_{i}").write_bytes(_py2_style(_cifar_batch(chunk.tolist(), i)))
    test_labels = [c for c in range(10) for _ in range(per_class_test)]
    (d / "test_batch").write_bytes(pickle.dumps(_cifar_batch(test_labels, 9), protocol=2))
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]
    (d / "batches.meta").write_bytes(_py2_style({b"label_names": names, b"num_vis": 3072}))
    return d


def test_cifar_batch_layout_and_restricted_unpickler(tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    batch = _cifar_batch([3, 5], 0)
    batch[b"data"][0, :1024] = 10
    batch[b"data"][0, 1024:2048] = 20
    batch[b"data"][0, 2048:] = 30
    (d / "data_batch_1").write_bytes(_py2_style(batch))
    images, labels = read_cifar_batch(d / "data_batch_1")
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert images[0, 5, 7].tolist() == [10, 20, 30] and labels.tolist() == [3, 5]

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    (d / "evil").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(FileFormatError, match=r"evil: refused or invalid pickle \(global (posix|os)\.system is not allowed"):
        safe_unpickle(d / "evil")
    bad = _cifar_batch([1, 2], 0)
    bad[b"data"] = bad[b"data"][:, :100]
    (d / "short").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(FileFormatError, match=r"short: 'data' must be a uint8 \(n, 3072\)"):
        read_cifar_batch(d / "short")
    (d / "cut").write_bytes(_py2_style(batch)[:200])
    with pytest.raises(FileFormatError, match="cut"):
        read_cifar_batch(d / "cut")


def test_cifar_protocol_sizes_match_deephash():
    labels = np.repeat(np.arange(10), 6000)  # the pooled 60,000 CIFAR-10 labels (by count)
    expect = {"cifar10": (1000, 5000, 54000), "cifar10-1": (1000, 5000, 59000), "cifar10-2": (10000, 50000, 50000)}
    for name, (nq, nt, nd) in expect.items():
        q, t, d = cifar_split(labels, name, seed=0)
        assert (len(q), len(t), len(d)) == (nq, nt, nd), name
        assert not set(q) & set(t) and not set(q) & set(d)
        assert np.bincount(labels[q]).tolist() == [nq // 10] * 10
        if name == "cifar10":
            assert not set(t) & set(d) and len(set(q) | set(t) | set(d)) == 60000
        else:
            assert set(t) <= set(d)
    assert PROTOCOLS["cifar10-2"][:2] == (1000, 5000)


def test_cifar_split_equals_deephash_after_np_random_seed():
    labels = np.random.default_rng(1).integers(0, 10, 3000)
    q, t, d = cifar_split(labels, "cifar10-1", seed=7, query_per_class=5, train_per_class=20)
    # DeepHash-pytorch cifar_dataset with the global RNG seeded by np.random.seed(7)
    np.random.seed(7)
    rq, rt, rd = [], [], []
    for c in range(10):
        idx = np.where(labels == c)[0]
        idx = idx[np.random.permutation(idx.shape[0])]
        rq.append(idx[:5]), rt.append(idx[5:25]), rd.append(idx[25:])
    rt_all = np.concatenate(rt)
    np.testing.assert_array_equal(q, np.concatenate(rq))
    np.testing.assert_array_equal(t, rt_all)
    np.testing.assert_array_equal(d, np.concatenate((rt_all, np.concatenate(rd))))


def test_cifar_dataset_splits_and_transform(tmp_path):
    make_cifar(tmp_path)
    cfg = DATASETS.config("cifar10", root=str(tmp_path), image_size=40, resize=40,
                          query_per_class=2, train_per_class=5)
    data = load_data(cfg)
    assert data.info["sizes"] == {"train": 50, "query": 20, "database": 50}
    assert data.info["class_names"][0] == "airplane" and data.info["topk"] == 0
    item = data.train[3]
    assert item["image"].shape == (3, 40, 40)  # DeepHash: Resize(crop) only, no crop or flip
    torch.testing.assert_close(item["image"], data.train[3]["image"])
    assert item["label"].sum() == 1
    again = load_data(cfg)
    np.testing.assert_array_equal(again.train.images, data.train.images)  # same seed, same split
    other = load_data(DATASETS.config("cifar10", root=str(tmp_path), image_size=40, resize=40, seed=1,
                                      query_per_class=2, train_per_class=5))
    assert not np.array_equal(other.train.images, data.train.images)
    d2 = load_data(DATASETS.config("cifar10-2", root=str(tmp_path / "cifar-10-batches-py"), image_size=32,
                                   resize=32, query_per_class=2, train_per_class=8))
    assert d2.info["sizes"] == {"train": 80, "query": 20, "database": 80}
    np.testing.assert_array_equal(d2.train.images, d2.database.images)
    official = load_data(DATASETS.config("cifar10-2", root=str(tmp_path), image_size=32, resize=32,
                                         query_from_test_batch=True))
    assert official.info["sizes"] == {"train": 100, "query": 20, "database": 100}
    aug = load_data(DATASETS.config("cifar10", root=str(tmp_path), image_size=32, resize=36, augment=True,
                                    query_per_class=2, train_per_class=5))
    assert aug.train[0]["image"].shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="only meaningful for cifar10-2"):
        load_data(DATASETS.config("cifar10", root=str(tmp_path), query_from_test_batch=True))
    with pytest.raises(FileFormatError, match="needs 600"):
        load_data(DATASETS.config("cifar10", root=str(tmp_path)))  # the real protocol needs 600/class
    with pytest.raises(FileFormatError, match="no CIFAR-10 python batches"):
        load_data(DATASETS.config("cifar10", root=str(tmp_path / "nowhere")))


# --------------------------------------------------------------------------- image folder


def test_allocate_is_exact_and_proportional():
    assert allocate(10, np.array([50, 30, 20])).tolist() == [5, 3, 2]
    out = allocate(7, np.array([5, 5, 5]))
    assert out.sum() == 7 and out.max() - out.min() <= 1
    assert allocate(3, np.array([0, 2, 1])).tolist() == [0, 2, 1]


def test_folder_split_counts_and_disjointness():
    ids = np.repeat(np.arange(4), [10, 20, 30, 40])
    q, t, d = folder_split(ids, query=0.1, train=20, database_includes_train=False, seed=3)
    assert len(q) == 10 and len(t) == 20 and len(d) == 70
    assert np.bincount(ids[q]).tolist() == [1, 2, 3, 4]
    assert not (set(q) & set(t)) and not (set(t) & set(d)) and len(set(q) | set(t) | set(d)) == 100
    q2, t2, d2 = folder_split(ids, query=0.1, train=20, database_includes_train=True, seed=3)
    np.testing.assert_array_equal(q, q2)
    assert set(t2) <= set(d2) and len(d2) == 90
    q3, _, _ = folder_split(ids, query=0.1, train=20, database_includes_train=True, seed=4)
    assert not np.array_equal(q, q3)
    with pytest.raises(ConfigError, match="asks for 200"):
        folder_split(ids, query=200, train=0.5, database_includes_train=True, seed=0)


def test_image_folder_dataset(tmp_path):
    k = 0
    for cls, n in (("cat", 6), ("dog", 4)):
        for i in range(n):
            sub = "nested/" if i == 0 else ""
            write_png(tmp_path / cls / f"{sub}{i}.png", seed=k)
            k += 1
    (tmp_path / "cat" / "readme.txt").write_text("not an image, ignored by extension")
    (tmp_path / ".cache").mkdir()
    data = load_data(DATASETS.config("image-folder", root=str(tmp_path), image_size=32, resize=36,
                                     query=2, train=0.5))
    assert data.info["class_names"] == ["cat", "dog"]
    assert data.info["sizes"] == {"train": 4, "query": 2, "database": 8}
    assert data.query_labels.sum(0).tolist() == [1.0, 1.0]
    for ds in (data.train, data.query, data.searched):
        for p, lab in zip(ds.paths, ds.labels):
            assert lab[["cat", "dog"].index(Path(p).relative_to(tmp_path).parts[0])] == 1
    assert data.train[0]["image"].shape == (3, 32, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match="empty: class folder holds no images"):
        load_data(DATASETS.config("image-folder", root=str(tmp_path), image_size=32, resize=36))
