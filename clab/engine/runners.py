"""``EpochBasedRunnerNoPause``: mmcv's epoch runner without its fixed pauses, for short CPU trainings.

mmcv's ``EpochBasedRunner`` sleeps 2 s at the start of every epoch (its comment: against a deadlock at the
epoch transition of data-loader workers) and 1 s before ``after_run``. A tiny synthetic training (6 epochs of
48 iterations) spent 13 s of about 100 s asleep (benchmarks/bench_tiny_train.py, "per epoch"). This runner
is the same runner with those pauses skipped when no data loader has worker processes; with workers it
keeps mmcv's behaviour exactly. Selected by config: ``runner = dict(type='EpochBasedRunnerNoPause', ...)``
(the tiny synthetic configs); registered in mmcv's ``RUNNERS`` when ``clab.engine`` is imported.
"""
from __future__ import annotations

import time

import mmcv.runner.epoch_based_runner as _epoch_based_runner
from mmcv.runner import RUNNERS, EpochBasedRunner

__all__ = ["EpochBasedRunnerNoPause"]


class _TimeWithoutSleep:
    """Stands in for the ``time`` module inside mmcv's runner module during a run: ``sleep`` does nothing,
    every other attribute is the real module's."""

    @staticmethod
    def sleep(seconds: float) -> None:
        return None

    def __getattr__(self, name: str):
        return getattr(time, name)


@RUNNERS.register_module()
class EpochBasedRunnerNoPause(EpochBasedRunner):
    """``EpochBasedRunner`` whose ``run`` skips mmcv's pauses when every loader runs in the main process
    (``num_workers == 0``). Same arguments, hooks, checkpoints and resume as ``EpochBasedRunner``."""

    def run(self, data_loaders, workflow, max_epochs=None, **kwargs):
        if any(getattr(loader, "num_workers", 0) for loader in data_loaders):
            return super().run(data_loaders, workflow, max_epochs, **kwargs)
        real_time = _epoch_based_runner.time
        _epoch_based_runner.time = _TimeWithoutSleep()
        try:
            return super().run(data_loaders, workflow, max_epochs, **kwargs)
        finally:
            _epoch_based_runner.time = real_time
