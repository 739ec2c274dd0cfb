"""benchmarks/bench_detector.detection_difference and benchmarks/compare_detections.py on hand-made runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_detector import detection_difference  # noqa: E402


def run(boxes):
    """One run's detections: 1 frame, 2 classes."""
    return [[boxes, [[5.0, 5.0, 9.0, 9.0, 0.5]]]]


A = [[0.0, 0.0, 10.0, 10.0, 0.30000], [50.0, 50.0, 90.0, 80.0, 0.29999]]


def test_tied_scores_in_another_order_are_matched():
    b = [A[1][:4] + [0.30000], A[0][:4] + [0.29999 + 1e-6]]  # the two swapped (their scores tie within 1e-5)
    d = detection_difference(run(A), run(b))
    assert d["detections"] == 3 and d["count_differs"] == 0
    assert d["in_order_box"] == 80.0           # row by row: a whole box apart
    assert d["matched_box"] == 0.0 and d["reordered"] == 2
    assert abs(d["matched_score"] - 1e-5) < 1e-9


def test_small_shifts_and_count_changes():
    b = [[x + 1e-3 for x in A[0][:4]] + [0.3], A[1]]
    d = detection_difference(run(A), run(b))
    assert d["reordered"] == 0 and abs(d["matched_box"] - 1e-3) < 1e-9 and d["in_order_box"] == d["matched_box"]
    d = detection_difference(run(A), run(A[:1]))
    assert d["count_differs"] == 1 and d["detections"] == 1


def test_compare_detections_cli(tmp_path):
    paths = []
    for name, boxes in (("a", A), ("b", [A[1], A[0]])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"cases": {"test_troi_cached": {"boxes": run(boxes)}}}))
        paths.append(str(path))
    script = os.path.join(ROOT, "benchmarks", "compare_detections.py")
    ok = subprocess.run([sys.executable, script, *paths], capture_output=True, text=True)
    assert ok.returncode == 0 and "2 detections matched to another row" in ok.stdout
    bad = subprocess.run([sys.executable, script, paths[0], paths[1], "--case", "test_troi_uncached"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "has no detections of case 'test_troi_uncached'" in bad.stderr
    assert "Traceback" not in bad.stderr
