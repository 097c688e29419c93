"""Literal ports of the reference evaluation code, used only as test oracles.

Written from the semantics of: ConMH/BTH ``utils/tools.py:mAP`` + ``eval.py`` (full N×Q float32
distance matrix, ``np.argsort(axis=0)``, Python loops), DeepHash-pytorch ``CalcTopMap`` and
revisitop ``python/evaluate.py`` (with ``np.isin`` for the removed ``np.in1d``). Slow on purpose.
"""

from __future__ import annotations

import numpy as np


def video_map(db_codes, q_codes, db_labels, q_labels, ks, kind=None):
    """ConMH eval: Hamming = 0.5*(-Bd·Bqᵀ + bits) (N×Q), argsort per column, AP@K / K."""
    bd = np.asarray(db_codes, dtype=np.float32)
    bq = np.asarray(q_codes, dtype=np.float32)
    dist = 0.5 * (-np.dot(bd, bq.T) + bd.shape[1])
    rank = np.argsort(dist, axis=0) if kind is None else np.argsort(dist, axis=0, kind=kind)
    sim = np.dot(db_labels, q_labels.T)
    out = {}
    for k in ks:
        apall = np.zeros((bq.shape[0], 1))
        for qid in range(bq.shape[0]):
            col = rank[:, qid]
            x, p = 0, 0
            for rid in range(k):
                if sim[col[rid], qid]:
                    x += 1
                    p += x / (rid * 1.0 + 1.0)
            apall[qid] = 0.0 if not p else p / (k * 1.0)
        out[k] = np.mean(apall)
    return out


def calc_top_map(rB, qB, retrievalL, queryL, topk, kind=None):
    """DeepHash-pytorch CalcTopMap (queries without hits add 0 and count in the mean)."""
    num_query = queryL.shape[0]
    topkmap = 0
    for it in range(num_query):
        gnd = (np.dot(queryL[it, :], retrievalL.transpose()) > 0).astype(np.float32)
        hamm = 0.5 * (rB.shape[1] - np.dot(qB[it, :], rB.transpose()))
        ind = np.argsort(hamm) if kind is None else np.argsort(hamm, kind=kind)
        gnd = gnd[ind]
        tgnd = gnd[0:topk]
        tsum = np.sum(tgnd).astype(int)
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)) + 1.0
        topkmap = topkmap + np.mean(count / tindex)
    return topkmap / num_query


def calc_top_map_with_pr(qB, queryL, rB, retrievalL, topk, kind=None):
    """DeepHash-pytorch CalcTopMapWithPR: per-rank precision/recall rows, kept where recall ends at 1.

    Queries with no hit in the top-k are skipped (their rows stay 0 and the final filter drops them).
    """
    num_query, num_gallery = queryL.shape[0], retrievalL.shape[0]
    prec = np.zeros((num_query, num_gallery))
    recall = np.zeros((num_query, num_gallery))
    for it in range(num_query):
        gnd = (np.dot(queryL[it, :], retrievalL.transpose()) > 0).astype(np.float32)
        hamm = 0.5 * (rB.shape[1] - np.dot(qB[it, :], rB.transpose()))
        ind = np.argsort(hamm) if kind is None else np.argsort(hamm, kind=kind)
        gnd = gnd[ind]
        if np.sum(gnd[0:topk]).astype(int) == 0:
            continue
        all_sim_num = np.sum(gnd)
        prec_sum = np.cumsum(gnd)
        prec[it, :] = prec_sum / np.arange(1, num_gallery + 1)
        recall[it, :] = prec_sum / all_sim_num
    keep = np.argwhere(recall[:, -1] == 1.0).squeeze()
    return np.mean(prec[keep], 0), np.mean(recall[keep], 0)


def deephash_validate_index(num_dataset):
    """DeepHash-pytorch ``validate``: 0-based ranks 99, 199, ... then every rank of the tail."""
    index_range = num_dataset // 100
    index = [i * 100 - 1 for i in range(1, index_range + 1)]
    max_index = max(index)
    overflow = num_dataset - index_range * 100
    return index + [max_index + i for i in range(1, overflow + 1)]


def recall_precision_pooled(dist, rel, radii):
    """SH/ITQ ``recall_precision.m``: pooled pairs inside the Hamming ball of each radius."""
    total_good = rel.sum()
    prec, rec = [], []
    for r in radii:
        j = dist <= r + 1e-5
        good = rel[j].sum()
        prec.append(good / j.sum() if j.sum() else np.nan)
        rec.append(good / total_good)
    return np.array(prec), np.array(rec)


def revisitop_compute_ap(ranks, nres):
    ap = 0
    recall_step = 1.0 / nres
    for j in np.arange(len(ranks)):
        rank = ranks[j]
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def revisitop_compute_map(ranks, gnd, kappas=()):
    mAP = 0.0
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.asarray(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        qgndj = np.asarray(gnd[i].get("junk", np.empty(0)))
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = revisitop_compute_ap(pos, len(qgnd))
        mAP = mAP + ap
        aps[i] = ap
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    return mAP / (nq - nempty), aps, pr / (nq - nempty), prs
