"""Training curves from ``metrics.jsonl``: every loss, the learning rate, the CAB weight ``w_cab`` and the
unweighted contrastive loss ``nt_xent`` over iterations, one line per model (STYLE 4: the weight is plotted
beside its loss)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import new_figure, save_figure

__all__ = ["CURVE_KEYS", "training_curves"]

CURVE_KEYS = ("loss", "loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_cab", "nt_xent", "w_cab",
              "lr")


def training_curves(curves: pd.DataFrame, path: str | Path, smooth: int = 0) -> Path | None:
    """Plot ``curves`` (columns ``model``, ``iter`` and any of :data:`CURVE_KEYS`) to ``path``.

    ``smooth``: window of a centred rolling mean for the losses (0: about 5% of the iterations); raw values
    are drawn faintly underneath. Returns None (and draws nothing) when ``curves`` is empty.
    """
    if curves.empty:
        return None
    keys = [k for k in CURVE_KEYS if k in curves and curves[k].notna().any()]
    if not keys:
        raise ValueError("training_curves: no loss, lr or w_cab column to plot")
    ncols = 3 if len(keys) == 9 else 4
    nrows = (len(keys) + ncols - 1) // ncols
    fig, axes = new_figure(nrows, ncols, panel=(3.6, 2.8))
    palette = dict(zip(sorted(curves["model"].unique()), ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for ax, key in zip(axes.flat, keys):
        for model, frame in curves.groupby("model", sort=False):
            if key not in frame or frame[key].isna().all():
                continue
            y = frame[key]
            color = palette.get(model)
            if key.startswith("loss") or key == "nt_xent":
                window = smooth or max(1, len(frame) // 20)
                ax.plot(frame["iter"], y, color=color, alpha=0.25, linewidth=0.8)
                y = y.rolling(window, center=True, min_periods=1).mean()
            ax.plot(frame["iter"], y, color=color, label=model, linewidth=1.6)
        ax.set_title(key)
        ax.set_xlabel("iteration")
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    axes.flat[0].legend(title="model")
    fig.suptitle("training: losses (smoothed), learning rate and CAB weight")
    return save_figure(fig, path)
