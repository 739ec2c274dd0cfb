"""Keeping a config's recipe at another GPU count: global batch, linear lr scaling, gradient accumulation.

A paper config states the global batch its recipe was tuned for, as mmdet 2.28 does:
``auto_scale_lr = dict(enable=False, base_batch_size=16)``. A run's global batch is

    world_size x data.samples_per_gpu x accumulate

(processes x clips per process x iterations whose gradients are summed before one optimizer step).

* ``--accumulate K`` (mmcv's ``GradientCumulativeOptimizerHook``, or its fp16 variant under ``--amp``)
  sums the gradients of K iterations, each scaled by 1/K, before one step: 2 GPUs x 2 clips x 4 steps is
  the paper's 16. The lr warmup, counted in iterations, is stretched by K so that it covers the same
  optimizer steps; epochs (the lr steps) are unchanged.
* ``--auto-scale-lr`` multiplies ``optimizer.lr`` by ``global batch / base_batch_size`` (the linear rule,
  mmdet's convention).
* Either way, a run whose global batch differs from the config's gets a warning at start that says what
  changes. The CAB weight schedule of the paper configs is in ``unit='fraction'`` of training, so it keeps
  its shape at any batch (SPEC 1.8).
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError


@dataclass
class BatchPlan:
    """What a run does about its global batch (see the module docstring).

    Attributes:
        world_size, samples_per_gpu, accumulate: the three factors of ``global_batch``.
        base_batch: the config's ``auto_scale_lr.base_batch_size``, or None when it states none.
        lr: the optimizer lr this run uses (scaled by ``global_batch / base_batch`` with ``auto_scale_lr``).
        warmup_iters: the lr warmup length in iterations (``lr_config.warmup_iters * accumulate``), or None.
        warning: the message to show at start, or None when the global batch is the config's.
    """

    world_size: int
    samples_per_gpu: int
    accumulate: int
    base_batch: int | None
    lr: float
    warmup_iters: int | None
    warning: str | None

    @property
    def global_batch(self) -> int:
        """world_size x samples_per_gpu x accumulate."""
        return self.world_size * self.samples_per_gpu * self.accumulate


def base_batch_size(cfg) -> int | None:
    """The global batch ``cfg`` states (``auto_scale_lr.base_batch_size``), or None."""
    spec = cfg.get("auto_scale_lr") or {}
    value = spec.get("base_batch_size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{getattr(cfg, 'filename', 'config')}: auto_scale_lr.base_batch_size must be an "
                          f"integer >= 1, got {value!r}")
    return value


def plan_batch(cfg, world_size: int, accumulate: int = 1, auto_scale_lr: bool = False) -> BatchPlan:
    """The :class:`BatchPlan` of running ``cfg`` on ``world_size`` processes (pure: ``cfg`` is not changed).

    ``auto_scale_lr`` (``--auto-scale-lr``) or the config's ``auto_scale_lr.enable`` turn the linear rule on.
    """
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ConfigError(f"--accumulate: expected an integer >= 1, got {accumulate!r}")
    samples = int(cfg.data.samples_per_gpu)
    base = base_batch_size(cfg)
    batch = world_size * samples * accumulate
    lr = float(cfg.optimizer.lr)
    auto_scale_lr = auto_scale_lr or bool((cfg.get("auto_scale_lr") or {}).get("enable", False))
    if auto_scale_lr:
        if base is None:
            raise ConfigError(f"--auto-scale-lr: {getattr(cfg, 'filename', 'the config')} states no global "
                              f"batch; add auto_scale_lr = dict(base_batch_size=N)")
        lr = lr * batch / base
    warmup = (cfg.get("lr_config") or {}).get("warmup_iters")
    warmup = int(warmup) * accumulate if warmup is not None else None
    warning = None
    if base is not None and batch != base:
        what = (f"global batch {batch} ({world_size} process(es) x {samples} clip(s) x {accumulate} "
                f"accumulated step(s)) differs from the config's {base} (auto_scale_lr.base_batch_size)")
        if auto_scale_lr:
            todo = f"lr scaled linearly from {float(cfg.optimizer.lr):g} to {lr:g}"
        else:
            fits = base % (world_size * samples) == 0
            hint = f"--accumulate {base // (world_size * samples)}" if fits else "--accumulate"
            todo = (f"lr kept at {lr:g}, which was tuned for {base}; use {hint} to keep the batch, or "
                    f"--auto-scale-lr for lr {lr * batch / base:g}")
        warning = (f"{what}: {todo}. Schedules counted in iterations change their meaning (the CAB weight "
                   f"schedule of the paper configs is in fractions of training and keeps its shape).")
    return BatchPlan(world_size, samples, accumulate, base, lr, warmup, warning)


def apply_plan(cfg, plan: BatchPlan) -> None:
    """Write ``plan``'s lr and warmup into ``cfg`` (in place)."""
    cfg.optimizer.lr = plan.lr
    if plan.warmup_iters is not None:
        cfg.lr_config.warmup_iters = plan.warmup_iters


def optimizer_hook(cfg, accumulate: int = 1, amp: bool = False, distributed: bool = False):
    """The optimizer hook config of a run: plain, fp16 with dynamic loss scale (``amp``), accumulating over
    ``accumulate`` iterations, or both. Returns a dict for ``runner.register_training_hooks``."""
    base = dict(cfg.get("optimizer_config") or {})
    base.pop("type", None)
    if amp:
        base.update(loss_scale="dynamic", distributed=distributed)
    if accumulate > 1:
        kind = "GradientCumulativeFp16OptimizerHook" if amp else "GradientCumulativeOptimizerHook"
        return dict(type=kind, cumulative_iters=accumulate, **base)
    return dict(type="Fp16OptimizerHook" if amp else "OptimizerHook", **base)
