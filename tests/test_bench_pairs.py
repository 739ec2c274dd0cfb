"""benchmarks/bench_pairs.geometric_summary: the geometric mean of time ratios and its log-scale interval."""
from __future__ import annotations

import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_pairs import geometric_summary  # noqa: E402


def test_reciprocal_ratios_cancel_and_the_interval_is_symmetric_in_log():
    s = geometric_summary([2.0, 0.5, 2.0, 0.5])
    assert s["n"] == 4 and s["mean"] == pytest.approx(1.0)
    assert s["ci_low"] < 1.0 < s["ci_high"]
    assert math.log(s["ci_high"]) == pytest.approx(-math.log(s["ci_low"]))


def test_the_geometric_mean_is_below_the_arithmetic_one_and_the_interval_follows_the_t_quantile():
    ratios = [0.36, 0.72, 0.52, 0.58, 0.46, 0.40]
    s = geometric_summary(ratios)
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / len(logs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    half = 2.5706 * sd / math.sqrt(len(logs))  # t(0.975, 5)
    assert s["mean"] == pytest.approx(math.exp(mean)) and s["mean"] < sum(ratios) / len(ratios)
    assert s["ci_low"] == pytest.approx(math.exp(mean - half), rel=1e-4)
    assert s["ci_high"] == pytest.approx(math.exp(mean + half), rel=1e-4)


def test_a_ratio_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="must be positive"):
        geometric_summary([0.5, 0.0])
