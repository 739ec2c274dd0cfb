"""How the detections of two ``bench_detector.py`` runs differ (e.g. 1 against 2 torch threads).

Reads the ``--out`` JSON of each run and compares one test case of each (same weights and clip: the script
seeds both), row by row and after matching each detection to the nearest box of the other run
(``bench_detector.detection_difference``).

Usage::

    python benchmarks/bench_detector.py --height 608 --width 1008 --threads 1 --cases test_troi_cached --out t1.json
    python benchmarks/bench_detector.py --height 608 --width 1008 --threads 2 --cases test_troi_cached --out t2.json
    python benchmarks/compare_detections.py t1.json t2.json --case test_troi_cached
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="bench_detector.py --out JSON of the first run")
    p.add_argument("b", help="bench_detector.py --out JSON of the second run")
    p.add_argument("--case", default="test_troi_cached", help="the case compared (default test_troi_cached)")
    p.add_argument("--case-b", help="the second run's case, if another (default: --case)")
    args = p.parse_args(argv)
    from bench_detector import detection_difference

    boxes = []
    for path, case in ((args.a, args.case), (args.b, args.case_b or args.case)):
        try:
            with open(path) as f:
                cases = json.load(f)["cases"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"compare_detections: {path}: not a bench_detector.py --out file ({exc})", file=sys.stderr)
            return 2
        if case not in cases or "boxes" not in cases[case]:
            print(f"compare_detections: {path} has no detections of case {case!r} (cases: {', '.join(cases)})",
                  file=sys.stderr)
            return 2
        boxes.append(cases[case]["boxes"])
    d = detection_difference(*boxes)
    print(f"{d['detections']} detections compared; (frame, class) counts that differ: {d['count_differs']}")
    print(f"row by row: max box difference {d['in_order_box']:.3g} px, max score difference {d['in_order_score']:.3g}")
    print(f"nearest boxes matched: max box difference {d['matched_box']:.3g} px, max score difference "
          f"{d['matched_score']:.3g}; {d['reordered']} detections matched to another row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
