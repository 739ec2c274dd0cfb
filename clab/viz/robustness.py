"""Robustness curves: mAP@50 against degradation severity (0 = clean), one panel per degradation, one line
per model: the mean over training seeds with its 95% Student t interval over seeds as a band."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import new_figure, save_figure

__all__ = ["robustness_curves", "seed_interval"]


def seed_interval(values) -> tuple[float, float]:
    """The 95% Student t interval of the mean of ``values`` (one per seed); a zero-width band for one seed."""
    import numpy as np

    from ..evaluation.stats import seed_summary
    values = [float(v) for v in values if v == v]
    if not values:
        return (np.nan, np.nan)
    s = seed_summary(values)
    return (s["mean"], s["mean"]) if s["n"] < 2 else (s["ci_low"], s["ci_high"])


def robustness_curves(table: pd.DataFrame, path: str | Path) -> Path:
    """``table``: ``degradation``, ``severity``, ``model``, (``seed``,) ``mAP@50`` (``clab.analysis.robustness.
    robustness_table``): several seeds per point give the mean line and a 95% interval band."""
    import seaborn as sns

    kinds = list(dict.fromkeys(table["degradation"]))
    ncols = min(3, len(kinds))
    nrows = (len(kinds) + ncols - 1) // ncols
    fig, axes = new_figure(nrows, ncols, panel=(3.8, 3.0), sharey=True)
    for ax, kind in zip(axes.flat, kinds):
        sns.lineplot(table[table["degradation"] == kind], x="severity", y="mAP@50", hue="model", marker="o", ax=ax,
                     errorbar=seed_interval)
        ax.set_title(kind)
        ax.set_xticks(sorted(table["severity"].unique()))
        ax.set_xlabel("severity (0 = clean)")
    for ax in list(axes.flat)[len(kinds):]:
        ax.set_visible(False)
    seeds = table["seed"].nunique() if "seed" in table else 1
    fig.suptitle(f"mAP@50 under degradations (mean of {seeds} seed(s); band: 95% t interval over seeds)")
    return save_figure(fig, path)
