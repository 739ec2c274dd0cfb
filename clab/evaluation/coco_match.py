"""COCO's matching of detections to ground truth at one IoU threshold, vectorised (for the bootstrap).

pycocotools' ``COCOeval.evaluate`` matches detections frame by frame and class by class in Python, with a
dict per detection; on ImageNet VID val (176k frames, a few million detections) that takes minutes and
gigabytes. This module gives the same result from arrays: :func:`match_coco` returns, per detection,
true positive / false positive / ignored, exactly as ``COCOeval`` (area range 'all', ``maxDets`` 1000)
decides it, which :func:`clab.evaluation.bootstrap.match_detections` turns into a match table. The tests
compare it with ``COCOeval`` on random frames with crowds, duplicates and tied scores.

COCO's rules, per frame and class (``COCOeval.evaluateImg``):

- objects: crowd (``iscrowd``) or of ``area`` outside [0, 1e10] are *ignored*; the others are counted;
- detections by decreasing score (stable), at most ``max_dets``;
- IoU of ``[x, y, w, h]`` boxes without +1 pixel; against a crowd object the union is the detection's area;
- a detection takes, among the counted objects not yet taken with IoU >= the threshold, the one of greatest
  IoU (the last one in file order on a tie); if there is none, the ignored object of greatest IoU >= the
  threshold (crowds may be taken many times, other ignored objects once), which makes the detection
  *ignored*; otherwise it is a false positive (or ignored, if its own area is outside [0, 1e10]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Mapping, Sequence

import numpy as np

__all__ = ["TP", "FP", "IGNORED", "CocoMatch", "coco_iou", "match_coco", "match_coco_arrays"]

TP, FP, IGNORED = 1, 0, -1
_AREA_ALL = (0.0, 1e5 ** 2)


@dataclass
class CocoMatch:
    """Result of :func:`match_coco`, in COCO's accumulation order within each class.

    Attributes:
        image: int64 (D,), index of the detection's frame in the sorted evaluated image ids.
        label: int64 (D,), class index; score: float64 (D,); status: int8 (D,) ``TP``, ``FP`` or ``IGNORED``.
        gt_image, gt_label: int64 (G,) frame and class of every object; gt_counted: bool (G,) not ignored.
        img_ids: the sorted evaluated image ids.
    """

    image: np.ndarray
    label: np.ndarray
    score: np.ndarray
    status: np.ndarray
    gt_image: np.ndarray
    gt_label: np.ndarray
    gt_counted: np.ndarray
    img_ids: list[int]


def _lookup(index: dict[int, int], ids: np.ndarray) -> np.ndarray:
    """Position of each id in ``index`` (-1 for an id not in it), vectorised."""
    keys = np.fromiter(index.keys(), np.int64, len(index))
    values = np.fromiter(index.values(), np.int64, len(index))
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys, ids), 0, max(len(keys) - 1, 0))
    found = (keys[pos] == ids) if len(keys) else np.zeros(len(ids), bool)
    return np.where(found, values[pos] if len(keys) else -1, -1)


def coco_iou(det: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Row-wise IoU of ``[x, y, w, h]`` boxes with pycocotools' arithmetic (``maskApi.c: bbIou``), (N,)."""
    w = np.minimum(det[:, 2] + det[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(det[:, 0], gt[:, 0])
    h = np.minimum(det[:, 3] + det[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(det[:, 1], gt[:, 1])
    inter = w * h
    det_area = det[:, 2] * det[:, 3]
    union = np.where(crowd, det_area, det_area + gt[:, 2] * gt[:, 3] - inter)
    ok = (w > 0) & (h > 0)
    return np.where(ok, inter / np.where(ok & (union != 0), union, 1.0), 0.0)


def match_coco(coco, entries: Sequence[Mapping[str, Any]], img_ids: Sequence[int], cat_ids: Sequence[int],
               iou_thr: float = 0.5, max_dets: int = 1000) -> CocoMatch:
    """Match COCO result entries to ``coco``'s objects as ``COCOeval`` does (module docstring).

    Args:
        coco: pycocotools ``COCO`` ground truth.
        entries: ``[{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}, ...]`` (checked ids).
        img_ids, cat_ids: evaluated frames and categories (class index = position in ``cat_ids``).
        iou_thr: the IoU threshold; max_dets: detections kept per frame and class.
    """
    d_img_ids = np.asarray([e["image_id"] for e in entries], np.int64)
    d_cat_ids = np.asarray([e["category_id"] for e in entries], np.int64)
    d_arr = np.asarray([e["bbox"] for e in entries], np.float64).reshape(-1, 4)
    d_score = np.asarray([e["score"] for e in entries], np.float64)
    return match_coco_arrays(coco, d_img_ids, d_cat_ids, d_arr, d_score, img_ids, cat_ids, iou_thr, max_dets)


def match_coco_arrays(coco, det_image_ids: np.ndarray, det_cat_ids: np.ndarray, det_xywh: np.ndarray,
                      det_scores: np.ndarray, img_ids: Sequence[int], cat_ids: Sequence[int],
                      iou_thr: float = 0.5, max_dets: int = 1000,
                      ignored_ann_ids: Collection[int] = ()) -> CocoMatch:
    """:func:`match_coco` of detections given as columns: image id (D,), category id (D,), boxes
    ``[x, y, w, h]`` (D, 4) and scores (D,), in result-file order (it breaks score ties).

    ``ignored_ann_ids``: objects to ignore besides crowds (an ``ignore`` flag set on them after
    ``COCOeval._prepare``, as the motion split does): matched only once, with the ordinary IoU."""
    img_ids = sorted(int(i) for i in img_ids)
    img_index = {i: n for n, i in enumerate(img_ids)}
    cat_index = {int(c): n for n, c in enumerate(cat_ids)}
    n_classes = len(cat_index)
    img_lut = _lookup(img_index, det_image_ids)
    cat_lut = _lookup(cat_index, det_cat_ids)
    kept = (img_lut >= 0) & (cat_lut >= 0)
    d_arr = np.asarray(det_xywh, np.float64).reshape(-1, 4)[kept]
    d_score = np.asarray(det_scores, np.float64)[kept]
    d_group = img_lut[kept] * n_classes + cat_lut[kept]

    # objects, in COCOeval's order within a (frame, class) group: counted first, then file order
    extra = set(ignored_ann_ids)
    rows = [(img_index[i], cat_index[a["category_id"]], *a["bbox"], bool(a.get("iscrowd", 0)),
             float(a.get("area", 0.0)), a["id"] in extra) for i in img_ids for a in coco.imgToAnns.get(i, [])
            if a["category_id"] in cat_index]
    g_arr = np.asarray([r[2:6] for r in rows], np.float64).reshape(-1, 4)
    g_img = np.asarray([r[0] for r in rows], np.int64)
    g_lab = np.asarray([r[1] for r in rows], np.int64)
    g_crowd = np.asarray([r[6] for r in rows], bool)
    g_area = np.asarray([r[7] for r in rows], np.float64)
    g_extra = np.asarray([r[8] for r in rows], bool)
    g_ignored = g_crowd | g_extra | (g_area < _AREA_ALL[0]) | (g_area > _AREA_ALL[1])
    g_group = g_img * n_classes + g_lab
    g_order = np.lexsort((g_ignored, g_group))             # group, then counted before ignored, stable
    g_arr, g_group, g_crowd, g_ignored = g_arr[g_order], g_group[g_order], g_crowd[g_order], g_ignored[g_order]
    g_img, g_lab = g_img[g_order], g_lab[g_order]

    d_order = np.lexsort((-d_score, d_group))              # group, then score descending, stable
    d_arr, d_score, d_group = d_arr[d_order], d_score[d_order], d_group[d_order]
    if d_group.size:                                       # at most max_dets per group
        first = np.r_[0, np.flatnonzero(d_group[1:] != d_group[:-1]) + 1]
        rank = np.arange(d_group.size) - np.repeat(first, np.diff(np.r_[first, d_group.size]))
        keep = rank < max_dets
        d_arr, d_score, d_group = d_arr[keep], d_score[keep], d_group[keep]

    # every (detection, object) pair of the same group
    n_groups = len(img_ids) * n_classes
    g_start = np.searchsorted(g_group, np.arange(n_groups + 1))
    counts = (g_start[1:] - g_start[:-1])[d_group] if d_group.size else np.zeros(0, np.int64)
    pair_det = np.repeat(np.arange(d_group.size), counts)
    within = np.arange(pair_det.size) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_gt = (np.repeat(g_start[d_group], counts) if d_group.size else np.zeros(0, np.int64)) + within
    iou = coco_iou(d_arr[pair_det], g_arr[pair_gt], g_crowd[pair_gt])
    threshold = min(float(iou_thr), 1 - 1e-10)
    cand = ~(iou < threshold)
    pair_det, pair_gt, iou = pair_det[cand], pair_gt[cand], iou[cand]

    status = np.full(d_group.size, FP, np.int8)
    taken = np.zeros(g_group.size, bool)
    starts = np.r_[0, np.flatnonzero(pair_det[1:] != pair_det[:-1]) + 1] if pair_det.size else np.zeros(0, int)
    ends = np.r_[starts[1:], pair_det.size] if pair_det.size else np.zeros(0, int)
    dets, gts, ious = pair_det.tolist(), pair_gt.tolist(), iou.tolist()
    ignored, crowd = g_ignored.tolist(), g_crowd.tolist()
    for s, e in zip(starts.tolist(), ends.tolist()):      # detections in visit order, objects in group order
        best, best_iou = -1, threshold
        for j in range(s, e):
            g = gts[j]
            if taken[g] and not crowd[g]:
                continue
            if best >= 0 and not ignored[best] and ignored[g]:
                break
            if ious[j] < best_iou:
                continue
            best, best_iou = g, ious[j]
        if best >= 0:
            taken[best] = True
            status[dets[s]] = IGNORED if ignored[best] else TP
    d_area = d_arr[:, 2] * d_arr[:, 3]
    status[(status == FP) & ((d_area < _AREA_ALL[0]) | (d_area > _AREA_ALL[1]))] = IGNORED

    d_img, d_lab = d_group // max(n_classes, 1), d_group % max(n_classes, 1)
    # COCO's accumulation order per class: frames in sorted id order, within a frame by score; then a
    # stable sort by score
    order = np.lexsort((d_img, d_lab))
    order = order[np.lexsort((-d_score[order], d_lab[order]))]
    return CocoMatch(image=d_img[order], label=d_lab[order], score=d_score[order], status=status[order],
                     gt_image=g_img, gt_label=g_lab, gt_counted=~g_ignored, img_ids=img_ids)
