"""Comparisons the explorer shows: per-frame matching of detections to ground truth, per-video and per-class
AP@50 of each model, and the frames where the two models differ most.

Matching (:func:`match_frame`) follows the rule of COCO's AP@50 at one score threshold: detections above the
threshold, highest score first, each takes the unmatched ground-truth box of its class with the highest IoU
if that IoU is at least 0.5; a detection that finds none is *false*, a box that no detection takes is
*missed*. Per-video AP uses pycocotools on the video's frames only.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["FrameMatch", "box_iou", "match_frame", "frame_table", "per_video_ap", "per_class_ap", "video_table",
           "worst_frames"]


@dataclass(frozen=True)
class FrameMatch:
    """Result of :func:`match_frame` on one frame.

    Attributes:
        boxes: ndarray[m, 4] x1y1x2y2 of the detections kept (score >= threshold), highest score first.
        labels: ndarray[m] int class indices; ``scores``: ndarray[m].
        matched: ndarray[m] bool, the detection found a ground-truth box (else it is a false detection).
        gt_matched: ndarray[k] bool per ground-truth box (False: missed).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    matched: np.ndarray
    gt_matched: np.ndarray

    @property
    def num_matched(self) -> int:
        return int(self.matched.sum())

    @property
    def num_false(self) -> int:
        return int((~self.matched).sum())

    @property
    def num_missed(self) -> int:
        return int((~self.gt_matched).sum())


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ndarray[n, 4] and ndarray[k, 4] (x1y1x2y2) -> ndarray[n, k]; boxes are continuous (no +1)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_frame(det_bboxes: Sequence[np.ndarray], gt_boxes: np.ndarray, gt_labels: np.ndarray,
                score_thr: float, iou_thr: float = 0.5) -> FrameMatch:
    """Match one frame's detections (per-class list of ndarray (m, 5) x1y1x2y2 score) to its ground truth
    (``gt_boxes`` ndarray[k, 4], ``gt_labels`` ndarray[k] class indices); see the module docstring."""
    if not 0.0 <= score_thr <= 1.0:
        raise ValueError(f"score_thr must be in [0, 1], got {score_thr}")
    rows = [np.column_stack([np.asarray(d, np.float32).reshape(-1, 5), np.full(len(np.asarray(d).reshape(-1, 5)), c)])
            for c, d in enumerate(det_bboxes)]
    dets = np.concatenate(rows) if rows else np.zeros((0, 6), np.float32)
    dets = dets[dets[:, 4] >= score_thr]
    dets = dets[np.argsort(-dets[:, 4], kind="stable")]
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    iou = box_iou(dets[:, :4], gt_boxes)
    matched = np.zeros(len(dets), bool)
    gt_matched = np.zeros(len(gt_boxes), bool)
    for i, det in enumerate(dets):
        candidates = np.where((gt_labels == int(det[5])) & ~gt_matched & (iou[i] >= iou_thr))[0]
        if len(candidates):
            best = candidates[np.argmax(iou[i, candidates])]
            gt_matched[best] = matched[i] = True
    return FrameMatch(dets[:, :4], dets[:, 5].astype(np.int64), dets[:, 4], matched, gt_matched)


def frame_table(run, score_thr: float) -> pd.DataFrame:
    """One row per (frame, model) with saved detections: ``video, frame_id, index, model, matched, missed,
    false, errors`` (errors = missed + false) at ``score_thr``."""
    rows = []
    for model in run.detections:
        for frame in run.frames:
            if frame.image_id not in run.tested_ids:
                continue
            m = match_frame(run.saved_detections(model, frame), frame.gt_boxes, frame.gt_labels, score_thr)
            rows.append({"video": frame.video, "frame_id": frame.frame_id, "index": frame.index, "model": model,
                         "matched": m.num_matched, "missed": m.num_missed, "false": m.num_false,
                         "errors": m.num_missed + m.num_false})
    return pd.DataFrame(rows, columns=["video", "frame_id", "index", "model", "matched", "missed", "false", "errors"])


def _coco_results(run, model: str) -> list[dict]:
    cat_ids = list(run.cat_ids)
    out = []
    for image_id, per_class in run.detections[model].items():
        for label, dets in enumerate(per_class):
            for x1, y1, x2, y2, score in np.asarray(dets).reshape(-1, 5):
                out.append({"image_id": image_id, "category_id": cat_ids[label],
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(score)})
    return out


def _ground_truth(run):
    from pycocotools.coco import COCO
    coco = COCO()
    images, anns = [], []
    cat_ids = list(run.cat_ids)
    for frame in run.frames:
        images.append({"id": frame.image_id, "file_name": str(frame.path)})
        for box, label in zip(frame.gt_boxes, frame.gt_labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": frame.image_id, "category_id": cat_ids[int(label)],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c, "name": n} for c, n in zip(cat_ids, run.classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def per_video_ap(run) -> pd.DataFrame:
    """AP@50 of each model with saved detections on each video: COCO AP@50 over the video's frames only, with
    the run's own protocol (``clab.evaluation.coco_metrics``: same categories, IoU thresholds and
    detections per image as its ``bbox_mAP_50``). Rows videos, columns ``frames``, ``objects``, the models,
    and ``CLAB - baseline (points)`` when both are there; NaN for a video without objects or not tested."""
    from ..evaluation.coco_metrics import coco_entries_metrics

    gt = _ground_truth(run)
    table = pd.DataFrame(index=pd.Index(list(run.videos), name="video"))
    table["frames"] = [len(idx) for idx in run.videos.values()]
    table["objects"] = [sum(len(run.frames[i].gt_boxes) for i in idx) for idx in run.videos.values()]
    for model in run.detections:
        results = _coco_results(run, model)
        values = []
        for indices in run.videos.values():
            ids = [run.frames[i].image_id for i in indices]
            if any(i not in run.tested_ids for i in ids) or not results:
                values.append(float("nan") if results else 0.0)   # not (wholly) tested: MAX_TEST_FRAMES
                continue
            chosen = set(ids)
            entries = [r for r in results if r["image_id"] in chosen]
            if not entries:
                values.append(0.0 if any(len(run.frames[i].gt_boxes) for i in indices) else float("nan"))
                continue
            with contextlib.redirect_stdout(io.StringIO()):
                _, ev = coco_entries_metrics(gt, entries, ids, list(run.cat_ids))
            values.append(float(ev.stats[1]) if ev.stats[1] >= 0 else float("nan"))  # -1: no object
        table[model] = values
    if "baseline" in table and "clab" in table:
        table["CLAB - baseline (points)"] = 100.0 * (table["clab"] - table["baseline"])
    return table


def per_class_ap(run) -> pd.DataFrame:
    """AP@50 per class of each model, from its saved ``metrics.json`` (rows classes, columns models)."""
    table = pd.DataFrame(index=pd.Index(list(run.classes), name="class"))
    for model, metrics in run.metrics.items():
        per_class = metrics.get("AP50_per_class") or {}
        table[model] = [per_class.get(c, np.nan) for c in run.classes]
    if "baseline" in table and "clab" in table:
        table["CLAB - baseline (points)"] = 100.0 * (table["clab"] - table["baseline"])
    return table


def video_table(run, score_thr: float) -> pd.DataFrame:
    """:func:`per_video_ap` plus each model's missed and false detections over the video at ``score_thr``
    (frames the run tested only)."""
    table = per_video_ap(run)
    frames = frame_table(run, score_thr)
    for model, part in frames.groupby("model", sort=False):
        sums = part.groupby("video")[["missed", "false"]].sum()
        table[f"{model} missed"] = sums["missed"].reindex(table.index).astype("Int64")   # <NA>: not tested
        table[f"{model} false"] = sums["false"].reindex(table.index).astype("Int64")
    return table


def worst_frames(run, video: str, score_thr: float, top: int = 3, models: tuple[str, str] = ("baseline", "clab")
                 ) -> pd.DataFrame:
    """The ``top`` frames of ``video`` where the two models' error counts (missed + false at ``score_thr``)
    differ most: ``frame_id``, each model's errors and ``gap`` (first model's errors minus the second's, so a
    positive gap is a frame the second model gets more right), sorted by ``|gap|`` then frame."""
    if video not in run.videos:
        raise KeyError(f"video {video!r} is not in the run's validation set")
    a, b = models
    if a not in run.detections or b not in run.detections:
        raise ValueError(f"worst frames need saved detections of both {a} and {b}; the run has "
                         f"{sorted(run.detections)}")
    rows = []
    for i in run.videos[video]:
        frame = run.frames[i]
        if frame.image_id not in run.tested_ids:
            continue
        errors = []
        for model in models:
            m = match_frame(run.saved_detections(model, frame), frame.gt_boxes, frame.gt_labels, score_thr)
            errors.append(m.num_missed + m.num_false)
        rows.append({"frame_id": frame.frame_id, f"{a} errors": errors[0], f"{b} errors": errors[1],
                     "gap": errors[0] - errors[1]})
    table = pd.DataFrame(rows, columns=["frame_id", f"{a} errors", f"{b} errors", "gap"])
    order = np.lexsort((table["frame_id"].to_numpy(), -table["gap"].abs().to_numpy()))
    return table.iloc[order[:top]].reset_index(drop=True)
