"""Ingest with the real decoders and extractor: what a re-run does with new, unchanged, duplicate,
moved, modified, vanished and unreadable files; the catalog and index always agree."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="video decoding needs PyAV (bitseek[collections])")

from bitseek.collection import Collection  # noqa: E402
from bitseek.encode.frames import FrameEncoder  # noqa: E402
from bitseek.errors import BitseekError  # noqa: E402
from bitseek.ingest.run import ingest  # noqa: E402
from bitseek.media.samples import packaged_image, packaged_video  # noqa: E402


@pytest.fixture(scope="module")
def encoder() -> FrameEncoder:
    return FrameEncoder(device="cpu")


def _consistent(root: Path) -> Collection:
    col = Collection.open(root)
    ready = col.catalog.ids("ready")
    assert col.catalog.count("pending") == 0
    assert np.array_equal(np.sort(np.asarray(col.index.ids)), ready)
    return col


def _photos(dst: Path, names: tuple[str, ...] = ("chelsea.png", "coffee.png", "astronaut.png")) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(packaged_image(n), dst / n)


def test_rerun_adds_only_new_content(tmp_path, encoder):
    src, root = tmp_path / "src", tmp_path / "col"
    _photos(src)
    shutil.copy(packaged_video("carphone_pristine.mp4"), src / "carphone.mp4")
    (src / "notes.txt").write_text("not media")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (src / "cut.mp4").write_bytes(packaged_video("bikes.mp4").read_bytes()[:4000])  # truncated video
    rep = ingest([str(src)], root, frames=4, encoder=encoder, show_progress=False)
    assert rep.added == 4 and rep.frames == 3 + 4 and rep.ignored == 1
    failed = dict(rep.failed)
    assert set(failed) == {str((src / "broken.jpg").resolve()), str((src / "cut.mp4").resolve())}
    with _consistent(root) as col:
        assert len(col) == 4
        vid = next(it for it in col.catalog.items() if it.kind == "video")
        assert vid.n_frames == 4 and len(vid.frame_times) == 4 and abs(vid.duration - 4.0) < 0.1
        assert col.thumbnail(vid.id)[:3] == b"\xff\xd8\xff"

    again = ingest([str(src)], root, encoder=encoder, show_progress=False)
    assert again.added == 0 and again.unchanged == 4 and len(again.failed) == 2

    shutil.copy(src / "coffee.png", src / "coffee-copy.png")  # same bytes, new name: a duplicate
    (src / "chelsea.png").rename(src / "cat.png")  # moved: the row follows the file
    shutil.copy(packaged_image("rocket.jpg"), src / "astronaut.png")  # modified in place: replaced
    rep = ingest([str(src)], root, encoder=encoder, show_progress=False)
    assert rep.added == 1 and rep.moved == 1 and rep.replaced == 1
    assert [Path(p).name for p, _ in rep.duplicates] == ["coffee-copy.png"]
    with _consistent(root) as col:
        paths = sorted(Path(it.path).name for it in col.catalog.items())
        assert paths == ["astronaut.png", "carphone.mp4", "cat.png", "coffee.png"]
        hit = col.search_image(src / "astronaut.png", k=1)[0]
        assert Path(hit.path).name == "astronaut.png" and hit.score > 0.99  # the new content, not the old

    (src / "carphone.mp4").unlink()
    rep = ingest([str(src)], root, encoder=encoder, show_progress=False)
    assert rep.pruned == 0  # without --prune a vanished file stays
    rep = ingest([str(src)], root, encoder=encoder, prune=True, show_progress=False)
    assert rep.pruned == 1
    with _consistent(root) as col:
        assert len(col) == 3 and all(it.kind == "image" for it in col.catalog.items())

    shutil.copy(src / "coffee.png", src / "cat.png")  # a path overwritten with another item's bytes
    rep = ingest([str(src)], root, encoder=encoder, show_progress=False)
    assert rep.replaced == 1 and rep.added == 0
    with _consistent(root) as col:
        assert sorted(Path(it.path).name for it in col.catalog.items()) == ["astronaut.png", "coffee.png"]


def test_index_damage_and_lag_are_repaired_on_open(tmp_path, encoder):
    src, root = tmp_path / "src", tmp_path / "col"
    _photos(src)
    ingest([str(src)], root, encoder=encoder, show_progress=False)
    with Collection.open(root) as col:
        path, ids = col.index_path, col.catalog.ids()
        ref = col.search_id(int(ids[0]), k=2)
    path.write_bytes(path.read_bytes()[:-10])  # truncated index file
    with _consistent(root) as col:
        assert col.search_id(int(ids[0]), k=2) == ref
    # an index that lags the catalog (a kill between the catalog commit and the index save)
    with Collection.open(root, write=True) as col:
        col.index.remove(ids[:2])
        col.save_index()
    with _consistent(root) as col:
        assert col.search_id(int(ids[0]), k=2) == ref


def test_features_h5_is_the_ssvh_layout(tmp_path, encoder):
    import h5py

    from bitseek.data.h5features import H5Shards

    src, root = tmp_path / "src", tmp_path / "col"
    _photos(src, ("chelsea.png",))
    shutil.copy(packaged_video("carphone_pristine.mp4"), src / "carphone.mp4")
    ingest([str(src)], root, frames=6, encoder=encoder, show_progress=False)
    with h5py.File(root / "features.h5") as fh:
        feats, ids, times = fh["feats"][:], fh["ids"][:], fh["times"][:]
    assert feats.shape == (2, 6, 1280) and feats.dtype == np.float32
    with Collection.open(root) as col:
        assert list(ids) == list(col.catalog.ids())
        for row, i in zip(feats, ids):
            it = col.item(int(i))
            stored = col.catalog.frames(int(i), col.dim)
            if it["kind"] == "image":
                assert np.allclose(row, stored[0])  # a still: its one frame, six times
            else:
                np.testing.assert_allclose(row, stored)
                np.testing.assert_allclose(times[list(ids).index(i)], it["frame_times"], atol=1e-4)
    assert H5Shards([root / "features.h5"]).shape == (2, 6, 1280)  # the readers training uses


def test_settings_are_fixed_per_collection(tmp_path, encoder, monkeypatch):
    import bitseek.collection

    monkeypatch.setattr(bitseek.collection, "WRITER_WAIT_S", 0.3)
    src, root = tmp_path / "src", tmp_path / "col"
    _photos(src, ("coffee.png",))
    ingest([str(src)], root, frames=4, encoder=encoder, show_progress=False)
    with pytest.raises(BitseekError, match="--frames 8: the collection .* was built with --frames 4"):
        ingest([str(src)], root, frames=8, encoder=encoder, show_progress=False)
    with pytest.raises(BitseekError, match="not a collection"):
        Collection.open(src)
    with pytest.raises(BitseekError, match="exists and is not a collection"):
        ingest([str(src)], src, encoder=encoder, show_progress=False)
    with Collection.open(root, write=True):
        with pytest.raises(BitseekError, match="another process .* is writing"):
            ingest([str(src)], root, encoder=encoder, show_progress=False)


def test_itq_on_the_collection_then_back_to_float(tmp_path, encoder):
    from PIL import Image

    src, root = tmp_path / "src", tmp_path / "col"
    _photos(src, ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png"))
    base = np.asarray(Image.open(packaged_image("astronaut.png")).convert("RGB"))
    for n in range(7):  # crops of a real photo: more items than the 8 bits ITQ fits
        y, x = 40 * n, 30 * n
        Image.fromarray(base[y:y + 300, x:x + 300]).save(src / f"crop{n}.png")
    rep = ingest([str(src)], root, encoder=encoder, model="itq8", show_progress=False)
    assert rep.model == "itq 8-bit" and rep.items == 12
    with _consistent(root) as col:
        assert col.model.metric == "hamming" and col.index.engine == "flat"
        assert len(list((root / "models").iterdir())) == 1
        hits = col.search_image(src / "coffee.png", k=3)
        assert Path(hits[0].path).name == "coffee.png" and hits[0].distance == 0
        assert all(isinstance(h.distance, int) for h in hits)
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
        near = col.search_image(src / "coffee.png", k=50, radius=0)
        assert all(h.distance == 0 for h in near) and near[0].path == hits[0].path
    with pytest.raises(BitseekError, match="needs at least 64 items"):
        ingest([str(src)], root, encoder=encoder, model="itq64", show_progress=False)
    rep = ingest([str(src)], root, encoder=encoder, model="float", show_progress=False)
    with _consistent(root) as col:
        assert col.model.kind == "float"
        assert not any((root / "models").iterdir())  # the ITQ folder went with its model
        assert len(list(root.glob("index-*.bsi"))) == 1


def test_progress_bar_shows_files_frames_and_rate(tmp_path, encoder, monkeypatch, capsys):
    import bitseek.progress

    monkeypatch.setattr(bitseek.progress, "enabled", lambda: True)  # as on a terminal
    src = tmp_path / "src"
    _photos(src, ("coffee.png",))
    shutil.copy(packaged_video("carphone_pristine.mp4"), src / "carphone.mp4")
    ingest([str(src)], tmp_path / "col", frames=3, encoder=encoder)
    err = capsys.readouterr().err
    assert "ingest" in err and "/2 [" in err and "file/s" in err  # files done of total, and their rate
    assert "frames=" in err and "fps=" in err
