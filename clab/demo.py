"""The main job (``clab demo``): the synthetic video set and its statistics (DESIGN.md, "The embedded default").

Steps:
1. generate the synthetic set under ``--data`` (skipped when its manifest already records this seed and
   the default config, see ``clab.data.synthetic.is_current``);
2. print the statistics of its train and val splits and write them to ``<out>/dataset_stats.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from clab.data.stats import dataset_statistics, format_statistics
from clab.data.synthetic import SyntheticConfig, annotation_file, is_current, make_synthetic
from clab.io import atomic_write_json

__all__ = ["run_demo", "add_arguments", "run"]


def run_demo(out: str | Path = "results/demo", seed: int = 0, data: str | Path = "data/synthetic",
             config: SyntheticConfig | None = None, verbose: bool = True) -> dict:
    """Run the demo; returns ``{'data', 'generated', 'stats': {'train': ..., 'val': ...}}``."""
    cfg = config or SyntheticConfig()
    out, data = Path(out), Path(data)
    t0 = time.perf_counter()
    generated = not is_current(data, seed, cfg)
    if generated:
        make_synthetic(data, seed, cfg)
    if verbose:
        what = "generated" if generated else "reused (same seed and config)"
        print(f"synthetic set {what}: {data} ({time.perf_counter() - t0:.1f} s)")
    stats = {split: dataset_statistics(annotation_file(data, split)) for split in ("train", "val")}
    if verbose:
        for split, s in stats.items():
            print(f"\n== synthetic {split} ==")
            print(format_statistics(s))
    atomic_write_json(out / "dataset_stats.json", {"seed": seed, "data": str(data), **stats}, indent=2)
    return {"data": str(data), "generated": generated, "stats": stats}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/demo", help="run folder (default: results/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default: 0)")
    parser.add_argument("--data", default="data/synthetic", help="synthetic set folder (default: data/synthetic)")


def run(args: argparse.Namespace) -> int:
    try:
        run_demo(args.out, args.seed, args.data)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\nwrote {Path(args.out) / 'dataset_stats.json'}")
    return 0
