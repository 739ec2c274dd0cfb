"""Robustness curves: mAP@50 against degradation severity (0 = clean), one panel per degradation, one line
per model."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import new_figure, save_figure

__all__ = ["robustness_curves"]


def robustness_curves(table: pd.DataFrame, path: str | Path) -> Path:
    """``table``: ``degradation``, ``severity``, ``model``, ``mAP@50`` (``clab.analysis.robustness.
    robustness_table``)."""
    import seaborn as sns

    kinds = list(dict.fromkeys(table["degradation"]))
    ncols = min(3, len(kinds))
    nrows = (len(kinds) + ncols - 1) // ncols
    fig, axes = new_figure(nrows, ncols, panel=(3.8, 3.0), sharey=True)
    for ax, kind in zip(axes.flat, kinds):
        sns.lineplot(table[table["degradation"] == kind], x="severity", y="mAP@50", hue="model", marker="o", ax=ax)
        ax.set_title(kind)
        ax.set_xticks(sorted(table["severity"].unique()))
        ax.set_xlabel("severity (0 = clean)")
    for ax in list(axes.flat)[len(kinds):]:
        ax.set_visible(False)
    fig.suptitle("mAP@50 under degradations")
    return save_figure(fig, path)
