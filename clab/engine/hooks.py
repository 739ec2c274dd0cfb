"""mmcv hooks that make long runs safe and observable.

* :class:`NonFiniteLossHook` stops training at the first NaN/inf loss, *before* the optimizer step, with a
  message naming the loss and the iteration; checkpoints already written are untouched.
* :class:`AtomicCheckpointHook` writes ``epoch_{n}.pth`` and a rolling ``latest.pth`` through a temporary
  file and ``os.replace``, so a kill never leaves a truncated checkpoint behind.
* :class:`JsonlLoggerHook` appends one JSON object per logged iteration to ``metrics.jsonl`` (every loss,
  ``w_cab``, lr, time per iteration, data time, memory).
* :class:`ProgressBarHook` shows a tqdm bar over all training iterations, with ETA.
* :class:`EpochSeedHook` reseeds Python, NumPy and torch at the start of every epoch from
  ``(seed, epoch, rank)``, so that a run resumed from an epoch checkpoint replays exactly what an
  uninterrupted run does (data order, reference sampling, RoI sampling).
"""
from __future__ import annotations

import json
import math
import os
import random
import resource
import time

import numpy as np
import torch
from mmcv.runner import HOOKS, Hook, get_dist_info
from mmcv.runner.checkpoint import get_state_dict, weights_to_cpu

from ..io import atomic_open


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise ``FloatingPointError`` when any logged loss is NaN or infinite (runs before the optimizer)."""

    def after_train_iter(self, runner):
        outputs = runner.outputs or {}
        values = dict(outputs.get("log_vars", {}))
        if "loss" in outputs:
            values.setdefault("loss", float(outputs["loss"].detach()))
        for name, value in values.items():
            if not math.isfinite(float(value)):
                raise FloatingPointError(
                    f"non-finite {name} = {value} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}); "
                    f"training stopped before the optimizer step, checkpoints in {runner.work_dir} are intact")


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder (:func:`clab.io.atomic_open`)."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


@HOOKS.register_module()
class AtomicCheckpointHook(Hook):
    """Save ``epoch_{n}.pth`` every ``interval`` epochs and refresh ``latest.pth``, both atomically.

    The checkpoint holds ``meta`` (primitives only, so ``torch.load(weights_only=True)`` reads it),
    ``state_dict`` and, unless ``save_optimizer=False``, ``optimizer``.
    """

    def __init__(self, interval: int = 1, save_optimizer: bool = True, max_keep_ckpts: int = -1):
        self.interval = interval
        self.save_optimizer = save_optimizer
        self.max_keep_ckpts = max_keep_ckpts

    def after_train_epoch(self, runner):
        if not self.every_n_epochs(runner, self.interval) and not self.is_last_epoch(runner):
            return
        rank, _ = get_dist_info()
        if rank != 0:
            return
        import mmcv
        meta = dict(runner.meta or {})
        meta.update(epoch=runner.epoch + 1, iter=runner.iter, mmcv_version=mmcv.__version__,
                    time=time.asctime())
        checkpoint = {"meta": meta, "state_dict": weights_to_cpu(get_state_dict(_unwrap(runner.model)))}
        if self.save_optimizer and runner.optimizer is not None:
            checkpoint["optimizer"] = runner.optimizer.state_dict()
        path = os.path.join(runner.work_dir, f"epoch_{runner.epoch + 1}.pth")
        atomic_torch_save(checkpoint, path)
        latest = os.path.join(runner.work_dir, "latest.pth")
        tmp = f"{latest}.tmp{os.getpid()}"
        try:  # a hard link costs no space; fall back to a second save where links are not allowed
            if os.path.exists(tmp):
                os.remove(tmp)
            os.link(path, tmp)
            os.replace(tmp, latest)
        except OSError:
            atomic_torch_save(checkpoint, latest)
        runner.logger.info(f"saved checkpoint {path}")
        if self.max_keep_ckpts > 0:
            for epoch in range(runner.epoch + 1 - self.max_keep_ckpts * self.interval, 0, -self.interval):
                old = os.path.join(runner.work_dir, f"epoch_{epoch}.pth")
                if os.path.exists(old):
                    os.remove(old)


def memory_mb() -> float:
    """Peak memory of this process in MiB: CUDA peak allocation on a GPU, peak RSS on the CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@HOOKS.register_module()
class JsonlLoggerHook(Hook):
    """Append ``{"iter", "epoch", "lr", "time", "data_time", "memory_mb", <log_vars>...}`` to a JSON-lines file.

    ``iter`` is the 1-based global iteration just finished. Only rank 0 writes.
    """

    def __init__(self, filename: str = "metrics.jsonl", interval: int = 1):
        self.filename = filename
        self.interval = interval
        self._t_end = None
        self._t_start = None

    def before_train_iter(self, runner):
        self._t_start = time.perf_counter()

    def after_train_iter(self, runner):
        now = time.perf_counter()
        data_time = (self._t_start - self._t_end) if self._t_end is not None else 0.0
        iter_time = now - (self._t_end if self._t_end is not None else self._t_start)
        self._t_end = now
        rank, _ = get_dist_info()
        if rank != 0 or not self.every_n_iters(runner, self.interval):
            return
        lr = runner.current_lr()
        lr = lr[0] if isinstance(lr, list) else {k: v[0] for k, v in lr.items()}
        record = {"iter": runner.iter + 1, "epoch": runner.epoch + 1, "lr": lr, "time": round(iter_time, 5),
                  "data_time": round(data_time, 5), "memory_mb": round(memory_mb(), 1)}
        for key, value in (runner.outputs or {}).get("log_vars", {}).items():
            record[key] = float(value)
        with open(os.path.join(runner.work_dir, self.filename), "a") as f:
            f.write(json.dumps(record) + "\n")


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """A tqdm progress bar over all training iterations (rank 0 only), showing the loss and ETA."""

    def __init__(self, disable: bool | None = None):
        self.disable = disable
        self.bar = None

    def before_run(self, runner):
        from tqdm.auto import tqdm
        rank, _ = get_dist_info()
        self.bar = tqdm(total=runner.max_iters, initial=runner.iter, desc="train", unit="it",
                        disable=self.disable if rank == 0 else True, dynamic_ncols=True, mininterval=1.0)

    def after_train_iter(self, runner):
        if self.bar is None:
            return
        log_vars = (runner.outputs or {}).get("log_vars", {})
        if "loss" in log_vars:
            self.bar.set_postfix(epoch=runner.epoch + 1, loss=f"{log_vars['loss']:.4f}", refresh=False)
        self.bar.update(1)

    def after_run(self, runner):
        if self.bar is not None:
            self.bar.close()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Reseed every RNG at each epoch start from ``seed + 1000 * epoch + rank`` (see module docstring)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def before_train_epoch(self, runner):
        rank, _ = get_dist_info()
        seed_everything(self.seed + 1000 * runner.epoch + rank)
