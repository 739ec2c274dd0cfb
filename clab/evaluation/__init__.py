"""Evaluation of per-frame detections (SPEC 4): COCO box metrics as mmdet computes them (``bbox_mAP_50``
and per-class AP) and the FGFA-style motion-speed split (slow / medium / fast mAP@50)."""
from __future__ import annotations

from .coco_metrics import coco_bbox_metrics, results_to_coco_json
from .speed_split import SPEED_RANGES, motion_iou_per_annotation, speed_of, speed_split_metrics

__all__ = ["coco_bbox_metrics", "results_to_coco_json", "SPEED_RANGES", "motion_iou_per_annotation",
           "speed_of", "speed_split_metrics"]
