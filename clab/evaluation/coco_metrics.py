"""COCO box metrics of per-frame detections, computed as mmdet 2.28's ``CocoDataset.evaluate`` does (SPEC 4).

mmtracking's ``CocoVideoDataset.evaluate(metric='bbox')`` hands the per-frame detections to mmdet's
``CocoDataset.evaluate``, which

1. converts them to COCO result json: one entry per box, ``bbox = [x1, y1, x2 - x1, y2 - y1]`` (no +1
   pixel), ``score``, ``category_id = cat_ids[label]``, ``image_id = img_ids[i]``;
2. scores them with pycocotools ``COCOeval(iouType='bbox')`` with ``params.catIds = cat_ids``,
   ``params.imgIds = img_ids``, ``params.maxDets = [100, 300, 1000]`` and IoU thresholds 0.50:0.05:0.95
   (101-point interpolated AP, COCO area ranges);
3. reports ``stats[0..5]`` rounded to 4 decimals (mmdet 2.28; older 2.x versions rounded to 3) as
   ``bbox_mAP``, ``bbox_mAP_50`` (the paper's "mAP"), ``bbox_mAP_75``, ``bbox_mAP_s/m/l`` and the
   ``bbox_mAP_copypaste`` string.

:func:`coco_bbox_metrics` does the same and also returns the 12 stats unrounded (``coco_stats``) and the
per-class AP at IoU 0.5 and at 0.50:0.95 from the precision array (area 'all', the last maxDets, i.e. 1000),
the way mmdet's ``classwise=True`` table reads it. One deliberate difference: when there is no detection at
all, mmdet logs an error and returns nothing, while here every AP is 0.0 (as COCOeval scores an empty
result set).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "COCO_STAT_NAMES", "MAX_DETS", "load_coco", "resolve_ids", "class_names", "normalize_det_results",
    "results_to_coco_json", "load_results", "run_cocoeval", "per_class_ap", "coco_bbox_metrics",
    "coco_entries_metrics",
]

# names of COCOeval.stats, in order, as mmdet names them
COCO_STAT_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l",
                   "AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000")
MAX_DETS = (100, 300, 1000)
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


def load_coco(coco_gt: COCO | str | os.PathLike) -> COCO:
    """Return ``coco_gt`` if it is a pycocotools ``COCO``, else load the json file it names (quietly)."""
    if isinstance(coco_gt, COCO):
        return coco_gt
    if not isinstance(coco_gt, (str, os.PathLike)):
        raise TypeError(f"coco_gt must be a pycocotools COCO or a path to a COCO json, got {type(coco_gt)}")
    path = Path(coco_gt)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(str(path))
        except (json.JSONDecodeError, AssertionError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a COCO annotation json ({err})") from err


def normalize_det_results(det_results: Any, num_images: int, num_classes: int) -> list[list[np.ndarray]]:
    """Check and normalise detections to a list (per image) of lists (per class) of float arrays (k, 5).

    Args:
        det_results: ``list[list[ndarray (k, 5)]]`` (per image, per class, rows ``x1, y1, x2, y2, score`` in
            original-image pixels), or mmtracking's ``dict(det_bboxes=<that list>)``.
        num_images: expected number of images (``len(img_ids)``).
        num_classes: expected number of classes (``len(cat_ids)``).
    """
    if isinstance(det_results, dict):
        if "det_bboxes" not in det_results:
            raise ValueError(f"det_results dict must have a 'det_bboxes' key, got keys {sorted(det_results)}")
        det_results = det_results["det_bboxes"]
    if not isinstance(det_results, (list, tuple)) or len(det_results) != num_images:
        got = len(det_results) if isinstance(det_results, (list, tuple)) else type(det_results).__name__
        raise ValueError(f"det_results must be a list with one entry per image ({num_images}), got {got}")
    out = []
    for i, per_image in enumerate(det_results):
        if not isinstance(per_image, (list, tuple)) or len(per_image) != num_classes:
            got = len(per_image) if isinstance(per_image, (list, tuple)) else type(per_image).__name__
            raise ValueError(f"det_results[{i}] must be a list of {num_classes} per-class arrays, got {got}")
        arrays = []
        for c, boxes in enumerate(per_image):
            boxes = np.asarray(boxes)
            if boxes.size == 0:
                boxes = boxes.reshape(0, 5)
            if boxes.ndim != 2 or boxes.shape[1] != 5:
                raise ValueError(f"det_results[{i}][{c}] must be an array (k, 5) of x1, y1, x2, y2, score, "
                                 f"got shape {boxes.shape}")
            arrays.append(boxes)
        out.append(arrays)
    return out


def resolve_ids(coco: COCO, img_ids: Sequence[int] | None,
                cat_ids: Sequence[int] | None) -> tuple[list[int], list[int]]:
    """Default and check image and category ids: all of the json, in file order, when ``None``."""
    img_ids = list(coco.getImgIds()) if img_ids is None else [int(i) for i in img_ids]
    cat_ids = list(coco.getCatIds()) if cat_ids is None else [int(c) for c in cat_ids]
    missing_imgs = [i for i in img_ids if i not in coco.imgs]
    if missing_imgs:
        raise ValueError(f"img_ids not in the annotation file: {missing_imgs[:10]}")
    missing_cats = [c for c in cat_ids if c not in coco.cats]
    if missing_cats:
        raise ValueError(f"cat_ids not in the annotation file: {missing_cats}")
    return img_ids, cat_ids


def class_names(coco: COCO, cat_ids: Sequence[int], classes: Sequence[str] | None = None) -> list[str]:
    """``classes`` (checked to have one name per category id) or the json's category names."""
    if classes is None:
        return [coco.cats[c]["name"] for c in cat_ids]
    if isinstance(classes, str) or len(classes) != len(cat_ids):
        raise ValueError(f"classes must hold one name per cat_ids entry ({len(cat_ids)}), got {classes!r}")
    return [str(name) for name in classes]


def results_to_coco_json(det_results: Any, img_ids: Sequence[int], cat_ids: Sequence[int],
                         out_file: str | os.PathLike | None = None) -> list[dict]:
    """Convert per-frame detections to COCO result entries, exactly like mmdet's ``_det2json``.

    Args:
        det_results: per image (in ``img_ids`` order), per class (in ``cat_ids`` order), arrays (k, 5)
            ``x1, y1, x2, y2, score`` (see :func:`normalize_det_results`).
        img_ids: COCO image id of each entry of ``det_results``.
        cat_ids: COCO category id of each class index.
        out_file: if given, the list is also written there as json (atomically).

    Returns:
        ``[{'image_id', 'bbox': [x, y, w, h], 'score', 'category_id'}, ...]`` in image, class, row order.
    """
    results = normalize_det_results(det_results, len(img_ids), len(cat_ids))
    entries = []
    for img_id, per_image in zip(img_ids, results):
        for label, boxes in enumerate(per_image):
            # float64 arithmetic on the stored (e.g. float32) values, as mmdet's `bbox.tolist()` does
            for x1, y1, x2, y2, score in np.asarray(boxes, dtype=np.float64).tolist():
                entries.append(dict(image_id=int(img_id), bbox=[x1, y1, x2 - x1, y2 - y1], score=score,
                                    category_id=int(cat_ids[label])))
    if out_file is not None:
        out_file = Path(out_file)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_file.with_name(out_file.name + ".tmp")
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, out_file)
    return entries


def load_results(coco_gt: COCO, entries: list[dict]) -> COCO:
    """``coco_gt.loadRes(entries)`` that also accepts an empty list (an empty result set)."""
    if entries:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes([dict(e) for e in entries])
    empty = COCO()
    empty.dataset = dict(images=list(coco_gt.dataset.get("images", [])),
                         categories=list(coco_gt.dataset.get("categories", [])), annotations=[])
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty


def run_cocoeval(cocoeval: COCOeval, verbose: bool = False) -> str:
    """Run ``evaluate``, ``accumulate`` and ``summarize``; return the printed summary text."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cocoeval.evaluate()
        cocoeval.accumulate()
        if cocoeval.params.areaRngLbl[:1] == ["all"] and len(cocoeval.params.areaRngLbl) == 4:
            cocoeval.summarize()
    text = buffer.getvalue()
    if verbose:
        print(text, end="")
    return text


def per_class_ap(cocoeval: COCOeval, iou: float | None = 0.5) -> list[float]:
    """AP of each category of ``cocoeval.params.catIds`` from the accumulated precision array.

    Area range 'all' and the last ``maxDets``; ``iou=None`` averages over all IoU thresholds (COCO AP),
    otherwise the threshold equal to ``iou``. A category with no ground truth gets ``nan``.
    """
    precision = cocoeval.eval["precision"]        # (iou, recall, class, area, maxDets)
    if iou is None:
        p = precision[:, :, :, 0, -1]
    else:
        index = np.flatnonzero(np.isclose(cocoeval.params.iouThrs, iou))
        if index.size == 0:
            raise ValueError(f"iou={iou} is not one of the evaluated thresholds {cocoeval.params.iouThrs}")
        p = precision[index[0]:index[0] + 1, :, :, 0, -1]
    values = []
    for k in range(p.shape[2]):
        valid = p[:, :, k][p[:, :, k] > -1]
        values.append(float(np.mean(valid)) if valid.size else float("nan"))
    return values


def coco_bbox_metrics(coco_gt: COCO | str | os.PathLike, det_results: Any,
                      img_ids: Sequence[int] | None = None, cat_ids: Sequence[int] | None = None,
                      classes: Sequence[str] | None = None, verbose: bool = False) -> dict[str, Any]:
    """COCO box metrics as mmdet's ``CocoDataset.evaluate(metric='bbox')`` computes them.

    Args:
        coco_gt: ground truth, a pycocotools ``COCO`` or the path of a COCO / CocoVID json.
        det_results: per image (in ``img_ids`` order), per class (in ``cat_ids`` order), arrays (k, 5)
            ``x1, y1, x2, y2, score`` in original-image pixels; or ``dict(det_bboxes=...)``.
        img_ids: image ids of the evaluated frames, in ``det_results`` order (default: all images of the
            json, in file order, like mmdet).
        cat_ids: category id of each class index (default: all categories, in file order).
        classes: class names for the per-class keys, one per ``cat_ids`` entry (default: the categories'
            ``name`` in the json).
        verbose: print pycocotools' summary.

    Returns:
        ``bbox_mAP, bbox_mAP_50, bbox_mAP_75, bbox_mAP_s, bbox_mAP_m, bbox_mAP_l`` (rounded to 4 decimals as
        mmdet 2.28 does), ``bbox_mAP_copypaste`` (str), ``coco_stats`` {name: unrounded value} for the 12 COCO
        stats (names in :data:`COCO_STAT_NAMES`), ``AP50_per_class`` and ``AP_per_class``
        {class name: AP at IoU 0.5 / averaged over 0.50:0.95, ``nan`` without ground truth}.
    """
    coco = load_coco(coco_gt)
    img_ids, cat_ids = resolve_ids(coco, img_ids, cat_ids)
    entries = results_to_coco_json(det_results, img_ids, cat_ids)   # validates det_results first
    return coco_entries_metrics(coco, entries, img_ids, cat_ids, classes, verbose)[0]


def coco_entries_metrics(coco: COCO, entries: list[dict], img_ids: Sequence[int], cat_ids: Sequence[int],
                         classes: Sequence[str] | None = None,
                         verbose: bool = False) -> tuple[dict[str, Any], COCOeval]:
    """:func:`coco_bbox_metrics` of COCO result entries (already checked); also returns the evaluated
    ``COCOeval`` (its ``evalImgs`` hold the matching, reused by the bootstrap)."""
    coco_dt = load_results(coco, entries)
    cocoeval = COCOeval(coco, coco_dt, "bbox")
    cocoeval.params.catIds = list(cat_ids)
    cocoeval.params.imgIds = list(img_ids)
    cocoeval.params.maxDets = list(MAX_DETS)
    cocoeval.params.iouThrs = IOU_THRS
    run_cocoeval(cocoeval, verbose=verbose)

    stats = [float(s) for s in cocoeval.stats]
    metrics: dict[str, Any] = {}
    for name, value in zip(COCO_STAT_NAMES[:6], stats[:6]):
        metrics[f"bbox_{name}"] = float(f"{value:.4f}")
    metrics["bbox_mAP_copypaste"] = " ".join(f"{v:.4f}" for v in stats[:6])
    metrics["coco_stats"] = dict(zip(COCO_STAT_NAMES, stats))
    names = class_names(coco, cat_ids, classes)
    metrics["AP50_per_class"] = dict(zip(names, per_class_ap(cocoeval, iou=0.5)))
    metrics["AP_per_class"] = dict(zip(names, per_class_ap(cocoeval, iou=None)))
    return metrics, cocoeval
