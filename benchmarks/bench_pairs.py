"""This tree against an earlier revision, in interleaved pairs of ``bench_detector.py`` runs: the mean time ratio
and its Student-t 95% interval.

On a shared machine the speed drifts (up to 1.9x within minutes on the 2-core CPU of benchmarks/README.md),
so two separate timings say little. Here each pair runs the same case once on each tree, back to back, in
alternating order (the baseline first in odd pairs, this tree first in even ones); the ratio of each pair
(this tree / baseline) sees nearly the same machine, and their mean over ``--pairs`` pairs comes with an
interval, as does their geometric mean (the t-interval of the log ratios). Both trees run this tree's
``bench_detector.py`` (copied into the other checkouts), so they are measured the same way; each runs its
own model code and configs. ``--revision`` measures a committed
revision from its own checkout instead of the working tree.

Usage::

    python benchmarks/bench_pairs.py --baseline d9613a6 --pairs 8 --out results/benchmarks/pairs.json -- \
        --height 608 --width 1008 --threads 2 --frames 3 --cases test_troi_cached

Everything after ``--`` goes to ``bench_detector.py``; ``--case-name`` picks the case whose ``per_frame_s``
(wall) and ``per_frame_cpu_s`` (process CPU) are compared (default: the first of ``--cases``). The
revisions' checkouts are temporary git worktrees, removed at the end.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_detector.py")


def parse_args(argv=None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="git revision to compare with")
    p.add_argument("--revision", help="git revision measured against it, from its own checkout (default: this "
                                      "working tree, which must then stay unchanged while the pairs run)")
    p.add_argument("--pairs", type=int, default=8, help="interleaved pairs of runs (>= 2)")
    p.add_argument("--case-name", help="the bench_detector case compared (default: the first of --cases)")
    p.add_argument("--out", help="write the runs and the summary as JSON to this path")
    args = p.parse_args(own)
    if args.pairs < 2:
        p.error("--pairs must be >= 2 (an interval needs two ratios)")
    if "--out" in bench_args:
        p.error("give --out before '--' (bench_pairs writes each run's JSON itself)")
    if args.case_name is None:
        cases = bench_args[bench_args.index("--cases") + 1] if "--cases" in bench_args else ""
        if not cases:
            p.error("give --cases after '--' or --case-name (which case's per-frame time to compare)")
        args.case_name = cases.split(",")[0]
    args.bench_args = bench_args
    return args


def _run(tree: str, script: str, bench_args: list[str], out: str) -> dict:
    """One bench_detector run of ``script`` with ``tree`` first on the import path; its JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, script, *bench_args, "--out", out], cwd=tree, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"bench_pairs: bench_detector.py failed in {tree} (exit {proc.returncode}):\n{tail}")
    with open(out) as f:
        return json.load(f)


def geometric_summary(ratios: list[float]) -> dict:
    """The geometric mean of positive ratios and its 95% interval: Student's t on their logarithms,
    mapped back. A ratio of times is summarised better on the log scale than by its arithmetic mean, which
    a few slow pairs pull up: there a pair at 2x and one at 0.5x cancel."""
    from clab.evaluation.stats import seed_summary
    if any(r <= 0 for r in ratios):
        raise ValueError("bench_pairs: time ratios must be positive")
    s = seed_summary([math.log(r) for r in ratios])
    return dict(mean=math.exp(s["mean"]), ci_low=math.exp(s["ci_low"]), ci_high=math.exp(s["ci_high"]), n=s["n"])


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    from clab.evaluation.stats import seed_summary
    from clab.io import atomic_write_json

    work = tempfile.mkdtemp(prefix="bench_pairs_")
    trees = {}
    try:
        for who, rev in (("baseline", args.baseline), ("this tree", args.revision)):
            if rev is None:
                trees[who] = (ROOT, BENCH)
                continue
            tree = os.path.join(work, who.replace(" ", "_"))
            made = subprocess.run(["git", "worktree", "add", "--detach", tree, rev], cwd=ROOT,
                                  capture_output=True, text=True)
            if made.returncode != 0:
                raise SystemExit(f"bench_pairs: {rev!r} is not a revision of this repository: "
                                 f"{made.stderr.strip()}")
            script = os.path.join(tree, "benchmarks", "_bench_current.py")
            os.makedirs(os.path.dirname(script), exist_ok=True)
            shutil.copyfile(BENCH, script)
            trees[who] = (tree, script)
        runs = []
        for i in range(args.pairs):
            order = ["baseline", "this tree"] if i % 2 == 0 else ["this tree", "baseline"]
            pair = {}
            for who in order:
                tree, script = trees[who]
                result = _run(tree, script, args.bench_args, os.path.join(work, f"{i}_{who[0]}.json"))
                case = result["cases"].get(args.case_name)
                if case is None:
                    raise SystemExit(f"bench_pairs: case {args.case_name!r} is not in bench_detector's output "
                                     f"(cases: {', '.join(result['cases'])})")
                pair[who] = dict(per_frame_s=case["per_frame_s"], per_frame_cpu_s=case["per_frame_cpu_s"],
                                 frame0_s=case.get("frame0_s"))
            pair["ratio"] = pair["this tree"]["per_frame_s"] / pair["baseline"]["per_frame_s"]
            pair["cpu_ratio"] = pair["this tree"]["per_frame_cpu_s"] / pair["baseline"]["per_frame_cpu_s"]
            runs.append(pair)
            print(f"pair {i + 1}/{args.pairs}: baseline {pair['baseline']['per_frame_s']:.2f} s, this tree "
                  f"{pair['this tree']['per_frame_s']:.2f} s a frame, ratio {pair['ratio']:.3f} "
                  f"(process CPU {pair['cpu_ratio']:.3f})", flush=True)
    finally:
        for tree, _ in trees.values():
            if tree != ROOT:
                subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    summary = {name: seed_summary([r[key] for r in runs]) for name, key in
               (("wall", "ratio"), ("process_cpu", "cpu_ratio"))}
    summary.update({f"{name}_geometric": geometric_summary([r[key] for r in runs]) for name, key in
                    (("wall", "ratio"), ("process_cpu", "cpu_ratio"))})
    measured = args.revision or "this tree"
    for name, s in summary.items():
        kind = "geometric mean" if name.endswith("_geometric") else "mean"
        print(f"{name.replace('_geometric', '')} ratio ({measured} / {args.baseline}): {kind} {s['mean']:.3f}, "
              f"95% interval {s['ci_low']:.3f} to {s['ci_high']:.3f}, {s['n']} pairs")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write_json(args.out, dict(baseline=args.baseline, revision=args.revision, case=args.case_name,
                                         bench_args=args.bench_args, pairs=runs, summary=summary), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
