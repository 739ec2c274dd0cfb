"""Loss-weight schedules: pure functions of training progress, and the mmcv hook that applies one (SPEC 1.8).

CLAB's dynamic loss weighting (DLW) scales the contrastive auxiliary loss by a weight that decays during
training. The published ``SimCLRHook`` sets, before every iteration with 0-based global index ``t``,

    λ_t = 0.005 · (1 − t / 25000)    for t in [0, 25000],

and stops writing afterwards, so the weight stays at 0 (up to float rounding: the hook computed
``0.005 - t * 2e-7``) for the rest of training; it does not reset per epoch. Here that is
``linear(start=0.005, end=0.0, length=25000)``, which returns exactly ``end`` for every ``t >= length``.

Every schedule is a callable ``f(t) -> float`` of the 0-based iteration ``t >= 0`` (a float is accepted),
built by a factory that validates its arguments and raises ``ValueError`` naming the parameter:

- ``constant(value)``
- ``linear(start, end, length)``: ``start + (end - start) * min(t, length) / length``
- ``cosine(start, end, length)``: ``end + (start - end) * (1 + cos(pi * min(t, length) / length)) / 2``
- ``step(values, milestones)``: ``values[k]`` where ``k`` is the number of milestones ``<= t``
- ``exponential(start, gamma, period=1)``: ``start * gamma ** (t / period)``
- ``warmup(schedule, warmup_length, warmup_start=0.0)``: linear from ``warmup_start`` to
  ``schedule(warmup_length)`` over ``t < warmup_length``, then ``schedule(t)`` (time is not shifted).

``build_schedule(cfg, max_iters=None)`` builds one from a config dict such as
``dict(type='linear', start=0.005, end=0.0, length=25000, unit='iter')``. With ``unit='fraction'`` the
lengths (``length``, ``milestones``, ``period``, ``warmup_length``) are fractions of the total number of
training iterations ``max_iters``, so a run with another batch size or epoch count keeps the paper's shape
(25,000 of about 49,000 iterations is a fraction of about 0.51, see SPEC 1.8).

``CabWeightHook`` (registered in mmcv ``HOOKS``) is a thin adapter: before each training iteration it
evaluates the schedule at ``runner.iter``, writes the value to ``model.auxiliary.loss_weight`` and to the
log buffer as ``w_cab``.
"""
from __future__ import annotations

import inspect
import math
import numbers
import warnings
from typing import Any, Callable, Sequence

from mmcv.parallel import is_module_wrapper
from mmcv.runner import HOOKS, Hook

Schedule = Callable[[float], float]

__all__ = [
    "Schedule", "constant", "linear", "cosine", "step", "exponential", "warmup", "build_schedule",
    "SCHEDULE_TYPES", "CabWeightHook",
]


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------
def _number(name: str, value: Any) -> float:
    """Return ``value`` as a float; raise ValueError unless it is a finite real number (bool rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"schedule parameter '{name}' must be a finite number, got {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    value = _number(name, value)
    if value <= 0:
        raise ValueError(f"schedule parameter '{name}' must be > 0, got {value!r}")
    return value


def _progress(t: Any) -> float:
    """Validate the training progress ``t`` (0-based iteration) passed to a schedule."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(float(t)) or t < 0:
        raise ValueError(f"schedule input t (0-based training iteration) must be a finite number >= 0, "
                         f"got {t!r}")
    return float(t)


# --------------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------------
def constant(value: float) -> Schedule:
    """``f(t) = value`` for every ``t``."""
    value = _number("value", value)

    def schedule(t: float) -> float:
        _progress(t)
        return value

    return schedule


def linear(start: float, end: float, length: float) -> Schedule:
    """Linear ramp from ``start`` at ``t = 0`` to ``end`` at ``t = length``, then constant ``end``.

    ``f(t) = start + (end - start) * min(t, length) / length``. The paper's DLW is
    ``linear(0.005, 0.0, 25000)``: 0.005 at t = 0, 0.0025 at 12,500 and 0.0 from 25,000 on.
    """
    start, end = _number("start", start), _number("end", end)
    length = _positive("length", length)

    def schedule(t: float) -> float:
        t = _progress(t)
        if t >= length:
            return end
        return start + (end - start) * (t / length)

    return schedule


def cosine(start: float, end: float, length: float) -> Schedule:
    """Half-cosine from ``start`` at ``t = 0`` to ``end`` at ``t = length``, then constant ``end``.

    ``f(t) = end + (start - end) * (1 + cos(pi * min(t, length) / length)) / 2``; at ``length / 2`` it is
    the mean of ``start`` and ``end``.
    """
    start, end = _number("start", start), _number("end", end)
    length = _positive("length", length)

    def schedule(t: float) -> float:
        t = _progress(t)
        if t >= length:
            return end
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t / length))

    return schedule


def step(values: Sequence[float], milestones: Sequence[float]) -> Schedule:
    """Piecewise constant: ``values[0]`` before ``milestones[0]``, ``values[k]`` from ``milestones[k-1]`` on.

    Args:
        values: ``len(milestones) + 1`` numbers.
        milestones: strictly increasing iterations ``> 0``; at ``t == milestones[k]`` the value is already
            ``values[k + 1]`` (like mmcv's step lr policy).
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"schedule parameter 'values' must be a non-empty list of numbers, got {values!r}")
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise ValueError(f"schedule parameter 'milestones' must be a list of numbers, got {milestones!r}")
    values = [_number(f"values[{i}]", v) for i, v in enumerate(values)]
    milestones = [_positive(f"milestones[{i}]", m) for i, m in enumerate(milestones)]
    if len(values) != len(milestones) + 1:
        raise ValueError(f"schedule parameter 'values' must have len(milestones) + 1 = {len(milestones) + 1} "
                         f"entries, got {len(values)}")
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"schedule parameter 'milestones' must be strictly increasing, got {milestones!r}")

    def schedule(t: float) -> float:
        t = _progress(t)
        return values[sum(1 for m in milestones if t >= m)]

    return schedule


def exponential(start: float, gamma: float, period: float = 1.0) -> Schedule:
    """Exponential decay (or growth): ``f(t) = start * gamma ** (t / period)``.

    Args:
        start: value at ``t = 0``.
        gamma: factor applied every ``period`` iterations, ``> 0``.
        period: iterations per factor ``gamma``, ``> 0``.
    """
    start = _number("start", start)
    gamma = _positive("gamma", gamma)
    period = _positive("period", period)

    def schedule(t: float) -> float:
        t = _progress(t)
        return start * gamma ** (t / period)

    return schedule


def warmup(schedule: Schedule, warmup_length: float, warmup_start: float = 0.0) -> Schedule:
    """Linear warm-up in front of any schedule.

    For ``t < warmup_length`` the value goes linearly from ``warmup_start`` (at t = 0) towards
    ``schedule(warmup_length)``; from ``warmup_length`` on it is ``schedule(t)``. The wrapped schedule's time
    is not shifted.
    """
    if not callable(schedule):
        raise ValueError(f"schedule parameter 'schedule' must be a callable f(t) -> float, got {schedule!r}")
    warmup_length = _positive("warmup_length", warmup_length)
    warmup_start = _number("warmup_start", warmup_start)
    target = float(schedule(warmup_length))

    def wrapped(t: float) -> float:
        t = _progress(t)
        if t >= warmup_length:
            return float(schedule(t))
        return warmup_start + (target - warmup_start) * (t / warmup_length)

    return wrapped


# --------------------------------------------------------------------------------------------------
# building from a config dict
# --------------------------------------------------------------------------------------------------
SCHEDULE_TYPES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "step": step,
    "exponential": exponential,
    "warmup": warmup,
}

_UNITS = ("iter", "fraction")
# parameters measured in training iterations; scaled by max_iters when unit='fraction'
_LENGTH_KEYS = ("length", "period", "warmup_length", "milestones")


def build_schedule(cfg: dict, max_iters: int | None = None) -> Schedule:
    """Build a schedule from a config dict.

    Args:
        cfg: ``dict(type=<one of SCHEDULE_TYPES>, unit='iter' | 'fraction', **parameters)``, e.g.
            ``dict(type='linear', start=0.005, end=0.0, length=25000)``. ``type='warmup'`` takes the wrapped
            schedule as a nested dict under ``schedule`` (which inherits the outer ``unit`` unless it sets its
            own). ``unit`` defaults to ``'iter'``.
        max_iters: total number of training iterations; required when a ``unit`` is ``'fraction'``, where
            ``length``, ``period``, ``warmup_length`` and every milestone are multiplied by it.

    Returns:
        a callable ``f(t) -> float`` of the 0-based iteration ``t``.

    Raises:
        ValueError: unknown type, unknown or missing parameter, bad value, or ``unit='fraction'`` without a
            positive integer ``max_iters``.
    """
    return _build(cfg, max_iters, default_unit="iter", where="schedule")


def _build(cfg: Any, max_iters: int | None, default_unit: str, where: str) -> Schedule:
    if not isinstance(cfg, dict):
        raise ValueError(f"{where} must be a dict with a 'type' key, got {cfg!r}")
    params = dict(cfg)
    kind = params.pop("type", None)
    if kind not in SCHEDULE_TYPES:
        raise ValueError(f"{where}: 'type' must be one of {sorted(SCHEDULE_TYPES)}, got {kind!r}")
    unit = params.pop("unit", default_unit)
    if unit not in _UNITS:
        raise ValueError(f"{where}: 'unit' must be one of {list(_UNITS)}, got {unit!r}")

    factory = SCHEDULE_TYPES[kind]
    signature = inspect.signature(factory)
    unknown = sorted(set(params) - set(signature.parameters))
    if unknown:
        raise ValueError(f"{where} (type={kind!r}): unknown parameter(s) {unknown}; expected some of "
                         f"{list(signature.parameters)} plus 'type' and 'unit'")
    missing = [name for name, p in signature.parameters.items()
               if p.default is inspect.Parameter.empty and name not in params]
    if missing:
        raise ValueError(f"{where} (type={kind!r}): missing parameter(s) {missing}")

    if kind == "warmup":
        params["schedule"] = _build(params["schedule"], max_iters, default_unit=unit,
                                    where=f"{where}.schedule")

    if unit == "fraction":
        if isinstance(max_iters, bool) or not isinstance(max_iters, numbers.Integral) or max_iters <= 0:
            raise ValueError(f"{where} (type={kind!r}) uses unit='fraction', which needs max_iters "
                             f"(a positive int, the total number of training iterations); got {max_iters!r}")
        for key in _LENGTH_KEYS:
            if key not in params:
                continue
            if key == "milestones":
                milestones = params[key]
                if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
                    raise ValueError(f"{where}: 'milestones' must be a list of numbers, got {milestones!r}")
                params[key] = [_number(f"milestones[{i}]", m) * max_iters for i, m in enumerate(milestones)]
            else:
                params[key] = _number(key, params[key]) * max_iters

    return factory(**params)


# --------------------------------------------------------------------------------------------------
# the mmcv hook
# --------------------------------------------------------------------------------------------------
@HOOKS.register_module()
class CabWeightHook(Hook):
    """Set the contrastive auxiliary branch's loss weight from a schedule before every training iteration.

    Config: ``custom_hooks = [dict(type='CabWeightHook', schedule=dict(type='linear', start=0.005, end=0.0,
    length=25000))]`` (the paper's DLW, SPEC 1.8).

    Before iteration ``t = runner.iter`` (0-based, global, not reset per epoch) it sets
    ``model.auxiliary.loss_weight = f(t)`` on the model unwrapped from DP/DDP wrappers and records ``w_cab``
    in ``runner.log_buffer`` so the logger hooks print it beside ``loss_cab``. A model without an
    ``auxiliary`` part is left alone, with one warning. ``unit='fraction'`` schedules use
    ``runner.max_iters``.

    Args:
        schedule: a schedule config for :func:`build_schedule`.

    The hook's priority is not an argument: mmcv reserves the ``priority`` attribute and takes it from the
    ``custom_hooks`` entry (``dict(type='CabWeightHook', schedule=..., priority='NORMAL')``, the published
    setting and mmcv's default) or from ``runner.register_hook(hook, priority)``.
    """

    def __init__(self, schedule: dict) -> None:
        # build once now so that a bad config fails before training starts
        _build(schedule, max_iters=1, default_unit="iter", where="CabWeightHook.schedule")
        self.schedule_cfg = dict(schedule)
        self._schedule: Schedule | None = None
        self._warned = False

    def _get_schedule(self, runner) -> Schedule:
        if self._schedule is None:
            self._schedule = build_schedule(self.schedule_cfg, max_iters=runner.max_iters)
        return self._schedule

    def before_run(self, runner) -> None:
        self._schedule = build_schedule(self.schedule_cfg, max_iters=runner.max_iters)

    def before_train_iter(self, runner) -> None:
        model = runner.model
        while is_module_wrapper(model):
            model = model.module
        auxiliary = getattr(model, "auxiliary", None)
        if auxiliary is None:
            if not self._warned:
                warnings.warn(f"CabWeightHook: the model ({type(model).__name__}) has no 'auxiliary' part; "
                              f"the hook does nothing", UserWarning, stacklevel=2)
                self._warned = True
            return
        weight = float(self._get_schedule(runner)(runner.iter))
        auxiliary.loss_weight = weight
        runner.log_buffer.update({"w_cab": weight})
