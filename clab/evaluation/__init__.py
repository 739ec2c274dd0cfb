"""Evaluation of per-frame detections (SPEC 4; issue 10): COCO box metrics as mmdet computes them
(``bbox_mAP_50``, the headline, and per-class AP), the ILSVRC VID devkit protocol (``vid_mAP_50``), FGFA's
motion split (``vid_mAP_50_slow/medium/fast``) and the kit's COCO-style split, the bootstrap over videos
and the statistics over seeds. :func:`evaluate_entries` computes all of them (``clab test``,
``clab evaluate``)."""
from __future__ import annotations

from .bootstrap import MatchTable, load_match_table, match_detections, save_match_table, video_bootstrap
from .coco_metrics import coco_bbox_metrics, results_to_coco_json
from .evaluate import evaluate_entries
from .speed_split import SPEED_RANGES, motion_iou_per_annotation, speed_of, speed_split_metrics
from .stats import paired_seed_difference, seed_summary

__all__ = ["coco_bbox_metrics", "results_to_coco_json", "SPEED_RANGES", "motion_iou_per_annotation",
           "speed_of", "speed_split_metrics", "MatchTable", "match_detections", "video_bootstrap",
           "save_match_table", "load_match_table", "evaluate_entries", "seed_summary", "paired_seed_difference"]
