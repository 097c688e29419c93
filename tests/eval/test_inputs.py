"""Bad input gets a clear InputError naming the problem, never a silent number."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitseek.codes import pack
from bitseek.errors import InputError
from bitseek.eval import map_at_k, map_at_topk, precision_at_k, precision_recall

rng = np.random.default_rng(0)
Q = np.sign(rng.standard_normal((4, 16))).astype(np.float32)
D = np.sign(rng.standard_normal((10, 16))).astype(np.float32)
QL = rng.integers(0, 3, 4)
DL = rng.integers(0, 3, 10)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((Q, D[:, :8], QL, DL), {}, "16 bits but db_codes have 8"),
        ((pack(Q), D[:, :8], QL, DL), {}, "16 bits but db_codes have 8"),
        ((Q, D, QL[:3], DL), {}, "query_labels have 3 rows but there are 4 queries"),
        ((Q, D, QL, DL[:9]), {}, "db_labels have 9 rows but there are 10 database items"),
        ((np.where(Q > 0, np.nan, Q), D, QL, DL), {}, "NaN"),
        ((Q * 0.5, D, QL, DL), {}, "must be -1, 0 or \\+1"),
        ((Q[0], D, QL, DL), {}, "2-D"),
        ((Q[:0], D, QL[:0], DL), {}, "empty code set"),
        ((Q, D[:0], QL, DL[:0]), {}, "empty code set"),
        ((Q, D, QL, DL), {"ks": [11]}, "larger than the database \\(10 items\\)"),
        ((Q, D, QL, DL), {"ks": [0]}, ">= 1"),
        ((Q, D, QL, DL), {"ks": [2.5]}, "integers"),
        ((Q, D, QL, DL), {"ks": []}, "no cut-off"),
        ((Q, D, QL, DL), {"ks": [3], "ties": "random"}, "ties must be"),
        ((Q, D, QL, DL), {"ks": [3], "ties": "numpy", "numpy_dtype": "int8"}, "numpy_dtype"),
        ((Q, D, QL, DL), {"ks": [3], "chunk_size": 0}, "chunk_size"),
        ((Q, D, QL, None), {}, "db_labels missing"),
        ((Q, None, QL, DL), {}, "db_labels given without db_codes"),
        ((Q, D, np.eye(3)[QL], DL), {}, "use the same form on both sides"),
        ((Q, D, np.eye(3)[QL], np.eye(4)[DL]), {}, "3 label columns but db_labels have 4"),
        ((Q, D, QL[:, None] * 2, DL[:, None]), {}, "multi-hot 0/1"),
        ((Q, D, QL - 5, DL), {}, "class ids must be >= 0"),
        ((Q, D, QL + 0.5, DL), {}, "integer class ids"),
        ((Q, D, np.where(np.eye(3)[QL] > 0, np.nan, 0), np.eye(3)[DL]), {}, "NaN"),
        ((Q, D, QL.reshape(2, 2, 1), DL), {}, "1-D class vector or a 2-D"),
        ((Q.astype(str), D, QL, DL), {}, "dtype"),
    ],
)
def test_map_at_k_refuses(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        map_at_k(*args, **kwargs)


def test_other_metrics_share_the_checks():
    with pytest.raises(InputError, match="larger than the database"):
        precision_at_k(Q, D, QL, DL, ks=[20])
    with pytest.raises(InputError, match="negative cut-offs.*topk=9"):
        map_at_topk(Q, D, QL, DL, topk=-1)
    with pytest.raises(InputError, match="average"):
        precision_recall(Q, D, QL, DL, average="weighted")
    with pytest.raises(InputError, match="no query has a relevant"):
        precision_recall(Q, D, np.full(4, 7), DL)


def test_accepted_forms_give_the_same_numbers():
    base = map_at_k(Q, D, QL, DL, ks=[3])
    assert map_at_k(torch.from_numpy(Q), torch.from_numpy(D), torch.from_numpy(QL), torch.from_numpy(DL), ks=[3]) == base
    assert map_at_k(Q > 0, D > 0, QL, DL, ks=[3]) == base  # booleans
    assert map_at_k(Q.astype(np.int8), D.astype(np.float64), QL, DL, ks=3) == base
    assert map_at_k(Q, D, np.eye(3)[QL], np.eye(3, dtype=bool)[DL], ks=[3]) == base  # one-hot == class ids
    assert map_at_k(Q, D, QL.astype(np.float64), DL.astype(np.float64), ks=[3]) == base
    assert map_at_k(Q, D, QL, DL, ks=[3, 3]) == base  # duplicates collapse
