"""Motion-speed split of mAP@50 (slow / medium / fast), after FGFA (Zhu et al. 2017; SPEC 4).

**Motion IoU** comes from :func:`clab.data.stats.motion_iou_per_annotation`: the mean IoU between a
ground-truth box and the boxes of the same object (same ``video_id`` and ``instance_id``) in the frames
within ±10 frames where that object is annotated; 1.0 (slow) for an object with no annotated neighbour, the
rule FGFA's ground-truth table agrees with (evidence in :mod:`clab.evaluation.fgfa_motion`); continuous IoU
(no +1 pixel).

**Ranges** (:func:`clab.data.stats.motion_class`): ``fast = [0, 0.7)``, ``medium = [0.7, 0.9]``,
``slow = (0.9, 1]``: a partition, so each object is in exactly one range. FGFA uses closed intervals
``[0, 0.7]``, ``[0.7, 0.9]``, ``[0.9, 1]``, so a motion IoU of exactly 0.7 or 0.9 counts in two ranges there;
nothing else differs.

**AP per range.** COCOeval's decisions (computed from arrays by :mod:`clab.evaluation.coco_match`) at IoU
0.5 (area 'all', ``maxDets`` 1000, 101-point AP, mean over the classes that have ground truth in the
range), with every ground truth *outside* the range marked ignored: a detection matched to an ignored
object is neither TP nor FP, and ignored objects do not count in the recall denominator. The 'all' range
ignores nothing and equals ``bbox_mAP_50`` of :func:`clab.evaluation.coco_metrics.coco_bbox_metrics`
(unrounded).

This is the kit's COCO-style split (``metrics['speed']``). The split with FGFA's own protocol, comparable
digit for digit with published slow/medium/fast numbers, is :mod:`clab.evaluation.fgfa_motion`
(``vid_mAP_50_slow/medium/fast``). **Differences from FGFA's ``imagenet_vid_eval_motion.py``**:

- matching threshold: here a fixed IoU 0.5; FGFA uses the ILSVRC per-object threshold
  ``min(0.5, wh / ((w + 10)(h + 10)))`` with +1-pixel widths and IoUs;
- matching order: pycocotools matches per class, per image, detections by score, and prefers an in-range
  object over an ignored one; FGFA matches each detection to the undetected same-class object of highest
  IoU, ignored or not;
- unmatched detections: here always a full FP; FGFA weights them: 1 when they overlap an in-range object
  more than an ignored one, 0 when the reverse, and otherwise the fraction of the image's objects that are
  out of range (in an image without objects: the fraction of all objects in the range);
- AP: here COCO's 101-point interpolation, at most 1000 detections per image and class; FGFA: VOC-style
  area under the full precision/recall curve over all detections.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.stats import motion_class, motion_iou_per_annotation
from .bootstrap import table_from_match, table_map
from .coco_match import match_coco_arrays
from .coco_metrics import MAX_DETS, class_names, load_coco, resolve_ids, results_to_coco_json
from .fgfa_motion import ISOLATED_MOTION_IOU

__all__ = ["SPEED_RANGES", "motion_iou_per_annotation", "speed_of", "speed_split_metrics", "speed_split_entries"]

SPEED_RANGES = ("slow", "medium", "fast")


def speed_of(motion_iou: float) -> str:
    """The speed range ('slow', 'medium' or 'fast') of a motion IoU in [0, 1]."""
    if not 0.0 <= motion_iou <= 1.0:
        raise ValueError(f"motion IoU must be in [0, 1], got {motion_iou!r}")
    return motion_class(motion_iou)


class _RangeCOCOeval(COCOeval):
    """COCOeval that additionally ignores the ground truths whose ids are in ``ignored_ann_ids`` (the
    reference the array matching of :func:`speed_split_entries` is tested against).

    pycocotools' ``_prepare`` resets every ground truth's ``ignore`` flag from ``iscrowd``; this marks the
    listed ones ignored afterwards, on copies (the ground-truth ``COCO`` object is not modified).
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, ignored_ann_ids: set[int]) -> None:
        super().__init__(coco_gt, coco_dt, "bbox")
        self.ignored_ann_ids = ignored_ann_ids

    def _prepare(self) -> None:
        super()._prepare()
        for key, gts in self._gts.items():
            self._gts[key] = [dict(g, ignore=1) if g["id"] in self.ignored_ann_ids else g for g in gts]


def speed_split_metrics(coco_gt: COCO | str | os.PathLike, det_results: Any,
                        img_ids: Sequence[int] | None = None, cat_ids: Sequence[int] | None = None,
                        motion_iou: Mapping[int, float] | None = None,
                        ranges: Sequence[str] = ("all", "slow", "medium", "fast"),
                        classes: Sequence[str] | None = None) -> dict[str, Any]:
    """mAP@50 for all objects and for each motion-speed range.

    Args:
        coco_gt: CocoVID ground truth (pycocotools ``COCO`` or json path).
        det_results: per image (in ``img_ids`` order), per class (in ``cat_ids`` order), arrays (k, 5)
            ``x1, y1, x2, y2, score``; or ``dict(det_bboxes=...)``.
        img_ids: evaluated image ids (default: all, in file order).
        cat_ids: category id of each class index (default: all, in file order).
        motion_iou: ``{annotation id: motion IoU}``; computed with
            :func:`clab.data.stats.motion_iou_per_annotation` when omitted (isolated objects 1.0, see
            :mod:`clab.evaluation.fgfa_motion`).
        ranges: which of 'all', 'slow', 'medium', 'fast' to evaluate.
        classes: class names for the per-class keys (default: the json's category names).

    Returns:
        for each range R: ``bbox_mAP_50_R`` (``nan`` when no ground truth of the evaluated images is in R),
        ``num_gts_R`` (ground truths of the evaluated images and categories in R) and ``AP50_per_class_R``
        {class name: AP@0.5, ``nan`` for a class without ground truth in R}.
    """
    unknown = [r for r in ranges if r != "all" and r not in SPEED_RANGES]
    if unknown:
        raise ValueError(f"ranges: unknown speed range(s) {unknown}; expected some of "
                         f"{['all', *SPEED_RANGES]}")
    coco = load_coco(coco_gt)
    img_ids, cat_ids = resolve_ids(coco, img_ids, cat_ids)
    entries = results_to_coco_json(det_results, img_ids, cat_ids)
    return speed_split_entries(coco, entries, img_ids, cat_ids, motion_iou, ranges, classes)


def speed_split_entries(coco: COCO, entries: list[dict], img_ids: Sequence[int], cat_ids: Sequence[int],
                        motion_iou: Mapping[int, float] | None = None,
                        ranges: Sequence[str] = ("all", "slow", "medium", "fast"),
                        classes: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`speed_split_metrics` of COCO result entries (already checked) on checked ids."""
    unknown = [r for r in ranges if r != "all" and r not in SPEED_RANGES]
    if unknown:
        raise ValueError(f"ranges: unknown speed range(s) {unknown}; expected some of "
                         f"{['all', *SPEED_RANGES]}")
    if motion_iou is None:
        motion_iou = motion_iou_per_annotation(coco.dataset, isolated=ISOLATED_MOTION_IOU)
    evaluated = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_ids, catIds=cat_ids))]
    missing = [a["id"] for a in evaluated if a["id"] not in motion_iou]
    if missing:
        raise ValueError(f"no motion IoU for annotation id(s) {missing[:10]}: the speed split needs video "
                         f"frames (images with video_id and frame_id, annotations with instance_id)")
    names = class_names(coco, cat_ids, classes)
    columns = (np.asarray([e["image_id"] for e in entries], np.int64),
               np.asarray([e["category_id"] for e in entries], np.int64),
               np.asarray([e["bbox"] for e in entries], np.float64).reshape(-1, 4),
               np.asarray([e["score"] for e in entries], np.float64))

    metrics: dict[str, Any] = {}
    for name in ranges:
        if name == "all":
            ignored: set[int] = set()
        else:
            ignored = {a["id"] for a in evaluated if speed_of(motion_iou[a["id"]]) != name}
        # COCOeval's decisions with the out-of-range objects ignored (clab.evaluation.coco_match; equal to
        # _RangeCOCOeval in the tests, without its per-detection dicts)
        match = match_coco_arrays(coco, *columns, img_ids, cat_ids, iou_thr=0.5, max_dets=MAX_DETS[-1],
                                  ignored_ann_ids=ignored)
        aps = table_map(table_from_match(match, coco, cat_ids, names))[1][0].tolist()
        valid = [ap for ap in aps if not np.isnan(ap)]
        metrics[f"bbox_mAP_50_{name}"] = float(np.mean(valid)) if valid else float("nan")
        metrics[f"num_gts_{name}"] = sum(1 for a in evaluated
                                         if a["id"] not in ignored and not a.get("iscrowd"))
        metrics[f"AP50_per_class_{name}"] = dict(zip(names, aps))
    return metrics
