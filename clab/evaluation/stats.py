"""Statistics over training seeds: mean, spread and Student-t confidence intervals (issue 10, point 1).

A run of the kit trains every model once per seed. :func:`seed_summary` describes one model's metric over
its seeds; :func:`paired_seed_difference` describes the gain of one model over another when both were
trained with the same seeds, pairing the runs seed by seed (the seed fixes data order, initialisation and
sampling, so the paired difference removes that shared part of the noise).

Both use the Student t interval ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` with the sample standard deviation
``s`` (``ddof=1``). With a single value the spread is unknown: ``std``, ``ci_low`` and ``ci_high`` are NaN.
Non-finite values (a run that diverged and reported NaN) are rejected rather than silently dropped.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["t_quantile", "seed_summary", "paired_seed_difference"]


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``dof`` degrees of freedom (scipy)."""
    from scipy.stats import t as student_t
    return float(student_t.ppf(p, dof))


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return confidence


def _as_values(values: Sequence[float], name: str) -> np.ndarray:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    try:
        array = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold numbers, got {list(values)!r}") from None
    if array.size == 0:
        raise ValueError(f"{name} is empty: need at least one value")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}] is {float(array[bad[0]])}: every value must be finite")
    return array


def seed_summary(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and Student-t confidence interval of one metric over seeds.

    Args:
        values: the metric of each seed (e.g. ``bbox_mAP_50`` of 3 training runs), finite numbers.
        confidence: coverage of the interval (0.95: a 95% interval).

    Returns:
        ``{'mean', 'std', 'n', 'ci_low', 'ci_high'}``: ``std`` with ``ddof=1``; the interval is
        ``mean ± t((1 + confidence) / 2, n - 1) · std / sqrt(n)``. For ``n == 1`` ``std`` and the interval
        are NaN; identical values give ``std == 0`` and an interval of zero width.
    """
    confidence = _check_confidence(confidence)
    x = _as_values(values, "values")
    n = int(x.size)
    mean = float(np.mean(x))
    if n == 1:
        return dict(mean=mean, std=math.nan, n=1, ci_low=math.nan, ci_high=math.nan)
    std = float(np.std(x, ddof=1))
    half = t_quantile((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    return dict(mean=mean, std=std, n=n, ci_low=mean - half, ci_high=mean + half)


def paired_seed_difference(a: Mapping[int, float], b: Mapping[int, float],
                           confidence: float = 0.95) -> dict[str, Any]:
    """``b - a`` paired by seed, with its Student-t confidence interval.

    Args:
        a: ``{seed: metric}`` of the reference model (e.g. the baseline).
        b: ``{seed: metric}`` of the compared model (e.g. CLAB); seeds present in only one of the two are
            left out.
        confidence: coverage of the interval.

    Returns:
        :func:`seed_summary` of the per-seed differences ``b[s] - a[s]`` (keys ``mean, std, n, ci_low,
        ci_high``), plus ``seeds`` (the paired seeds, sorted) and ``excludes_zero`` (True when the whole
        interval is above or below 0; False when it contains 0 or is NaN, i.e. with a single seed).
    """
    for name, mapping in (("a", a), ("b", b)):
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{name} must be a mapping {{seed: value}}, got {type(mapping).__name__}")
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed in common: a has seeds {sorted(a)}, b has seeds {sorted(b)}")
    diffs = [float(b[s]) - float(a[s]) for s in seeds]
    summary = seed_summary(diffs, confidence)
    low, high = summary["ci_low"], summary["ci_high"]
    excludes_zero = bool(np.isfinite(low) and np.isfinite(high) and (low > 0.0 or high < 0.0))
    return dict(summary, seeds=[int(s) if isinstance(s, (int, np.integer)) else s for s in seeds],
                excludes_zero=excludes_zero)
