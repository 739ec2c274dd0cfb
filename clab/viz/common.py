"""Figure plumbing shared by the plots: figures are built without pyplot (no global state, any backend),
styled with seaborn, written as PNG, and shown in a notebook from the written file."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure", "show"]


def new_figure(nrows: int = 1, ncols: int = 1, panel: tuple[float, float] = (4.2, 3.2), **kwargs):
    """``(figure, axes)`` with ``axes`` a 2-D array of ``nrows x ncols`` panels of size ``panel`` inches."""
    import seaborn as sns
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (PNG; parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def show(*paths: str | Path | None) -> None:
    """Display written figures in a notebook (``None`` entries are skipped; nothing happens outside IPython)."""
    try:
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover
        return
    for path in paths:
        if path is not None:
            display(Image(filename=str(path)))
