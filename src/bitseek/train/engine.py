"""The one training engine for every deep model.

It owns what models must not: devices, mixed precision, DDP, data loading, the optimiser and its
schedule, checkpoints and resume, logging and progress. A model only implements
``training_step``/``encode`` and, if it needs them, the ``epoch_phases``/``before_epoch`` hooks.

Host synchronisation happens only every ``train.log_every`` steps (to log and to catch a
non-finite loss) and at epoch ends, never inside a step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bitseek.atomic import atomic_write_text
from bitseek.config import ExperimentConfig, save_resolved
from bitseek.progress import progress
from bitseek.data.base import RetrievalData
from bitseek.device import resolve_device, resolve_precision, to_device  # noqa: F401  (re-exported)
from bitseek import collective
from bitseek.errors import BitseekError, ConfigError
from bitseek.models.base import EpochContext, HashModel
from bitseek.train import checkpoint as ckpt
from bitseek.train import dist
from bitseek.train.optim import build_optimizer, lr_at, set_lr
from bitseek.utils.malloc import retain_freed_memory


log = logging.getLogger(__name__)


class TrainingDiverged(BitseekError):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _StepModule(nn.Module):
    """Routes ``forward`` to ``training_step`` so DDP sees a forward call and syncs gradients."""

    def __init__(self, model: HashModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor], phase: str) -> dict[str, Tensor]:
        return self.model.training_step(batch, phase)


class Trainer:
    """Fit a :class:`HashModel` on ``data.train`` under an :class:`ExperimentConfig`."""

    def __init__(self, model: HashModel, cfg: ExperimentConfig, data: RetrievalData,
                 out_dir: str | os.PathLike[str] | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.out_dir = Path(out_dir) if out_dir is not None else cfg.out_dir
        if dist.launched() and not collective.is_distributed():
            raise ConfigError("WORLD_SIZE > 1 but no process group is open: wrap training in "
                              "`with bitseek.train.dist.process_group():` (bitseek train does this under torchrun)")
        self.distributed = collective.is_distributed() and collective.world() > 1
        self.rank = collective.rank()
        self.world = collective.world()
        self._shared: torch.Generator | None = None
        self.device = resolve_device(cfg.train.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        elif self.device.type == "cpu":
            retain_freed_memory()  # each step reuses the last step's activation memory: no fresh page faults
        self.amp_dtype = resolve_precision(cfg.train.precision, self.device)
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(model.param_groups(), cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        step_module: nn.Module = _StepModule(self.model)
        if self.distributed:
            # a model whose phases leave some parameters unused (WSCH's heads) sets this attribute
            unused = bool(getattr(model, "ddp_find_unused_parameters", False))
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused)
        if cfg.train.compile:
            step_module = torch.compile(step_module)  # type: ignore[assignment]
        self.step_module = step_module
        self.epoch = 0
        self.global_step = 0
        self.is_main = self.rank == 0

    # ------------------------------------------------------------------ data
    def _shuffle_seed(self, epoch: int, pass_index: int) -> int:
        """Seed of the order of pass ``pass_index`` of ``epoch``: fixed by the run seed, so a resume repeats it.

        Each pass of an epoch draws its own permutation, as the official WSCH iterates a shuffled loader
        once per pass; pass 0 keeps the seed every single-pass model (ConMH) has always used.
        """
        base = self.cfg.train.seed * 100_003 + epoch
        if pass_index == 0:
            return base
        return int(np.random.SeedSequence([self.cfg.train.seed % 2**63, epoch, pass_index]).generate_state(1)[0])

    def _loader(self, dataset: Dataset, shuffle: bool, epoch: int, drop_last: bool = False,
                pass_index: int = 0) -> DataLoader:
        set_epoch = getattr(dataset, "set_epoch", None)
        if callable(set_epoch):  # per-epoch augmentation seeds, independent of workers and order
            set_epoch(epoch)
        seed = self._shuffle_seed(epoch, pass_index)
        gen = torch.Generator()
        gen.manual_seed(seed)
        if self.distributed:
            # the global batches one process would draw (batch size B * W), each split into rank blocks
            batches = dist.global_batches(len(dataset), int(self.cfg.data.batch_size) * self.world,  # type: ignore[arg-type]
                                          shuffle, gen)
            if drop_last and batches and len(batches[-1]) < int(self.cfg.data.batch_size) * self.world:
                batches = batches[:-1]
            return dist.RankPass(dataset, batches, self.world, self.rank, drop_ragged=shuffle,  # type: ignore[return-value]
                                 num_workers=self.cfg.train.num_workers, pin_memory=self.device.type == "cuda",
                                 seed=seed)
        return DataLoader(
            dataset,
            batch_size=int(self.cfg.data.batch_size),
            shuffle=shuffle,
            generator=gen,
            num_workers=self.cfg.train.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            persistent_workers=False,
        )

    def _epoch_context(self, epoch: int) -> EpochContext:
        # no reference to the trainer: a model's hook gets the device and passes over the data, nothing upward
        passes: list[Any] = []

        def make(shuffle: bool = False) -> Iterator[Any]:
            p = self._loader(self.data.train, shuffle, epoch)
            passes.append(p)
            return iter(p)

        def gather(outputs: list[Tensor]) -> list[Tensor]:
            if not passes:
                raise RuntimeError("gather_batches: call it after a pass over ctx.batches()")
            return dist.gather_batches(passes[-1].plan, outputs)

        return EpochContext(self.device, make, gather=gather if self.distributed else None)

    # ------------------------------------------------------------------ loop
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _resume(self) -> None:
        """Restore the newest valid checkpoint (reporting any fallback); writes nothing to the run folder."""
        state, problems = ckpt.find_resume_state(self.out_dir)
        if state is None:
            return
        ckpt.apply_training_state(state, self.model, self.optimizer)
        shared = state.tensors.get("rng.shared")
        if self.distributed:
            # the global-batch stream continues (a single-process checkpoint's default stream becomes it)
            assert self._shared is not None
            self._shared.set_state(shared if shared is not None else state.tensors["rng.torch"])
            mine = state.tensors.get(f"rng.torch.rank{self.rank}")
            if mine is not None:
                torch.set_rng_state(mine)
        elif shared is not None:
            torch.set_rng_state(shared)  # a DDP checkpoint resumed in one process: the same global stream
        self.epoch = state.epoch
        self.global_step = state.global_step
        self._resumed = {"event": "resume", "from": str(state.directory), "epoch": self.epoch}
        if problems:
            self._resumed["skipped"] = problems
            log.warning("resuming from %s (epoch %d) instead of the last checkpoint: %s",
                        state.directory, self.epoch, "; ".join(problems))
        else:
            log.info("resuming from %s (epoch %d)", state.directory, self.epoch)

    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.out_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _run_phase(self, epoch: int, phase: str, bar: Any, pass_index: int = 0) -> dict[str, float]:
        sums: dict[str, Tensor] = {}
        count = 0
        log_every = max(1, self.cfg.train.log_every)
        max_steps = self.cfg.train.max_steps_per_epoch
        clip = self.cfg.optim.grad_clip
        loader = self._loader(self.data.train, shuffle=True, epoch=epoch, drop_last=False, pass_index=pass_index)
        batches = iter(loader)
        try:
            for i, batch in enumerate(batches):
                if max_steps and i >= max_steps:
                    break
                self._step(batch, epoch, phase, bar, sums, log_every, clip)
                count += 1
        finally:
            close = getattr(batches, "close", None)  # a RankPass's step layout ends with its pass
            if callable(close):
                close()
        means = self._epoch_means(sums, count)
        if means and not math.isfinite(means.get("loss", 0.0)):
            raise TrainingDiverged(f"mean loss of epoch {epoch} (phase {phase}) is not finite")
        return means

    def _step(self, batch: dict[str, Any], epoch: int, phase: str, bar: Any, sums: dict[str, Tensor],
              log_every: int, clip: float) -> None:
        batch = to_device(batch, self.device)
        with self._autocast():
            out = self.step_module(batch, phase)
        loss = out["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for k, v in out.items():
            v = v.detach().float()
            sums[k] = sums[k] + v if k in sums else v.clone()
        self.global_step += 1
        if bar is not None:
            bar.update(1)
        if self.global_step % log_every == 0:  # the only host sync inside an epoch
            cur = {k: float(v) for k, v in self._mean_over_ranks(out).items()}
            if not math.isfinite(cur["loss"]):
                raise TrainingDiverged(
                    f"loss became {cur['loss']} at epoch {epoch} step {self.global_step} (phase {phase}); "
                    f"last good checkpoint: {self._last_good()}")
            self._log({"event": "step", "epoch": epoch, "phase": phase, "step": self.global_step,
                       "lr": self.optimizer.param_groups[0]["lr"], **cur})
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in cur.items()}, refresh=False)

    def _mean_over_ranks(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Step values averaged over ranks, so every rank sees (and stops on) a NaN on any rank."""
        vals = {k: v.detach().float().reshape(()) for k, v in out.items()}
        if not self.distributed:
            return vals
        keys = list(vals)
        stacked = torch.stack([vals[k] for k in keys])
        torch.distributed.all_reduce(stacked)
        return {k: stacked[i] / self.world for i, k in enumerate(keys)}

    def _epoch_means(self, sums: dict[str, Tensor], count: int) -> dict[str, float]:
        """Per-step means of an epoch over every rank's steps (one collective per epoch under DDP)."""
        keys = list(sums)  # insertion order: the same on every rank, and the log's column order
        if self.distributed:
            vec = torch.stack([sums[k].reshape(()) for k in keys] + [torch.tensor(float(count), device=self.device)]) \
                if keys else torch.tensor([float(count)], device=self.device)
            torch.distributed.all_reduce(vec)
            total = float(vec[-1])
            return {k: float(vec[i]) / max(total, 1.0) for i, k in enumerate(keys)}
        return {k: float(sums[k]) / max(count, 1) for k in keys}

    def fit(self) -> Path:
        """Train to ``cfg.train.epochs``, resuming from the last checkpoint in ``out_dir``.

        A run folder that holds a run with other settings is refused before anything is written, and
        ``config.yaml`` is written only once the resume succeeded, so a refused run leaves it as it was.
        """
        ckpt.check_run_folder(self.cfg.to_dict(), self.out_dir)
        self._resumed: dict[str, Any] | None = None
        seed_everything(self.cfg.train.seed + self.rank)
        if self.distributed:
            # the global batch's randomness: the stream one process draws from its default generator
            self._shared = torch.Generator(device=self.device)
            self._shared.manual_seed(self.cfg.train.seed)
            collective.set_shared_generator(self._shared)
        try:
            self._resume()
            return self._fit()
        finally:
            collective.set_shared_generator(None)

    def _fit(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            save_resolved(self.cfg, self.out_dir)
            if self._resumed is not None:
                self._log(self._resumed)
        total = self.cfg.train.epochs
        bar = None
        if self.is_main and self.epoch < total:
            steps = self._steps_per_epoch()
            phases = sum(len(self.model.epoch_phases(e)) for e in range(self.epoch, total))
            bar = progress(total=steps * phases, desc=f"train {self.cfg.name}", unit="step",
                           leave=True, show=bool(self.cfg.train.progress))
        try:
            while self.epoch < total:
                epoch = self.epoch
                set_lr(self.optimizer, lr_at(epoch, self.cfg.optim, total), self.cfg.optim.lr)
                self.model.train()
                t0 = time.perf_counter()
                self.model.before_epoch(epoch, self._epoch_context(epoch))
                if self._shared is not None:  # a rank with no block in an ordered pass drew less
                    dist.sync_generator(self._shared, self.device)
                record: dict[str, Any] = {"event": "epoch", "epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
                for pass_index, phase in enumerate(self.model.epoch_phases(epoch)):
                    means = self._run_phase(epoch, phase, bar, pass_index)
                    record.update({f"{phase}/{k}": v for k, v in means.items()})
                record["seconds"] = round(time.perf_counter() - t0, 3)
                self.epoch = epoch + 1
                self._log(record)
                if bar is not None:
                    bar.set_description(f"train {self.cfg.name} epoch {self.epoch}/{total}", refresh=False)
                log.debug("epoch %d: %s", epoch, record)
                self._end_of_epoch(self.epoch == total)
        finally:
            if bar is not None:
                bar.close()
        if self.is_main:
            final = self.out_dir / "model"
            ckpt.save_model(final, self.model, self.cfg.model, extra={"epoch": self.epoch, "experiment": self.cfg.name})
            atomic_write_text(self.out_dir / "DONE", json.dumps({"epochs": self.epoch, "steps": self.global_step}))
        dist.barrier()
        return self.out_dir

    def _end_of_epoch(self, last_epoch: bool) -> None:
        """Checkpoint (rank 0 writes; under DDP it holds every rank's generators) and wait for every rank."""
        if last_epoch or self.epoch % max(1, self.cfg.train.checkpoint_every) == 0:
            extra: dict[str, Tensor] = {}
            if self.distributed:
                for r, st in enumerate(dist.gather_rng_states(self.device)):  # a collective: every rank
                    extra[f"rng.torch.rank{r}"] = st
                assert self._shared is not None
                extra["rng.shared"] = self._shared.get_state()
            if self.is_main:
                ckpt.save_training_state(self.out_dir, self.model, self.cfg.model, self.optimizer,
                                         self.epoch, self.global_step, extra_tensors=extra)
        dist.barrier()

    def close(self) -> None:
        """Nothing to release: the process group belongs to the launcher (:func:`bitseek.train.dist.process_group`)."""

    def _last_good(self) -> str:
        try:
            return str(ckpt.last_checkpoint(self.out_dir) or "none")
        except BitseekError:
            return "none readable"

    def _steps_per_epoch(self) -> int:
        n = len(self.data.train)  # type: ignore[arg-type]
        steps = math.ceil(n / (int(self.cfg.data.batch_size) * self.world))
        if self.cfg.train.max_steps_per_epoch:
            steps = min(steps, self.cfg.train.max_steps_per_epoch)
        return steps


def iterate_batches(dataset: Dataset, batch_size: int, num_workers: int = 0) -> Iterator[dict[str, Any]]:
    """Plain ordered batches (no shuffling), for encoding and fitting shallow baselines."""
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
