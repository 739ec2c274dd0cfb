"""Bar charts of test results: AP@50 per class, mAP@50 per motion speed, and the ablation grid."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import new_figure, save_figure

__all__ = ["per_class_ap", "speed_map", "ablation_plot"]


def per_class_ap(per_class: pd.DataFrame, path: str | Path) -> Path:
    """Grouped bars of AP@50 (rows of ``per_class``: classes; columns: models)."""
    import seaborn as sns

    long = per_class.reset_index().melt(id_vars=per_class.index.name or "index", var_name="model",
                                        value_name="AP@50")
    long = long.rename(columns={per_class.index.name or "index": "class"})
    fig, axes = new_figure(1, 1, panel=(max(5.0, 0.55 * len(per_class) + 2), 3.4))
    ax = axes[0, 0]
    sns.barplot(long, x="class", y="AP@50", hue="model", ax=ax)
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=45)
    ax.set_title("AP@50 per class")
    return save_figure(fig, path)


def speed_map(main: pd.DataFrame, path: str | Path) -> Path:
    """mAP@50 overall and for slow/medium/fast objects (``main``: rows models, columns ``mAP@50`` and
    ``mAP@50 <speed>``), one bar per model."""
    import seaborn as sns

    cols = [c for c in ("mAP@50", "mAP@50 slow", "mAP@50 medium", "mAP@50 fast") if c in main]
    long = main[cols].reset_index().melt(id_vars="model", var_name="objects", value_name="mAP@50 ")
    long["objects"] = long["objects"].str.replace("mAP@50 ", "").str.replace("mAP@50", "all")
    long = long[long["mAP@50 "] >= 0]  # -1: no object of that speed
    fig, axes = new_figure(1, 1, panel=(5.5, 3.4))
    ax = axes[0, 0]
    sns.barplot(long, x="objects", y="mAP@50 ", hue="model", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mAP@50")
    ax.set_title("mAP@50 by object speed (FGFA motion IoU)")
    return save_figure(fig, path)


def ablation_plot(table: pd.DataFrame, path: str | Path) -> Path:
    """One panel per factor: mAP@50 of each value (default value in a darker colour; the mean over seeds, with
    its 95% interval over seeds as an error bar when there are several), with the branch-off (baseline) level
    as a dashed line. ``table`` from ``clab.analysis.ablation.ablation_table``."""
    factors = [f for f in dict.fromkeys(table["factor"]) if f != "branch"] or ["branch"]
    off = table[(table["factor"] == "branch") & (table["value"] == "off")]["mAP@50"]
    fig, axes = new_figure(1, len(factors), panel=(3.6, 3.2), sharey=True)
    for ax, factor in zip(axes[0], factors):
        rows = table[table["factor"] == factor]
        colors = ["tab:orange" if d else "tab:blue" for d in rows["default"]]
        yerr = None
        if "95% CI low" in rows and rows["95% CI low"].notna().any():
            low = (rows["mAP@50"] - rows["95% CI low"]).fillna(0).clip(lower=0)
            high = (rows["95% CI high"] - rows["mAP@50"]).fillna(0).clip(lower=0)
            yerr = [low.to_numpy(), high.to_numpy()]
        ax.bar(rows["value"].astype(str), rows["mAP@50"], color=colors, yerr=yerr, capsize=3 if yerr else 0)
        if len(off) and factor != "branch":
            ax.axhline(float(off.iloc[0]), color="k", linestyle="--", linewidth=1, label="branch off")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(factor)
        ax.set_xlabel("value")
        ax.set_ylabel("mAP@50")
    seeds = int(table["seeds"].max()) if "seeds" in table else 1
    fig.suptitle("ablations, one factor at a time (orange: the config's default"
                 + (f"; mean of {seeds} seeds, bars: 95% t interval)" if seeds > 1 else ")"))
    return save_figure(fig, path)
