"""The test-time backbone and neck at the paper's size with and without the batch-norm fold, in one process.

The R-50-DC5 backbone and neck at ``--height`` x ``--width`` (channels-last, as at test time) with the
test-time batch-norm fold (``SELSA.extract_feat``, ``test_cfg.fold_batchnorm``) and without it. The batch
norms get random statistics first (at their initial statistics the fold is nearly a no-op numerically).
Reports the largest difference of the neck output, relative to its largest value.

Each repeat runs both forms back to back, alternating which goes first; reported: the median of each and
the mean ratio of the repeats with its Student-t 95% interval.

Usage::

    python benchmarks/bench_fold.py --threads 2 --repeats 9
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=608)
    p.add_argument("--width", type=int, default=1008)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    if args.repeats < 2:
        p.error("--repeats must be >= 2")
    return args


def _pairs(first, second, repeats: int) -> dict:
    """Interleaved timings of two callables: medians, the mean ratio second / first and its 95% t-interval."""
    from clab.evaluation.stats import seed_summary
    times = {"first": [], "second": []}
    for i in range(repeats):
        order = (("first", first), ("second", second)) if i % 2 == 0 else (("second", second), ("first", first))
        for name, fn in order:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ratios = [b / a for a, b in zip(times["first"], times["second"])]
    s = seed_summary(ratios)
    return dict(first_median_s=statistics.median(times["first"]), second_median_s=statistics.median(times["second"]),
                ratio_mean=s["mean"], ratio_ci95=(s["ci_low"], s["ci_high"]))


def backbone_part(args) -> dict:
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    import bench_detector as bd

    model = bd._build(False, True, 50, None).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.detector.backbone.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.3)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    hp, wp = math.ceil(args.height / 16) * 16, math.ceil(args.width / 16) * 16
    img = torch.randn(1, 3, hp, wp, generator=g)

    def run(fold: bool):
        model.fold_batchnorm = fold
        with torch.no_grad():
            return model.extract_feat(img)[0][0]

    plain, folded = run(False), run(True)  # (also builds the folded copies before timing)
    out = _pairs(lambda: run(False), lambda: run(True), args.repeats)
    out.update(folded_norms=model._folded.folded,
               max_relative_difference=((folded - plain).abs().max() / plain.abs().max()).item())
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    sys.path.insert(0, ROOT)
    import clab  # noqa: F401

    if args.threads:
        torch.set_num_threads(args.threads)
    r = backbone_part(args)
    lo, hi = r["ratio_ci95"]
    print(f"backbone + neck at {args.height}x{args.width}: unfolded {r['first_median_s']:.4f} s, folded "
          f"{r['second_median_s']:.4f} s (medians of {args.repeats}); folded / unfolded {r['ratio_mean']:.3f} "
          f"(95% t {lo:.3f} to {hi:.3f}); {r['folded_norms']} batch norms folded; largest output difference "
          f"{r['max_relative_difference']:.2e} of the largest value", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
