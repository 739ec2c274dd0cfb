"""Result tables as files: every table a notebook shows is written as CSV (for programs) and Markdown (for the
run README and for people), and numbers in JSON are made standard (NaN -> null)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_text

__all__ = ["to_markdown", "write_table", "clean_json"]


def _cell(value: Any, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4f", index: bool = True) -> str:
    """A GitHub Markdown table of ``df`` (NaN/None shown as ``-``; floats formatted with ``floatfmt``)."""
    frame = df.reset_index() if index and not isinstance(df.index, pd.RangeIndex) else df
    header = [str(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, tables_dir: str | Path, name: str, floatfmt: str = ".4f",
                title: str | None = None) -> tuple[Path, Path]:
    """Write ``<tables_dir>/<name>.csv`` and ``<name>.md`` (atomically); returns both paths.

    ``title`` (optional) becomes a line of text above the Markdown table (a caption, e.g. what a column means).
    """
    tables_dir = Path(tables_dir)
    csv_path, md_path = tables_dir / f"{name}.csv", tables_dir / f"{name}.md"
    frame = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    atomic_write_text(csv_path, frame.to_csv(index=False))
    text = to_markdown(df, floatfmt)
    atomic_write_text(md_path, (f"{title}\n\n" if title else "") + text)
    return csv_path, md_path


def clean_json(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None and numpy scalars/tuples made plain (standard JSON)."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
