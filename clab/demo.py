"""The main job, ``clab demo``: the six notebooks of ``papermill_params/demo.yaml`` (DESIGN.md, "The embedded
default: a synthetic video set").

It is ``clab reproduce papermill_params/demo.yaml`` with three conveniences: ``--out results/demo`` names the
run folder (RESULTS_DIR and RUN_NAME), ``--seed`` sets SEED (the synthetic set and the degradations; the
training seeds are demo.yaml's SEEDS) and ``--data`` the synthetic set's folder (DATA_ROOT). On a CPU it
generates the synthetic set, trains the TRoI baseline and CLAB once per training seed (in parallel
processes), evaluates every run, runs the ablation summary, the t-SNE of frame features and the robustness
sweep, and writes ``<out>/README.md`` with the tables (mean and 95% interval over seeds, the paired gain),
the sentence saying what the gain's interval supports, and the figures. A second run on the same checkout
skips what is done with the same parameters and code (see :mod:`clab.runner`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .params import NOTEBOOKS
from .runner import REPO_ROOT, NotebookError, reproduce

__all__ = ["DEMO_PARAMETERS", "demo_overrides", "run_demo", "add_arguments", "run"]

#: the parameter file of the main job
DEMO_PARAMETERS = REPO_ROOT / "papermill_params" / "demo.yaml"


def demo_overrides(out: str | Path = "results/demo", seed: int | None = None, data: str | None = None
                   ) -> tuple[list[str], str]:
    """``(--set overrides, --results-dir)`` of ``clab demo --out OUT [--seed S] [--data D]``: the run folder
    ``out`` is RESULTS_DIR/RUN_NAME; ``seed``/``data`` override SEED/DATA_ROOT of ``demo.yaml`` when given."""
    out = Path(out)
    overrides = [f"RUN_NAME={out.name}"]
    if seed is not None:
        overrides.append(f"SEED={int(seed)}")
    if data is not None:
        overrides.append(f"DATA_ROOT={data}")
    return overrides, str(out.parent)


def run_demo(out: str | Path = "results/demo", seed: int | None = None, data: str | None = None,
             only: list[str] | None = None, force: bool = False, timeout: int | None = None,
             log_output: bool = False) -> Path:
    """Run the demo notebooks into ``out`` (see :func:`demo_overrides`); returns the run folder."""
    overrides, results_dir = demo_overrides(out, seed, data)
    return reproduce(DEMO_PARAMETERS, only, results_dir, force, overrides, timeout, log_output)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/demo", help="run folder (default: results/demo)")
    parser.add_argument("--seed", type=int, default=None,
                        help="SEED, the synthetic set's and the degradations' (default: demo.yaml's, 0)")
    parser.add_argument("--data", default=None, help="synthetic set folder, DATA_ROOT (default: demo.yaml's)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", choices=NOTEBOOKS,
                        help="run only these notebooks")
    parser.add_argument("--force", action="store_true", help="run notebooks even if done with the same parameters")
    parser.add_argument("--timeout", type=int, default=None, help="seconds allowed per notebook cell")
    parser.add_argument("--log-output", action="store_true", help="also print the notebooks' output here")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        run_dir = run_demo(args.out, args.seed, args.data, args.only, args.force, args.timeout, args.log_output)
    except (ValueError, FileNotFoundError, NotebookError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"demo finished in {time.perf_counter() - t0:.0f} s: {run_dir / 'README.md'}")
    return 0
