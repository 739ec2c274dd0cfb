"""t-SNE scatter plots: rows are feature sets (each model's pooled backbone features, CLAB's CAB embedding),
columns colour the same points by video, by class of the largest object and by degradation."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import new_figure, save_figure

__all__ = ["tsne_grid"]


def tsne_grid(points: pd.DataFrame, path: str | Path, scores: pd.DataFrame | None = None) -> Path:
    """``points``: ``features``, ``x``, ``y``, ``video``, ``class``, ``degradation``
    (``clab.analysis.embeddings.tsne_frame``); ``scores``: the silhouette table, written into the titles."""
    import seaborn as sns

    sets = list(dict.fromkeys(points["features"]))
    labels = ("video", "class", "degradation")
    fig, axes = new_figure(len(sets), len(labels), panel=(3.8, 3.4))
    for row, name in zip(axes, sets):
        sub = points[points["features"] == name]
        for ax, label in zip(row, labels):
            many = sub[label].nunique() > 10
            sns.scatterplot(sub, x="x", y="y", hue=label, style="degradation" if label != "degradation" else None,
                            s=18, ax=ax, legend=not many, palette="tab20" if many else "tab10")
            title = f"{name}: by {label}"
            if scores is not None and name in scores.index:
                title += f"\nsilhouette {scores.loc[name, f'by {label}']:.3f}"
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("")
            ax.set_ylabel("")
            if ax.get_legend() is not None:
                ax.legend(fontsize=6, markerscale=0.6, loc="best")
    fig.suptitle("t-SNE of frame features (marker style: clean / degraded)")
    return save_figure(fig, path)
