from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from bitseek.data.base import GndRelevance, LabelRelevance, RetrievalData
from bitseek.data.revisited import load_gnd, query_boxes
from bitseek.errors import FileFormatError

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "revisitop"


def test_the_gnd_loader_lives_in_data_and_the_old_path_still_imports_it():
    from bitseek.eval.revisited import load_gnd as old

    assert old is load_gnd


def test_query_boxes_and_refusals(tmp_path):
    obj = {"imlist": ["a", "b"], "qimlist": ["q"], "gnd": [{"bbx": [1, 2, 3.5, 4], "easy": [0], "hard": [], "junk": [1]}]}
    p = tmp_path / "gnd_x.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=3))
    assert query_boxes(load_gnd(p)) == [(1.0, 2.0, 3.5, 4.0)]
    p.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [], "x": np.zeros(1)}))
    with pytest.raises(FileFormatError, match="refuses to load"):
        load_gnd(p)


def test_real_ground_truth_when_present():
    p = FIXTURES / "gnd_roxford5k.pkl"
    if not p.is_file():
        pytest.skip("revisitop fixture not available")
    g = load_gnd(p)
    boxes = query_boxes(g)
    assert len(boxes) == len(g["qimlist"]) == 70 and all(b is not None for b in boxes)


def test_retrieval_data_relevance_and_unambiguous_names():
    ql, dl = np.arange(4) % 2, np.arange(6) % 2
    d = RetrievalData([0] * 3, [1] * 4, [2] * 6, ql, dl)
    assert isinstance(d.relevance, LabelRelevance) and d.relevance.searched is dl
    assert d.searched == [2] * 6 and d.searched_labels is dl and not d.queries_are_database
    same = RetrievalData([0], [1] * 4, None, ql, None)
    assert same.searched is same.query and same.searched_labels is ql and same.queries_are_database
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert same.db is same.searched and same.database_labels is ql
    assert {type(x.message) for x in w} == {DeprecationWarning}
    g = RetrievalData([0], [1], [2], None, None, gnd={"gnd": []})
    assert isinstance(g.relevance, GndRelevance)
