"""ConMH and WSCH training steps side by side with the official code's, on the same input and weights.

The official repositories (huangmozhi9527/ConMH, anon271/WSCH) are *not* part of bitseek and are
never imported by it or by its tests: pass their checkouts with ``--conmh-official`` /
``--wsch-official``. Each measurement runs in its own child process (the two repositories both have
a top-level ``model`` module), which:

1. builds the official model at the official configuration (ConMH ``configs/conmh_fcv.py``, 'small';
   WSCH ``run.py``'s ``Cfg`` at FCVID's 4096-d input), and bitseek's model with the official weights
   converted by bitseek's own converter (``convert_conmh`` / ``convert_official``);
2. checks one step's loss and every gradient against the official step, on the same input and the
   same masks (the official masks are bitseek's, as booleans), and records the largest differences;
3. times full optimiser steps, alternating official and bitseek steps round by round so that a
   change in machine load hits both: the official step is the official training loop's body (two
   masked forwards + the official criterion, ``loss.backward()``, ``torch.optim.Adam``), bitseek's
   is ``training_step`` + backward + the optimiser the engine builds.

With ``--malloc retain`` (the default) each child first does what bitseek's trainer does on a CPU
(``retain_freed_memory``: glibc keeps freed blocks for the next step); it is process-wide, so both
sides run under it. ``--malloc default`` leaves glibc as it is.

The official code calls ``.cuda()`` unconditionally in its binariser's backward and its DCL mask;
on a machine without CUDA those calls are made no-ops *in the child process only*.

Usage::

    python benchmarks/bench_official_step.py --conmh-official /path/ConMH --wsch-official /path/WSCH \\
        [--batch 32] [--wsch-batch 32] [--rounds 5] [--threads 1] [--extra-path DIR]

``--extra-path`` adds a folder to ``sys.path`` of the children (the official WSCH imports einops,
which bitseek does not need). Writes ``benchmarks/results/official_step.json`` atomically.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
FRAMES, DIM, BITS = 25, 4096, 64
CASES = ("conmh", "wsch-recon", "wsch-cluster", "wsch-contrastive")


# --------------------------------------------------------------------------- helpers (child side)


def _cpu_cuda_noop() -> None:
    """The official code calls ``.cuda()`` on CPU tensors: make it the identity without CUDA."""
    import torch

    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]


def _load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _grad_diffs(official: dict[str, Any], ours: dict[str, Any]) -> dict[str, float]:
    """Largest absolute gradient difference, and relative to the largest official gradient entry."""
    import torch

    worst_abs, worst_rel, worst_name = 0.0, 0.0, ""
    missing = sorted(set(official) ^ set(ours))
    if missing:
        raise RuntimeError(f"gradient names differ between the two models: {missing[:5]}")
    for k, g in official.items():
        d = (ours[k] - g).abs().max().item()
        worst_abs = max(worst_abs, d)
        rel = d / max(g.abs().max().item(), 1e-30)
        if rel > worst_rel:
            worst_rel, worst_name = rel, k
    return {"max_abs_grad_diff": worst_abs, "max_rel_grad_diff": worst_rel, "worst_tensor": worst_name,
            "tensors": len(official),
            "params_without_grad": int(sum(1 for g in official.values() if torch.count_nonzero(g) == 0))}


def _time_alternating(steps: dict[str, Callable[[], Any]], rounds: int) -> dict[str, dict[str, float]]:
    """One warm-up step each, then ``rounds`` rounds of one step of each; per-step wall seconds."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()
    for _ in range(rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "all_s": [round(x, 4) for x in v]}
            for k, v in times.items()}


def _masks(batch: int, visible: int, seed: int) -> tuple[Any, Any, Any]:
    """bitseek's two views for ``seed`` and the official (B, 2, T) boolean mask tensor (True = masked)."""
    import torch

    from bitseek.models.masking import complementary_masks

    torch.manual_seed(seed)
    m1, m2 = complementary_masks(batch, FRAMES, visible)
    return m1, m2, torch.stack([m1.as_bool(), m2.as_bool()], dim=1)


def _our_optimizer(model: Any) -> Any:
    from bitseek.config.experiment import OptimConfig
    from bitseek.train.optim import build_optimizer

    return build_optimizer(model.param_groups(), OptimConfig(lr=1e-4))


# --------------------------------------------------------------------------- ConMH


def child_conmh(root: Path, batch: int, rounds: int) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(root))
    _cpu_cuda_noop()
    off_cfg = _load_module("official_conmh_fcv", root / "configs" / "conmh_fcv.py")
    off_cfg.batch_size = batch  # its criterion logs (a host sync) whenever the batch is below cfg.batch_size
    from Loss.conmh_loss import conmh_criterion  # type: ignore[import-not-found]
    from model.conmh import conmh as official_conmh  # type: ignore[import-not-found]

    from bitseek.models.conmh import ConMH, ConMHConfig, convert_conmh
    from bitseek.models.masking import num_visible

    torch.manual_seed(0)
    official = official_conmh(off_cfg)
    ours = ConMH(ConMHConfig(bits=off_cfg.nbits, feature_dim=off_cfg.feature_size, max_frames=off_cfg.max_frames,
                             transformer_type=off_cfg.transformer_type, mask_prob=off_cfg.mask_prob, a=off_cfg.a,
                             temperature=off_cfg.temperature, tau_plus=off_cfg.tau_plus))
    ours.load_state_dict(convert_conmh(official.state_dict()))
    x = torch.randn(batch, FRAMES, DIM, generator=torch.Generator().manual_seed(1))
    visible = num_visible(FRAMES, off_cfg.mask_prob)
    quiet = types.SimpleNamespace(info=lambda *a, **k: None)

    def official_loss(mask: Any) -> Any:
        return conmh_criterion(off_cfg, {"visual_word": x, "mask": mask}, official, 0, 1, 1, quiet)

    def our_loss(seed: int) -> Any:
        torch.manual_seed(seed)  # the step draws the same masks as _masks(seed)
        return ours.training_step({"feats": x})["loss"]

    # parity: one step's loss and gradients
    _, _, mask = _masks(batch, visible, seed=5)
    official.train(), ours.train()
    lo = official_loss(mask)
    lo.backward()
    lb = our_loss(5)
    lb.backward()
    g_off = convert_conmh({k: p.grad.detach().clone() for k, p in official.named_parameters()})
    g_ours = {k: p.grad.detach().clone() for k, p in ours.named_parameters()}
    parity = {"loss_official": lo.item(), "loss_bitseek": lb.item(), "abs_loss_diff": abs(lo.item() - lb.item()),
              **_grad_diffs(g_off, g_ours)}

    opt_off = torch.optim.Adam(official.parameters(), lr=off_cfg.lr, weight_decay=off_cfg.weight_decay)
    opt_ours = _our_optimizer(ours)
    _, _, fixed_mask = _masks(batch, visible, seed=6)

    def step_official() -> None:
        opt_off.zero_grad()
        official_loss(fixed_mask).backward()
        opt_off.step()

    def step_ours() -> None:
        opt_ours.zero_grad(set_to_none=True)
        ours.training_step({"feats": x})["loss"].backward()
        opt_ours.step()

    timing = _time_alternating({"official": step_official, "bitseek": step_ours}, rounds)
    return {"case": "conmh", "config": "official configs/conmh_fcv.py ('small', 25 x 4096, 64 bits, mask 0.75)",
            "batch": batch, "parity": parity, "timing": timing,
            "optimizer_bitseek": type(opt_ours).__name__ + str({k: v for k, v in opt_ours.defaults.items()
                                                                if k in ("foreach", "fused")})}


# --------------------------------------------------------------------------- WSCH


def child_wsch(root: Path, phase: str, batch: int, rounds: int) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(root))
    _cpu_cuda_noop()
    import model as official_model  # type: ignore[import-not-found]
    import train as official_train  # type: ignore[import-not-found]

    from bitseek.models.masking import num_visible
    from bitseek.models.wsch import WSCH, WSCHConfig, convert_official

    run_cfg = _load_module("official_wsch_run", root / "run.py").Cfg(0.02, 1.0, 0.2, 800, 0.5, 0.1, 0.9, 0.6)
    torch.manual_seed(0)
    official = official_model.WSCH(BITS, DIM, 1024, 1024, run_cfg)
    # Real centres are signs, so a code is often exactly as close to two centres; which one wins the
    # arg-max then depends on rounding (the loss is the same either way, the gradient is not).
    # Gaussian centres have no such ties, so the parity check compares like with like.
    centres = torch.randn(run_cfg.n_clusters, BITS, generator=torch.Generator().manual_seed(2))
    official.cluster_centers = centres.clone()
    ours = WSCH(WSCHConfig(bits=BITS, feature_dim=DIM, max_frames=FRAMES))
    sd = convert_official(official.state_dict())
    sd["cluster_centers"], sd["cluster_count"] = centres.clone(), torch.tensor(run_cfg.n_clusters)
    ours.load_state_dict(sd)
    x = torch.randn(batch, FRAMES, DIM, generator=torch.Generator().manual_seed(1))
    ratio = run_cfg.p1 if phase == "recon" else run_cfg.p2
    visible = num_visible(FRAMES, ratio)

    def official_loss(mask: Any) -> Any:
        """The body of the official loops (pretrain.py; train.py steps 2 and 3), without .item() logging."""
        m1, m2 = mask[:, 0, :].to(torch.bool), mask[:, 1, :].to(torch.bool)
        b, _, d = x.shape
        f1, v1 = official.forward(x, m1)
        f2, v2 = official.forward(x, m2)
        rec = (official_train.cosine_similarity_loss(f1, x[m1].reshape(b, -1, d))
               + official_train.cosine_similarity_loss(f2, x[m2].reshape(b, -1, d)))
        if phase == "recon":
            return rec
        if phase == "cluster":
            return rec + (official.compute_cluster_probability(v1) + official.compute_cluster_probability(v2)) * run_cfg.a
        return rec + official_train.dcl(v1, v2, b, temperature=run_cfg.temperature, tau_plus=run_cfg.tau_plus) * run_cfg.b

    def our_loss(seed: int) -> Any:
        torch.manual_seed(seed)
        return ours.training_step({"feats": x}, phase)["loss"]

    _, _, mask = _masks(batch, visible, seed=5)
    official.train(), ours.train()
    lo = official_loss(mask)
    lo.backward()
    lb = our_loss(5)
    lb.backward()
    grads = {k: p.grad.detach().clone() for k, p in official.named_parameters()}
    g_off = convert_official({**grads, "cluster_centers": official.cluster_centers})  # the converter wants the buffer
    g_off = {k: v for k, v in g_off.items() if k in dict(ours.named_parameters())}
    g_ours = {k: p.grad.detach().clone() for k, p in ours.named_parameters()}
    parity = {"loss_official": lo.item(), "loss_bitseek": lb.item(), "abs_loss_diff": abs(lo.item() - lb.item()),
              **_grad_diffs(g_off, g_ours)}

    opt_off = torch.optim.Adam(official.parameters(), lr=1e-4)
    opt_ours = _our_optimizer(ours)
    _, _, fixed_mask = _masks(batch, visible, seed=6)

    def step_official() -> None:
        opt_off.zero_grad()
        official_loss(fixed_mask).backward()
        opt_off.step()

    def step_ours() -> None:
        opt_ours.zero_grad(set_to_none=True)
        ours.training_step({"feats": x}, phase)["loss"].backward()
        opt_ours.step()

    timing = _time_alternating({"official": step_official, "bitseek": step_ours}, rounds)
    return {"case": f"wsch-{phase}", "config": f"official run.py Cfg, FCVID input (25 x 4096), 64 bits, mask {ratio}",
            "batch": batch, "parity": parity, "timing": timing}


# --------------------------------------------------------------------------- parent


def run_child(case: str, root: Path, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--root", str(root),
           "--batch", str(batch), "--rounds", str(args.rounds)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               BITSEEK_BENCH_MALLOC=args.malloc)
    if args.extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH", ""), str(args.extra_path)]))
    print(f"[bench] {case:17s} batch {batch:4d} ...", end=" ", flush=True)
    load = os.getloadavg()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise SystemExit(f"child {case} failed:\n{res.stderr[-4000:]}")
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    rec["load_avg_at_start"] = [round(v, 2) for v in load]
    rec["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    t = rec["timing"]
    rec["speedup_median"] = round(t["official"]["median_s"] / t["bitseek"]["median_s"], 3)
    rec["speedup_min"] = round(t["official"]["min_s"] / t["bitseek"]["min_s"], 3)
    p = rec["parity"]
    print(f"official {t['official']['median_s']:.3f} s  bitseek {t['bitseek']['median_s']:.3f} s  "
          f"-> {rec['speedup_median']:.2f}x (min {rec['speedup_min']:.2f}x)   "
          f"loss diff {p['abs_loss_diff']:.2e}, max rel grad diff {p['max_rel_grad_diff']:.2e}")
    return rec


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conmh-official", type=Path, help="checkout of huangmozhi9527/ConMH")
    ap.add_argument("--wsch-official", type=Path, help="checkout of anon271/WSCH")
    ap.add_argument("--batch", type=int, default=32, help="ConMH batch (official: 512 on a GPU)")
    ap.add_argument("--wsch-batch", type=int, default=32, help="WSCH batch (official: 128 on a GPU)")
    ap.add_argument("--wsch-phases", default="recon,cluster,contrastive")
    ap.add_argument("--rounds", type=int, default=5, help="timed steps of each side, alternating")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of the children")
    ap.add_argument("--extra-path", type=Path, help="added to the children's PYTHONPATH (e.g. einops)")
    ap.add_argument("--malloc", choices=("retain", "default"), default="retain",
                    help="retain: glibc keeps freed blocks (what bitseek's trainer sets; both sides); default: glibc as is")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "official_step.json")
    ap.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        if os.environ.get("BITSEEK_BENCH_MALLOC", "retain") == "retain":
            from bitseek.utils.malloc import retain_freed_memory

            retain_freed_memory()
        if args.child == "conmh":
            rec = child_conmh(args.root, args.batch, args.rounds)
        else:
            rec = child_wsch(args.root, args.child.split("-", 1)[1], args.batch, args.rounds)
        print(json.dumps(rec))
        return
    if not args.conmh_official and not args.wsch_official:
        raise SystemExit("give --conmh-official and/or --wsch-official (checkouts of the official repositories)")
    runs = []
    if args.conmh_official:
        runs.append(run_child("conmh", args.conmh_official, args.batch, args))
    if args.wsch_official:
        for phase in filter(None, args.wsch_phases.split(",")):
            runs.append(run_child(f"wsch-{phase}", args.wsch_official, args.wsch_batch, args))
    import torch

    doc = {"benchmark": "official_step", "target_speedup": 1.5,
           "machine": {"cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
                       "torch": torch.__version__, "platform": platform.platform(),
                       "cuda": torch.cuda.is_available(), "malloc": args.malloc},
           "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs}
    sys.path.insert(0, str(HERE.parent / "src"))
    from bitseek.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
