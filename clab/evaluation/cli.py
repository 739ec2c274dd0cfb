"""``clab evaluate ANN_JSON RESULTS_JSON --out DIR``: score any detector's COCO results with every protocol.

Reads a CocoVID (or COCO) annotation json and a COCO results json (``[{image_id, category_id, bbox: [x, y,
w, h], score}, ...]``, e.g. the ``coco_results.json`` of ``clab test``, or MEGA's / YOLOV's detections
converted to it) and writes into ``DIR``:

- ``metrics.json``: ``bbox_mAP_50`` (COCO, the headline), ``vid_mAP_50`` (ILSVRC devkit),
  ``vid_mAP_50_slow / medium / fast`` (FGFA's split), AP per class for each, the COCO-style split under
  ``speed``, and the bootstrap interval over videos under ``bootstrap``
  (see :mod:`clab.evaluation.evaluate`);
- ``matches.npz``: the match table, to bootstrap a paired difference with another model's table later
  (:func:`clab.evaluation.bootstrap.load_match_table`, :func:`~clab.evaluation.bootstrap.video_bootstrap`).

An image id missing from the annotations, an unknown category id or a malformed file stops the command
with one line naming the file and the entry.
"""
from __future__ import annotations

import argparse
import os

__all__ = ["add_arguments", "run", "evaluate_files"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ann_json", help="CocoVID / COCO annotation json (ground truth)")
    parser.add_argument("results_json", help="COCO results json: list of {image_id, category_id, bbox, score}")
    parser.add_argument("--out", required=True, help="output folder (metrics.json, matches.npz)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates over videos (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap replicates")
    parser.add_argument("--confidence", type=float, default=0.95, help="coverage of the intervals")


def evaluate_files(ann_json: str | os.PathLike, results_json: str | os.PathLike, out_dir: str | os.PathLike,
                   n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Load, check, evaluate and write ``metrics.json`` (and ``matches.npz``) into ``out_dir``."""
    from ..io import atomic_write_json
    from .coco_metrics import load_coco
    from .evaluate import evaluate_entries, load_result_entries

    if n_boot < 0:
        raise ValueError(f"--n-boot must be >= 0, got {n_boot}")
    coco = load_coco(ann_json)
    entries = load_result_entries(results_json, coco, ann_json)
    os.makedirs(out_dir, exist_ok=True)
    metrics = evaluate_entries(coco, entries, n_boot=n_boot, seed=seed, confidence=confidence,
                               matches_file=os.path.join(out_dir, "matches.npz") if n_boot else None)
    metrics["ann_file"] = os.fspath(ann_json)
    metrics["results_file"] = os.fspath(results_json)
    atomic_write_json(os.path.join(out_dir, "metrics.json"), metrics, indent=1)
    return metrics


def run(args: argparse.Namespace) -> int:
    metrics = evaluate_files(args.ann_json, args.results_json, args.out, args.n_boot, args.seed,
                             args.confidence)
    line = f"bbox_mAP_50 = {metrics['bbox_mAP_50']:.4f}  vid_mAP_50 = {metrics['vid_mAP_50']:.4f}"
    line += "  slow/medium/fast = " + " / ".join(f"{metrics[f'vid_mAP_50_{r}']:.4f}"
                                                 for r in ("slow", "medium", "fast"))
    boot = metrics.get("bootstrap")
    if boot:
        line += f"  (bbox_mAP_50 {100 * boot['confidence']:g}% CI {boot['ci_low']:.4f}..{boot['ci_high']:.4f})"
    print(f"{line}  -> {args.out}")
    return 0
