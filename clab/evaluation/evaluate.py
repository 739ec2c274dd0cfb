"""Every metric of the kit from one set of detections: the neutral evaluator (issue 10, points 2, 4, 5).

:func:`evaluate_entries` scores COCO result entries against a CocoVID (or COCO) ground truth with

- COCO's protocol as mmdet computes it (:mod:`clab.evaluation.coco_metrics`): ``bbox_mAP_50`` (the
  headline, the paper's metric), the other COCO stats, AP per class;
- the kit's COCO-style motion split (:mod:`clab.evaluation.speed_split`) under ``speed``;
- the ILSVRC VID devkit's protocol (:mod:`clab.evaluation.vid_devkit`): ``vid_mAP_50`` and per class;
- FGFA's motion split (:mod:`clab.evaluation.fgfa_motion`): ``vid_mAP_50_slow / medium / fast``;
- a bootstrap interval over videos of ``bbox_mAP_50`` (:mod:`clab.evaluation.bootstrap`) under
  ``bootstrap``; the match table it resamples can be saved (``matches.npz``) to bootstrap the paired
  difference of two models later.

``clab test`` calls it on its own detections (through :func:`clab.evaluation.coco_metrics.results_to_coco_json`,
the same entries it writes to ``coco_results.json``) and ``clab evaluate`` on a results json from any
detector, so both give the same numbers for the same detections.

Frames are evaluated in increasing image id (COCO's own order; for converted ImageNet VID also the
devkit's video-then-frame order), whatever the order of the caller's list, so that ties between equal
scores are broken the same way in every entry point. Motion splits need video frames (``video_id``,
``frame_id``, ``instance_id``); without them their keys are NaN and ``notes`` says why.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from pycocotools.coco import COCO

from ..io import load_json
from .bootstrap import save_match_table, table_from_cocoeval, units_of_images, video_bootstrap
from .coco_metrics import class_names, coco_entries_metrics, load_coco, resolve_ids, results_to_coco_json
from .fgfa_motion import fgfa_motion_iou, fgfa_motion_metrics
from .speed_split import SPEED_RANGES, speed_split_entries
from .vid_devkit import detections_from_entries, devkit_match, gt_from_coco, image_pairs, vid_map_metrics

__all__ = ["evaluate_entries", "evaluate_dataset", "check_result_entries", "load_result_entries", "HEADLINE_KEYS"]

#: the keys every metrics.json of the kit has at its top level
HEADLINE_KEYS = ("bbox_mAP_50", "vid_mAP_50", "vid_mAP_50_slow", "vid_mAP_50_medium", "vid_mAP_50_fast")


def _has_video_frames(coco: COCO, img_ids: Sequence[int]) -> bool:
    return all(coco.imgs[i].get("video_id") is not None and coco.imgs[i].get("frame_id") is not None
               for i in img_ids)


def evaluate_entries(coco: COCO | str | os.PathLike, entries: list[dict], img_ids: Sequence[int] | None = None,
                     cat_ids: Sequence[int] | None = None, classes: Sequence[str] | None = None,
                     n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                     matches_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """All metrics of checked COCO result entries (see module docstring).

    Args:
        coco: ground truth (pycocotools ``COCO`` or path).
        entries: ``[{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}, ...]`` whose ids are in
            ``img_ids`` / ``cat_ids`` (see :func:`check_result_entries`).
        img_ids: evaluated frames (default: every image of the ground truth).
        cat_ids: evaluated categories, in class order (default: all, in file order).
        classes: class names for the per-class keys (default: the json's names).
        n_boot: bootstrap replicates (0 skips the bootstrap).
        seed, confidence: of the bootstrap.
        matches_file: where to save the bootstrap's match table (``.npz``), if given.

    Returns:
        the keys of :func:`clab.evaluation.coco_metrics.coco_bbox_metrics`, ``speed`` (COCO-style split),
        ``vid_mAP_50``, ``vid_AP50_per_class``, ``vid_num_gts``, ``vid_mAP_50_{slow,medium,fast}`` with
        their per-class dicts and object counts, ``bootstrap`` ({'method', 'n_videos', 'n_boot',
        'confidence', 'seed', 'bbox_mAP_50', 'ci_low', 'ci_high', 'boot_std'}), ``num_images``,
        ``num_detections`` and ``notes`` (list of str).
    """
    coco = load_coco(coco)
    img_ids, cat_ids = resolve_ids(coco, img_ids, cat_ids)
    img_ids = sorted(img_ids)
    names = class_names(coco, cat_ids, classes)
    notes: list[str] = []

    metrics, cocoeval = coco_entries_metrics(coco, entries, img_ids, cat_ids, names)
    videos = _has_video_frames(coco, img_ids)
    motion_iou = fgfa_motion_iou(coco.dataset) if videos else None
    if videos:
        metrics["speed"] = speed_split_entries(coco, entries, img_ids, cat_ids, motion_iou, classes=names)
    else:
        notes.append("no motion split: the frames have no video_id/frame_id")
        metrics["speed"] = {f"bbox_mAP_50_{r}": math.nan for r in ("all", *SPEED_RANGES)}

    gt = gt_from_coco(coco, img_ids, cat_ids)
    dets = detections_from_entries(entries, img_ids, cat_ids)
    pairs = image_pairs(dets, gt)
    matched = devkit_match(dets, gt, pairs=pairs)
    metrics.update(vid_map_metrics(dets, gt, names, matched=matched))
    if videos:
        metrics.update(fgfa_motion_metrics(dets, gt, names, motion_iou, matched=matched, pairs=pairs))
    else:
        for r in ("slow", "medium", "fast"):
            metrics[f"vid_mAP_50_{r}"] = math.nan

    if n_boot:
        unit_of_image, unit_names = units_of_images(coco, img_ids)
        table = table_from_cocoeval(cocoeval, unit_of_image, unit_names, cat_ids, names, iou_thr=0.5)
        if matches_file is not None:
            save_match_table(table, matches_file)
        boot = video_bootstrap({"model": table}, n_boot=n_boot, seed=seed, confidence=confidence, pairs=())
        model = boot["models"]["model"]
        metrics["bootstrap"] = {k: boot[k] for k in ("method", "n_videos", "n_boot", "confidence", "seed")}
        metrics["bootstrap"].update(model)
        if not videos:
            notes.append("bootstrap resamples frames: the frames have no video_id")
    metrics["num_images"] = len(img_ids)
    metrics["num_detections"] = len(entries)
    metrics["notes"] = notes
    return metrics


def evaluate_dataset(dataset, det_results: list, matches_file: str | os.PathLike | None = None,
                     n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """:func:`evaluate_entries` of an mmdet / mmtracking test dataset's detections (what ``clab test`` uses).

    Args:
        dataset: a built test dataset with ``coco``, ``img_ids``, ``cat_ids`` and ``CLASSES``.
        det_results: per frame of ``dataset.img_ids``, per class, ``ndarray (k, 5)`` ``x1, y1, x2, y2, score``.
        matches_file: where to save the bootstrap's match table, if given.
        n_boot, seed: of the bootstrap over videos (``n_boot=0``: none).
    """
    entries = results_to_coco_json(det_results, dataset.img_ids, dataset.cat_ids)
    return evaluate_entries(dataset.coco, entries, dataset.img_ids, dataset.cat_ids, classes=dataset.CLASSES,
                            n_boot=n_boot, seed=seed, matches_file=matches_file)


def _entry_error(path: Path, i: int, message: str) -> ValueError:
    return ValueError(f"{path}: entry {i}: {message}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_result_entries(entries: Any, coco: COCO, path: str | os.PathLike,
                         ann_path: str | os.PathLike | None = None) -> list[dict]:
    """Check a COCO results list against the ground truth; the first bad entry raises a ``ValueError``
    that names the file, the entry index and what is wrong (unknown image or category id, a missing or
    malformed field)."""
    path = Path(path)
    where = f" of {ann_path}" if ann_path is not None else ""
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...], "
                         f"got a json {type(entries).__name__}")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise _entry_error(path, i, f"expected an object with image_id, category_id, bbox, score, got {e!r}")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in e]
        if missing:
            raise _entry_error(path, i, f"missing {', '.join(missing)}")
        img_id, cat_id, bbox, score = e["image_id"], e["category_id"], e["bbox"], e["score"]
        if not isinstance(img_id, int) or isinstance(img_id, bool) or img_id not in coco.imgs:
            raise _entry_error(path, i, f"image_id {img_id!r} is not an image of the annotations{where}")
        if not isinstance(cat_id, int) or isinstance(cat_id, bool) or cat_id not in coco.cats:
            raise _entry_error(path, i, f"category_id {cat_id!r} is not a category of the annotations{where} "
                                        f"(known: {sorted(coco.cats)})")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise _entry_error(path, i, f"bbox must be [x, y, w, h] of 4 finite numbers, got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise _entry_error(path, i, f"bbox width and height must be >= 0, got {bbox!r}")
        if not _is_number(score):
            raise _entry_error(path, i, f"score must be a finite number, got {score!r}")
        out.append(dict(image_id=img_id, category_id=cat_id, bbox=[float(v) for v in bbox], score=float(score)))
    return out


def load_result_entries(results_file: str | os.PathLike, coco: COCO,
                        ann_path: str | os.PathLike | None = None) -> list[dict]:
    """Load and check a COCO results json (see :func:`check_result_entries`)."""
    entries = load_json(results_file, "COCO results json")
    return check_result_entries(entries, coco, results_file, ann_path)
