"""Motion-speed split with FGFA's protocol (``imagenet_vid_eval_motion.py``): ``vid_mAP_50_slow/medium/fast``.

These are the numbers FGFA, SELSA and MEGA publish as "mAP (slow / medium / fast)".

**Motion IoU** of an object: the mean IoU between its box and the boxes of the same object (same
``video_id`` and ``instance_id``) in the frames within ±10 frames where it is annotated
(:func:`clab.data.stats.motion_iou_per_annotation`). An object with no annotated neighbour in that
window (*isolated*) gets **1.0**. The evidence: FGFA's ground-truth table
``imagenet_vid_groundtruth_motion_iou.mat`` has a value for every annotated object (no empty entry, so its
evaluation code's "empty counts as 0" branch never runs) and 2,178 of its 277,551 values are exactly 1.0.
A mean of IoUs with real neighbours is exactly 1.0 only if every neighbouring box is identical to the
object's box to the last bit, which hand-drawn boxes of moving objects rarely are; an isolated object
scored as overlapping itself gives exactly 1.0. So isolated objects count as slow (and are ignored in the
medium and fast ranges). :data:`ISOLATED_MOTION_IOU` holds that choice; pass ``motion_iou`` to use another.
The check needs ImageNet VID itself: :func:`motion_iou_evidence` on the converted val json counts the
objects, the isolated ones and those of motion IoU exactly 1.0 with neighbours; under this rule the table's
2,178 should be the sum of the last two (with isolated objects at 0 it would be the last one alone).

**Ranges** are closed, as in FGFA: fast ``[0, 0.7]``, medium ``[0.7, 0.9]``, slow ``[0.9, 1]``; an object
of motion IoU exactly 0.7 or 0.9 counts in two ranges.

**Scoring a range** (per frame, detections by decreasing score, the devkit matching of
:mod:`clab.evaluation.vid_devkit`: per-object threshold ``min(0.5, wh / ((w + 10)(h + 10)))``, +1-pixel IoU):

- objects outside the range are *ignored*, but still take part in the matching;
- a detection matched to an in-range object is a true positive; matched to an ignored object it is
  neither true nor false positive;
- an unmatched detection is a false positive with a weight: 1 if its greatest IoU with an in-range
  object of the frame (any class) is larger than with an ignored one; 0 if smaller; if equal (typically
  both 0) the fraction of the frame's objects that are ignored; in a frame without objects, the fraction
  of all evaluated objects that lie in the range (FGFA's ``empty_weight``);
- ``npos`` counts the in-range objects; AP is the devkit's VOC area under the precision envelope; the mAP
  is the mean over the classes that have in-range objects.

With the range [0, 1] nothing is ignored and this is :func:`clab.evaluation.vid_devkit.vid_map_metrics`.
FGFA also drops unmatched detections whose +1 area lies outside the area range; with its single range
[0, 1e10] that only touches boxes of negative area, kept here for fidelity.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..data.stats import motion_iou_per_annotation
from .vid_devkit import Detections, GroundTruth, class_ap, devkit_match, image_pairs

__all__ = ["ISOLATED_MOTION_IOU", "FGFA_RANGES", "fgfa_motion_iou", "motion_iou_evidence", "fgfa_motion_metrics"]

#: motion IoU of an object without annotated neighbour in its ±10 frame window (see module docstring)
ISOLATED_MOTION_IOU = 1.0
#: FGFA's closed motion IoU ranges
FGFA_RANGES: dict[str, tuple[float, float]] = {"all": (0.0, 1.0), "fast": (0.0, 0.7), "medium": (0.7, 0.9),
                                               "slow": (0.9, 1.0)}
_AREA_RANGE = (0.0, 1e5 ** 2)


def fgfa_motion_iou(dataset: dict) -> dict[int, float]:
    """``{annotation id: motion IoU}`` with FGFA's window (±10 frames) and the isolated-object rule."""
    return motion_iou_per_annotation(dataset, window=10, isolated=ISOLATED_MOTION_IOU)


def motion_iou_evidence(dataset: dict) -> dict[str, int]:
    """Counts that decide the isolated-object rule against FGFA's table (277,551 objects, 2,178 at 1.0):
    ``objects`` (with a motion IoU), ``isolated`` (no annotated neighbour within ±10 frames) and
    ``one_with_neighbours`` (motion IoU exactly 1.0 although neighbours exist)."""
    as_nan = motion_iou_per_annotation(dataset, window=10, isolated=float("nan"))
    values = np.asarray(list(as_nan.values()), np.float64)
    return {"objects": int(values.size), "isolated": int(np.isnan(values).sum()),
            "one_with_neighbours": int((values == 1.0).sum())}


def _group_max(values: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    out = np.full(size, -1.0)
    np.maximum.at(out, groups, values)
    return out


def fgfa_motion_metrics(dets: Detections, gt: GroundTruth, classes: Sequence[str],
                        motion_iou: Mapping[int, float], ranges: Sequence[str] = ("slow", "medium", "fast"),
                        matched: np.ndarray | None = None,
                        pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """FGFA-protocol mAP@50 per motion range.

    Args:
        dets, gt: columns of :mod:`clab.evaluation.vid_devkit`.
        classes: class names (C,).
        motion_iou: ``{annotation id: motion IoU in [0, 1]}`` for every object in ``gt``.
        ranges: names from :data:`FGFA_RANGES`.
        matched, pairs: the devkit matching and frame pairs, if already computed (they do not depend on
            the range).

    Returns:
        for each range R: ``vid_mAP_50_R`` (NaN when no object is in R), ``vid_AP50_per_class_R``
        {class: AP or NaN} and ``vid_num_gts_R`` (objects in R).
    """
    unknown = [r for r in ranges if r not in FGFA_RANGES]
    if unknown:
        raise ValueError(f"ranges: unknown motion range(s) {unknown}; expected some of {list(FGFA_RANGES)}")
    missing = [int(a) for a in gt.ann_ids if int(a) not in motion_iou]
    if missing:
        raise ValueError(f"no motion IoU for annotation id(s) {missing[:10]}: the motion split needs video "
                         "frames (images with video_id and frame_id, annotations with instance_id)")
    if pairs is None:
        pairs = image_pairs(dets, gt)
    if matched is None:
        matched = devkit_match(dets, gt, pairs=pairs)
    miou = np.asarray([motion_iou[int(a)] for a in gt.ann_ids], np.float64)
    det_i, gt_i, iou = pairs
    n_dets = dets.image.size
    n_images = int(max(dets.image.max(initial=-1), gt.image.max(initial=-1))) + 1
    objects_per_image = np.bincount(gt.image, minlength=n_images)
    w = dets.boxes[:, 2] - dets.boxes[:, 0] + 1.0
    h = dets.boxes[:, 3] - dets.boxes[:, 1] + 1.0
    area_out = ((w * h) < _AREA_RANGE[0]) | ((w * h) > _AREA_RANGE[1])

    metrics: dict[str, Any] = {}
    for name in ranges:
        low, high = FGFA_RANGES[name]
        in_range = (miou >= low) & (miou <= high)
        ignored = ~in_range
        empty_weight = float(in_range.mean()) if in_range.size else 0.0
        ov_ignored = _group_max(np.where(ignored[gt_i], iou, -1.0), det_i, n_dets)
        ov_counted = _group_max(np.where(in_range[gt_i], iou, -1.0), det_i, n_dets)
        ignored_fraction = (np.bincount(gt.image, weights=ignored.astype(np.float64), minlength=n_images)
                            / np.maximum(objects_per_image, 1))
        tp = np.zeros(n_dets)
        fp = np.zeros(n_dets)
        hit = matched >= 0
        tp[hit] = in_range[matched[hit]].astype(np.float64)
        miss = ~hit
        fp_weight = np.where(ov_counted > ov_ignored, 1.0,
                             np.where(ov_ignored > ov_counted, 0.0,
                                      np.where(objects_per_image[dets.image] == 0, empty_weight,
                                               ignored_fraction[dets.image])))
        fp[miss] = np.where(area_out[miss], 0.0, fp_weight[miss])
        npos = np.bincount(gt.label[in_range], minlength=len(classes))
        ap = class_ap(dets.scores, dets.label, tp, fp, npos, len(classes))
        valid = ap[~np.isnan(ap)]
        metrics[f"vid_mAP_50_{name}"] = float(np.mean(valid)) if valid.size else float("nan")
        metrics[f"vid_AP50_per_class_{name}"] = dict(zip(classes, ap.tolist()))
        metrics[f"vid_num_gts_{name}"] = int(in_range.sum())
    return metrics
