"""mAP@50 as the ILSVRC 2015 VID devkit computes it (``eval_vid_detection.m``): ``vid_mAP_50``.

The devkit differs from COCO's ``bbox_mAP_50`` in four ways, which together move ImageNet VID numbers by
a few tenths of a point:

1. **Pixel convention.** Boxes are inclusive pixel ranges: a box ``x1..x2`` is ``x2 - x1 + 1`` wide, and the
   intersection of two boxes is ``min(x2) - max(x1) + 1`` wide (IoU 0 unless both sides are > 0).
2. **Per-object threshold.** An object ``w x h`` (with the +1 widths) is found by a detection of IoU at
   least ``min(0.5, w h / ((w + 10)(h + 10)))``: for a square object of at most 24 x 24 pixels the threshold is
   lower than 0.5 (0.44 for 20 x 20, 0.25 for 10 x 10), and for thin objects also at larger areas
   (0.48 for 10 x 200).
3. **Matching.** In each frame the detections are taken by decreasing score; a detection takes, among the
   not yet found objects of its class that it overlaps at least at their threshold, the one of greatest
   IoU; otherwise (including a second detection of an already found object) it is a false positive.
   There is no crowd, no ignored object and no per-frame detection limit.
4. **AP.** Detections of a class from all frames sorted by score; recall ``tp / npos`` and precision
   ``tp / (tp + fp)``; AP is the area under the precision envelope (VOC 2010 style, every recall step
   counts), not COCO's mean over 101 recall points.

Ground truth comes from a CocoVID json, whose ``bbox`` is ``[xmin, ymin, xmax - xmin, ymax - ymin]`` of the
ILSVRC xml (the mmtracking converter), so ``x2 = x + w`` recovers the devkit's ``xmax``. Detections are COCO
result entries (``x2 = x + w``), in the same pixel frame as the ground truth they were trained on.

Kept from FGFA's Python port rather than the Matlab code (both print the same digits): recall and
precision are exact divisions (the Matlab adds 1e-8 to the denominators), and a class with no ground truth
in the evaluated frames gets NaN and is left out of the mean (Matlab scores it 0; every ImageNet VID
val class has ground truth, so this changes nothing there). Sorting is stable (ties keep frame order,
then file order), as Matlab's ``sort``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["DEFAULT_IOU", "PIXEL_TOLERANCE", "GroundTruth", "Detections", "object_thresholds",
           "devkit_iou", "image_pairs", "devkit_match", "voc_ap", "class_ap", "vid_map_metrics"]

DEFAULT_IOU = 0.5
PIXEL_TOLERANCE = 10


@dataclass
class GroundTruth:
    """Ground-truth objects of the evaluated frames, as columns.

    Attributes:
        image: int64 (G,), index of the object's frame in the evaluated frame list.
        label: int64 (G,), class index (position in ``cat_ids``).
        boxes: float64 (G, 4), ``x1, y1, x2, y2`` (``x2 = x + w`` of the COCO box).
        ann_ids: int64 (G,), annotation ids.
    """

    image: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    ann_ids: np.ndarray


@dataclass
class Detections:
    """Detections as columns, sorted by frame, then by decreasing score (stable).

    Attributes:
        image: int64 (D,), frame index; label: int64 (D,), class index; scores: float64 (D,);
        boxes: float64 (D, 4) ``x1, y1, x2, y2``.
    """

    image: np.ndarray
    label: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __post_init__(self) -> None:
        order = np.lexsort((-self.scores, self.image))          # frame, then score descending, stable
        self.image, self.label = self.image[order], self.label[order]
        self.scores, self.boxes = self.scores[order], self.boxes[order]


def gt_from_coco(coco, img_ids: Sequence[int], cat_ids: Sequence[int]) -> GroundTruth:
    """Every annotation of the evaluated frames and categories (crowd or not: the devkit has no crowd)."""
    img_index = {int(i): n for n, i in enumerate(img_ids)}
    cat_index = {int(c): n for n, c in enumerate(cat_ids)}
    rows = [(img_index[a["image_id"]], cat_index[a["category_id"]], *a["bbox"], a["id"])
            for img_id in img_ids for a in coco.imgToAnns.get(img_id, [])
            if a["category_id"] in cat_index]
    if not rows:
        return GroundTruth(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64))
    arr = np.asarray([r[2:6] for r in rows], np.float64)
    boxes = np.column_stack([arr[:, 0], arr[:, 1], arr[:, 0] + arr[:, 2], arr[:, 1] + arr[:, 3]])
    return GroundTruth(image=np.asarray([r[0] for r in rows], np.int64),
                       label=np.asarray([r[1] for r in rows], np.int64), boxes=boxes,
                       ann_ids=np.asarray([r[6] for r in rows], np.int64))


def detections_from_entries(entries: Sequence[Mapping[str, Any]], img_ids: Sequence[int],
                            cat_ids: Sequence[int]) -> Detections:
    """Columns from COCO result entries (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``score``);
    entries of frames or categories that are not evaluated are left out."""
    img_index = {int(i): n for n, i in enumerate(img_ids)}
    cat_index = {int(c): n for n, c in enumerate(cat_ids)}
    kept = [e for e in entries if e["image_id"] in img_index and e["category_id"] in cat_index]
    if not kept:
        return Detections(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))
    xywh = np.asarray([e["bbox"] for e in kept], np.float64).reshape(-1, 4)
    return Detections(image=np.asarray([img_index[e["image_id"]] for e in kept], np.int64),
                      label=np.asarray([cat_index[e["category_id"]] for e in kept], np.int64),
                      scores=np.asarray([e["score"] for e in kept], np.float64),
                      boxes=np.column_stack([xywh[:, 0], xywh[:, 1], xywh[:, 0] + xywh[:, 2],
                                             xywh[:, 1] + xywh[:, 3]]))


def object_thresholds(boxes: np.ndarray, default: float = DEFAULT_IOU,
                      tolerance: float = PIXEL_TOLERANCE) -> np.ndarray:
    """Per-object IoU threshold ``min(default, w h / ((w + t)(h + t)))``, ``w = x2 - x1 + 1`` (G,)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    return np.minimum(default, (w * h) / ((w + tolerance) * (h + tolerance)))


def devkit_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Row-wise devkit IoU of ``det`` (N, 4) and ``gt`` (N, 4) ``x1, y1, x2, y2`` with +1 widths -> (N,);
    0 where the +1 intersection is empty in either direction."""
    iw = np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]) + 1.0
    ih = np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]) + 1.0
    overlap = (iw > 0) & (ih > 0)
    inter = iw * ih
    union = (det[:, 2] - det[:, 0] + 1.0) * (det[:, 3] - det[:, 1] + 1.0) + \
        (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0) - inter
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def image_pairs(dets: Detections, gt: GroundTruth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (detection, object) pair of the same frame, any class: ``(det index, gt index, IoU)``."""
    n_images = int(max(dets.image.max(initial=-1), gt.image.max(initial=-1))) + 1
    gt_order = np.argsort(gt.image, kind="stable")
    gt_start = np.searchsorted(gt.image[gt_order], np.arange(n_images + 1))
    counts = (gt_start[1:] - gt_start[:-1])[dets.image] if dets.image.size else np.zeros(0, np.int64)
    det_index = np.repeat(np.arange(dets.image.size), counts)
    first = np.repeat(gt_start[dets.image], counts) if dets.image.size else np.zeros(0, np.int64)
    within = np.arange(det_index.size) - np.repeat(np.cumsum(counts) - counts, counts)
    gt_index = gt_order[first + within]
    iou = devkit_iou(dets.boxes[det_index], gt.boxes[gt_index])
    return det_index, gt_index, iou


def devkit_match(dets: Detections, gt: GroundTruth, thresholds: np.ndarray | None = None,
                 pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Greedy devkit matching: the matched object of each detection, or -1 (D,).

    Detections are visited frame by frame by decreasing score; each takes the not yet matched object of
    its class with the greatest IoU among those it overlaps at least at their threshold (first object in
    file order on a tie).
    """
    if thresholds is None:
        thresholds = object_thresholds(gt.boxes)
    det_i, gt_i, iou = image_pairs(dets, gt) if pairs is None else pairs
    ok = (dets.label[det_i] == gt.label[gt_i]) & (iou >= thresholds[gt_i])
    det_i, gt_i, iou = det_i[ok], gt_i[ok], iou[ok]
    matched = np.full(dets.image.size, -1, np.int64)
    if det_i.size == 0:
        return matched
    order = np.lexsort((gt_i, det_i))                          # by detection (= visit order), then object
    det_i, gt_i, iou = det_i[order], gt_i[order], iou[order]
    starts = np.flatnonzero(np.r_[True, det_i[1:] != det_i[:-1]])
    ends = np.r_[starts[1:], det_i.size]
    taken = np.zeros(gt.image.size, bool)
    # Only detections with a candidate are visited, in order; python loop over small candidate lists
    det_list, gt_list, iou_list = det_i.tolist(), gt_i.tolist(), iou.tolist()
    for s, e in zip(starts.tolist(), ends.tolist()):
        best, best_iou = -1, -1.0
        for j in range(s, e):
            g = gt_list[j]
            if not taken[g] and iou_list[j] > best_iou:
                best, best_iou = g, iou_list[j]
        if best >= 0:
            taken[best] = True
            matched[det_list[s]] = best
    return matched


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2010 AP: area under the precision envelope over recall, with sentinels (0, 0) and (1, 0)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def class_ap(scores: np.ndarray, labels: np.ndarray, tp: np.ndarray, fp: np.ndarray, npos: np.ndarray,
             num_classes: int) -> np.ndarray:
    """VOC AP of each class from per-detection (possibly weighted) tp and fp, globally sorted by score.

    Args:
        scores, labels, tp, fp: (D,) in frame-then-score order (the stable global sort keeps ties in it).
        npos: (C,) counted objects per class; a class with ``npos == 0`` gets NaN.
    """
    order = np.argsort(-scores, kind="mergesort")
    labels, tp, fp = labels[order], tp[order], fp[order]
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if npos[c] <= 0:
            continue
        sel = labels == c
        tp_cum = np.cumsum(tp[sel])
        fp_cum = np.cumsum(fp[sel])
        recall = tp_cum / float(npos[c])
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        ap[c] = voc_ap(recall, precision)
    return ap


def _mean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(np.mean(valid)) if valid.size else float("nan")


def vid_map_metrics(dets: Detections, gt: GroundTruth, classes: Sequence[str],
                    matched: np.ndarray | None = None) -> dict[str, Any]:
    """``vid_mAP_50`` (mean over classes with ground truth), ``vid_AP50_per_class`` {name: AP or NaN} and
    ``vid_num_gts``, by the devkit protocol (module docstring)."""
    if matched is None:
        matched = devkit_match(dets, gt)
    tp = (matched >= 0).astype(np.float64)
    npos = np.bincount(gt.label, minlength=len(classes))
    ap = class_ap(dets.scores, dets.label, tp, 1.0 - tp, npos, len(classes))
    return {"vid_mAP_50": _mean(ap), "vid_AP50_per_class": dict(zip(classes, ap.tolist())),
            "vid_num_gts": int(gt.image.size)}
