"""Choose cvnet/rerank-lite0's settings on the landmark benchmark's TRAINING scenes only (never its test scenes).

The training split's photographs are divided by photograph: the landmarks of ``--held-out`` photos
(default: flower, coins) are held out; the global model (cvnet/global-lite0) and then the re-ranker
(cvnet/rerank-lite0 + the overrides given) train on the other landmarks. Every held-out image then
queries the other held-out images: global ranking (one scale, the image as it is), then CVNet
re-ranking of the top ``--k`` with the demo's fusion (similarity + 0.5 x match probability), for the
trained head and for a random head. Prints mAP (label relevance) of the three.

    python experiments/tune_cvnet_rerank_lite0.py --data /tmp/lm/data --work /tmp/lm-tune train.epochs=6
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def split_folders(train: Path, held_out: list[str], work: Path) -> tuple[Path, Path]:
    """Symlinked class folders: ``work/fit/<lm>`` (training landmarks) and ``work/val/<lm>`` (held out)."""
    fit, val = work / "fit", work / "val"
    for d in sorted(p for p in train.iterdir() if p.is_dir()):
        dst = (val if d.name.rsplit("_", 1)[0] in held_out else fit) / d.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.symlink(d.resolve(), dst)
    return fit, val


def average_precision(ranked_labels: np.ndarray, label: int) -> float:
    hit = ranked_labels == label
    if not hit.any():
        return 0.0
    prec = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float((prec * hit).sum() / hit.sum())


@torch.no_grad()
def held_out_map(net, val: Path, k: int, seed: int) -> dict[str, float]:
    from bitseek.data.rerank_pairs import scan_landmark_folder
    from bitseek.data.revisited import read_bgr
    from bitseek.demo.landmarks import random_rerank_head
    from bitseek.encode.multiscale import normalise_bgr, pyramids_from_maps
    from bitseek.rerank import CVNetReranker, rerank_ranks
    from bitseek.rerank.binary import exact_ranking

    paths, labels, _ = scan_landmark_folder(val)
    xs = [torch.from_numpy(normalise_bgr(read_bgr(p))).unsqueeze(0) for p in paths]
    desc = np.concatenate([net.global_descriptor(x).numpy() for x in xs])
    maps = [net.rerank_features(x)[0].to(torch.float16).numpy() for x in xs]
    ranks, scores = exact_ranking(desc, desc)  # (n_db, n_query); the query itself is first, dropped below
    out = {}
    for name, model in (("global", None), ("random", random_rerank_head(net, seed)), ("trained", net)):
        r = ranks
        if model is not None:
            pyr = pyramids_from_maps(model, maps)
            res = rerank_ranks(ranks, scores, CVNetReranker(model, pyr, pyr), mode="plain", k=k + 1)
            r = res.ranks["easy"]
        aps = [average_precision(labels[[j for j in r[:, i] if j != i]], labels[i]) for i in range(len(paths))]
        out[name] = round(100 * float(np.mean(aps)), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a built landmark benchmark (with train/)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--held-out", nargs="+", default=["flower", "coins"])
    ap.add_argument("--k", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="cvnet/rerank-lite0 overrides, e.g. train.epochs=4")
    a = ap.parse_args()
    from bitseek.train.checkpoint import load_model
    from bitseek.train.cvnet import train_global
    from bitseek.train.cvnet_rerank import train_rerank

    torch.set_num_threads(1)
    fit, val = split_folders(a.data / "train", a.held_out, a.work)
    gdir = a.work / "global"
    if (gdir / "cvnet" / "config.json").exists():
        net = load_model(gdir / "cvnet").eval()
    else:
        net, _ = train_global("cvnet/global-lite0", [f"data.root={fit}", f"train.out_dir={gdir}",
                                                     "train.progress=false"])
    tag = "_".join(o.replace("=", "-").replace("/", "") for o in a.overrides) or "default"
    t0 = time.perf_counter()
    trained, run = train_rerank("cvnet/rerank-lite0", [f"data.root={fit}", "train.progress=false", *a.overrides],
                                net=net, out_dir=a.work / "rerank" / tag)
    secs = time.perf_counter() - t0
    res = held_out_map(trained, val, a.k, a.seed)
    print(json.dumps({"overrides": a.overrides, "train_s": round(secs, 1), "held_out_mAP": res}))


if __name__ == "__main__":
    main()
