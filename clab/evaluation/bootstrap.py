"""Bootstrap confidence intervals of mAP@50 over videos, for one run and for a paired difference (issue 10.2).

Frames of a video are not independent (the same objects, the same scene, the detector's per-video reference
cache), so the resampled unit is the **video**: a bootstrap replicate draws as many videos as the set has,
with replacement, and recomputes mAP@50 on the detections and ground truths of the drawn videos (a video
drawn twice counts twice). The interval is the percentile interval of the replicates. For the gain of one
model over another, both models are scored on the *same* drawn videos in every replicate, so the interval
of the difference accounts for the videos both models find hard.

**Match once, resample counts.** Matching detections to ground truth happens inside a frame, so it does
not change when videos are resampled. :func:`match_detections` matches once as pycocotools' ``COCOeval``
does (IoU 0.5, area 'all', at most 1000 detections per frame and class, as ``bbox_mAP_50`` uses them;
:mod:`clab.evaluation.coco_match`, or :func:`table_from_cocoeval` from a finished ``COCOeval``) and keeps, per
class, every counted detection in COCO's score order with its video and whether it is a true positive
(detections matched to an ignored or crowd object are dropped, as COCO drops them), plus the number of
counted ground truths per video and class: a :class:`MatchTable`. A replicate only needs per-video
weights: the cumulative true/false positive counts become weighted cumulative sums and COCO's 101-point
interpolated AP is evaluated on them. With all weights 1 this is, operation for operation, what
``COCOeval.accumulate`` computes, so the point estimate equals ``bbox_mAP_50`` of
:func:`clab.evaluation.coco_metrics.coco_bbox_metrics` (unrounded; the two differ only by the order in
which the 101 x classes precision values are summed, about 1e-16).

Exact savings: the precision envelope only takes values at true positives, so a replicate needs the
weighted counts at the true positives only: cumulative true positives, and cumulative false positives
through a sparse (true positive x video) count of the false positives ranked just before each one, times
the weights (false positives below the last true positive drop out). Copies of a drawn video share one
weight instead of being materialised (copies of equal score may then be ordered differently than in a
materialised concatenation, which only moves points that never lie on the precision envelope).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from ..io import atomic_open
from .coco_match import IGNORED, TP, CocoMatch, match_coco
from .coco_metrics import MAX_DETS, class_names, load_coco, resolve_ids, results_to_coco_json

__all__ = ["MatchTable", "units_of_images", "match_detections", "table_from_entries", "table_from_match",
           "table_from_cocoeval",
           "coco_ap101",
           "table_map", "video_bootstrap", "save_match_table", "load_match_table"]

#: COCO's 101 recall thresholds 0.00, 0.01, ..., 1.00, exactly as pycocotools builds them
REC_THRS = Params(iouType="bbox").recThrs
_EPS = np.spacing(1)
_NPZ_VERSION = 1


@dataclass
class MatchTable:
    """Detections of one model matched once to the ground truth, grouped by class.

    Attributes:
        scores: float64 (D,), detection scores; class by class (``class_offsets``), each class in COCO's
            accumulation order (score descending, ties by image id, then by rank in the image).
        tp: bool (D,), True for a true positive, False for a false positive.
        units: int64 (D,), index into ``unit_names`` of the video (unit) of each detection's frame.
        class_offsets: int64 (C + 1,), detections of class ``c`` are ``[class_offsets[c], class_offsets[c+1])``.
        npos: int64 (U, C), counted (not ignored, not crowd) ground truths per unit and class.
        unit_names: (U,) str, ``'video <id>'`` (or ``'image <id>'`` for a frame without ``video_id``).
        cat_ids: (C,) COCO category id of each class index.
        classes: (C,) class names.
        iou_thr: the matching IoU threshold.
    """

    scores: np.ndarray
    tp: np.ndarray
    units: np.ndarray
    class_offsets: np.ndarray
    npos: np.ndarray
    unit_names: list[str]
    cat_ids: list[int]
    classes: list[str]
    iou_thr: float = 0.5
    meta: dict = field(default_factory=dict)

    @property
    def num_units(self) -> int:
        return len(self.unit_names)

    def class_slice(self, c: int) -> slice:
        return slice(int(self.class_offsets[c]), int(self.class_offsets[c + 1]))


def units_of_images(coco: COCO, img_ids: Sequence[int]) -> tuple[dict[int, int], list[str]]:
    """``({image id: unit index}, unit names)``: frames grouped by ``video_id`` in order of appearance;
    a frame without ``video_id`` (a still image) is its own unit."""
    index: dict[str, int] = {}
    of_image: dict[int, int] = {}
    for img_id in img_ids:
        info = coco.imgs[img_id]
        name = f"video {info['video_id']}" if info.get("video_id") is not None else f"image {img_id}"
        of_image[int(img_id)] = index.setdefault(name, len(index))
    return of_image, list(index)


def table_from_cocoeval(cocoeval: COCOeval, unit_of_image: Mapping[int, int], unit_names: Sequence[str],
                        cat_ids: Sequence[int], classes: Sequence[str], iou_thr: float = 0.5) -> MatchTable:
    """Build a :class:`MatchTable` from a ``COCOeval`` whose ``evaluate()`` has run.

    The evaluation must include IoU ``iou_thr`` and the area range 'all' ([0, 1e10]); the detections
    counted are those of its last ``maxDets`` (what COCO's AP summaries use). ``cat_ids`` / ``classes`` give
    the class order of the table (a subset or reordering of ``cocoeval.params.catIds``).
    """
    p = cocoeval.params
    if not getattr(cocoeval, "evalImgs", None):
        raise ValueError("cocoeval has not been evaluated: call evaluate() first")
    t_index = np.flatnonzero(np.isclose(p.iouThrs, iou_thr))
    if t_index.size == 0:
        raise ValueError(f"iou_thr={iou_thr} is not one of the evaluated thresholds {list(p.iouThrs)}")
    t = int(t_index[0])
    areas = [list(map(float, a)) for a in p.areaRng]
    if [0.0, 1e5 ** 2] not in areas:
        raise ValueError(f"cocoeval has no area range 'all' [0, 1e10]: {p.areaRng}")
    a = areas.index([0.0, 1e5 ** 2])
    eval_cats = list(p.catIds) if p.useCats else [-1]
    img_list = list(p.imgIds)
    n_areas, n_imgs = len(p.areaRng), len(img_list)
    max_det = p.maxDets[-1]

    scores, tps, units, offsets = [], [], [], [0]
    npos = np.zeros((len(unit_names), len(cat_ids)), np.int64)
    for c, cat_id in enumerate(cat_ids):
        if cat_id not in eval_cats:
            raise ValueError(f"category {cat_id} was not evaluated by cocoeval (catIds {eval_cats})")
        k = eval_cats.index(cat_id)
        cls_scores, cls_tp, cls_units = [], [], []
        for i, img_id in enumerate(img_list):
            e = cocoeval.evalImgs[k * n_areas * n_imgs + a * n_imgs + i]
            if e is None:
                continue
            u = unit_of_image[int(img_id)]
            npos[u, c] += int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            d_scores = np.asarray(e["dtScores"][:max_det], np.float64)
            if d_scores.size == 0:
                continue
            matched = np.asarray(e["dtMatches"])[t, :max_det] > 0
            ignored = np.asarray(e["dtIgnore"])[t, :max_det].astype(bool)
            keep = ~ignored
            cls_scores.append(d_scores[keep])
            cls_tp.append(matched[keep])
            cls_units.append(np.full(int(keep.sum()), u, np.int64))
        if cls_scores:
            s = np.concatenate(cls_scores)
            order = np.argsort(-s, kind="mergesort")     # COCO's order: stable on the image-order concat
            scores.append(s[order])
            tps.append(np.concatenate(cls_tp)[order])
            units.append(np.concatenate(cls_units)[order])
            offsets.append(offsets[-1] + s.size)
        else:
            offsets.append(offsets[-1])
    cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
    return MatchTable(scores=cat(scores, np.float64), tp=cat(tps, bool), units=cat(units, np.int64),
                      class_offsets=np.asarray(offsets, np.int64), npos=npos, unit_names=list(unit_names),
                      cat_ids=[int(c) for c in cat_ids], classes=[str(n) for n in classes],
                      iou_thr=float(iou_thr))


def match_detections(coco: COCO | str | os.PathLike, det_results: Any, img_ids: Sequence[int] | None = None,
                     cat_ids: Sequence[int] | None = None, iou_thr: float = 0.5,
                     classes: Sequence[str] | None = None) -> MatchTable:
    """Match one model's detections to the ground truth once, as COCO does (see module docstring).

    The matching is :func:`clab.evaluation.coco_match.match_coco` (``COCOeval``'s decisions from arrays,
    without its per-detection dicts); :func:`table_from_cocoeval` gives the same table from a ``COCOeval``
    that has already run.

    Args:
        coco: ground truth, a pycocotools ``COCO`` or the path of a CocoVID / COCO json.
        det_results: mmdet format: per image (in ``img_ids`` order) a list (per class, in ``cat_ids`` order)
            of ``ndarray (k, 5)`` rows ``x1, y1, x2, y2, score``; or ``dict(det_bboxes=...)``.
        img_ids: evaluated frames (default: all images of the json, in file order).
        cat_ids: category id of each class index (default: all categories, in file order).
        iou_thr: matching IoU threshold (0.5 for ``bbox_mAP_50``).
        classes: class names (default: the json's category names).
    """
    coco = load_coco(coco)
    img_ids, cat_ids = resolve_ids(coco, img_ids, cat_ids)
    entries = results_to_coco_json(det_results, img_ids, cat_ids)
    return table_from_entries(coco, entries, img_ids, cat_ids, class_names(coco, cat_ids, classes), iou_thr)


def table_from_entries(coco: COCO, entries: Sequence[Mapping[str, Any]], img_ids: Sequence[int],
                       cat_ids: Sequence[int], classes: Sequence[str], iou_thr: float = 0.5,
                       max_dets: int = MAX_DETS[-1]) -> MatchTable:
    """:class:`MatchTable` of checked COCO result entries (``bbox`` ``[x, y, w, h]``), counting at most
    ``max_dets`` detections per frame and class."""
    m = match_coco(coco, entries, img_ids, cat_ids, iou_thr=iou_thr, max_dets=max_dets)
    return table_from_match(m, coco, cat_ids, classes, iou_thr)


def table_from_match(m: CocoMatch, coco: COCO, cat_ids: Sequence[int], classes: Sequence[str],
                     iou_thr: float = 0.5) -> MatchTable:
    """:class:`MatchTable` of a :class:`clab.evaluation.coco_match.CocoMatch` (videos as units)."""
    unit_of_image, unit_names = units_of_images(coco, m.img_ids)
    unit_of_index = np.asarray([unit_of_image[i] for i in m.img_ids], np.int64)
    counted = m.status != IGNORED
    label = m.label[counted]
    npos = np.zeros((len(unit_names), len(cat_ids)), np.int64)
    np.add.at(npos, (unit_of_index[m.gt_image[m.gt_counted]], m.gt_label[m.gt_counted]), 1)
    offsets = np.searchsorted(label, np.arange(len(cat_ids) + 1))
    return MatchTable(scores=m.score[counted], tp=m.status[counted] == TP, units=unit_of_index[m.image[counted]],
                      class_offsets=offsets.astype(np.int64), npos=npos, unit_names=unit_names,
                      cat_ids=[int(c) for c in cat_ids], classes=[str(n) for n in classes], iou_thr=float(iou_thr))


def coco_ap101(tp_cum: np.ndarray, fp_cum: np.ndarray, npos: np.ndarray) -> np.ndarray:
    """COCO's 101-point interpolated AP of each row of cumulative counts.

    Args:
        tp_cum, fp_cum: float64 (B, D), cumulative (weighted) true / false positive counts along the score
            order, one row per replicate.
        npos: (B,), counted ground truths of each row (> 0).

    Returns:
        float64 (B,): the mean over the 101 recall thresholds of the precision envelope (the greatest
        precision at a recall at least the threshold), 0 where the recall does not reach it.
    """
    tp_cum = np.atleast_2d(tp_cum)
    fp_cum = np.atleast_2d(fp_cum)
    n_rows, n = tp_cum.shape
    out = np.zeros(n_rows)
    if n == 0:
        return out
    recall = tp_cum / np.asarray(npos, np.float64)[:, None]
    precision = tp_cum / (fp_cum + tp_cum + _EPS)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    q = np.zeros(REC_THRS.size)
    for b in range(n_rows):
        inds = np.searchsorted(recall[b], REC_THRS, side="left")
        q[:] = 0.0
        inside = inds < n
        q[inside] = envelope[b, inds[inside]]
        out[b] = np.mean(q)
    return out


def _class_parts(table: MatchTable, c: int):
    """What the AP of class ``c`` depends on: the unit of each true positive, in score order (T,), and a
    sparse (T, U) count of the false positives ranked after true positive ``k - 1`` and before ``k``, per
    unit (false positives below the last true positive dropped). ``None`` without a true positive."""
    from scipy.sparse import csr_matrix
    sl = table.class_slice(c)
    tp, units = table.tp[sl], table.units[sl]
    tp_pos = np.flatnonzero(tp)
    if tp_pos.size == 0:
        return None
    fp_pos = np.flatnonzero(~tp[:tp_pos[-1] + 1])
    segment = np.searchsorted(tp_pos, fp_pos)               # the true positive each false positive precedes
    fp_counts = csr_matrix((np.ones(fp_pos.size), (segment, units[fp_pos])), shape=(tp_pos.size, table.num_units))
    return units[tp_pos], fp_counts


def table_map(table: MatchTable, weights: np.ndarray | None = None,
              max_elements: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """mAP@IoU of the table under per-unit weights.

    Args:
        table: a :class:`MatchTable`.
        weights: (B, U) non-negative unit multiplicities, one row per replicate (default: one row of ones,
            the full set).
        max_elements: rows are processed in batches of at most this many (row x detection) cells.

    Returns:
        ``(map (B,), ap (B, C))``: per-class AP is NaN for a class without counted ground truth in that
        row; the mAP is the mean over the other classes (NaN if there is none), as COCO averages.
    """
    if weights is None:
        weights = np.ones((1, table.num_units))
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 2 or weights.shape[1] != table.num_units:
        raise ValueError(f"weights must have shape (B, {table.num_units}), got {weights.shape}")
    n_rows, n_classes = weights.shape[0], len(table.cat_ids)
    ap = np.full((n_rows, n_classes), np.nan)
    npos = weights @ table.npos.astype(np.float64)                       # (B, C)
    for c in range(n_classes):
        rows = np.flatnonzero(npos[:, c] > 0)
        if rows.size == 0:
            continue
        parts = _class_parts(table, c)
        if parts is None:
            ap[rows, c] = 0.0
            continue
        tp_units, fp_counts = parts
        step = max(1, max_elements // tp_units.size)
        for start in range(0, rows.size, step):
            w = weights[rows[start:start + step]]                               # (b, U)
            tp_cum = np.cumsum(w[:, tp_units], axis=1)                          # (b, T)
            fp_cum = np.cumsum(np.asarray(fp_counts @ w.T).T, axis=1)           # (b, T)
            ap[rows[start:start + step], c] = coco_ap101(tp_cum, fp_cum, npos[rows[start:start + step], c])
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(ap)
        mean = np.where(valid.any(axis=1), np.nansum(ap, axis=1) / np.maximum(valid.sum(axis=1), 1), np.nan)
    return mean, ap


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def video_bootstrap(tables: Mapping[str, MatchTable], n_boot: int = 1000, seed: int = 0,
                    confidence: float = 0.95,
                    pairs: Sequence[tuple[str, str]] = (("baseline", "clab"),)) -> dict[str, Any]:
    """Percentile bootstrap over videos of mAP@50 for each model and for paired differences.

    Args:
        tables: ``{model name: MatchTable}``, all on the same videos (same ``unit_names``).
        n_boot: number of replicates.
        seed: seed of the replicates (numpy ``default_rng``); the same seed gives the same intervals.
        confidence: coverage of the intervals.
        pairs: ``(a, b)`` name pairs; each gives the difference ``b - a`` under key ``'b-a'``. Pairs naming
            a model that is not in ``tables`` are skipped.

    Returns:
        ``{'method': str (one sentence for table captions), 'n_videos', 'n_boot', 'confidence', 'seed',
        'models': {name: {'bbox_mAP_50' (full-set point estimate), 'ci_low', 'ci_high', 'boot_std',
        'boot_mean'}}, (AP is not linear in the per-video counts, so the replicates' mean can differ from the
        point estimate and the percentile interval need not be centred on it; ``boot_mean`` shows by how much),
        'differences': {'b-a': {'mean' (full-set point difference), 'ci_low', 'ci_high', 'boot_std',
        'excludes_zero'}}}``.
    """
    if not tables:
        raise ValueError("tables is empty: need at least one model's MatchTable")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    names = list(tables)
    reference = tables[names[0]].unit_names
    for name in names[1:]:
        if tables[name].unit_names != reference:
            raise ValueError(f"model {name!r} was evaluated on other videos than {names[0]!r}: a paired "
                             "bootstrap needs the same videos for every model")
    n_units = len(reference)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=int(n_boot)).astype(np.float64)

    point, boot = {}, {}
    for name in names:
        point[name] = float(table_map(tables[name])[0][0])
        boot[name] = table_map(tables[name], weights)[0]
    models = {}
    for name in names:
        low, high = _percentile_interval(boot[name], confidence)
        models[name] = {"bbox_mAP_50": point[name], "ci_low": low, "ci_high": high,
                        "boot_std": float(np.nanstd(boot[name], ddof=1)) if n_boot > 1 else float("nan"),
                        "boot_mean": float(np.nanmean(boot[name]))}
    differences = {}
    for a, b in pairs:
        if a not in tables or b not in tables:
            continue
        diff = boot[b] - boot[a]
        low, high = _percentile_interval(diff, confidence)
        differences[f"{b}-{a}"] = {
            "mean": point[b] - point[a], "ci_low": low, "ci_high": high,
            "boot_std": float(np.nanstd(diff, ddof=1)) if n_boot > 1 else float("nan"),
            "excludes_zero": bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))}
    pct = f"{100 * confidence:g}%"
    videos = all(u.startswith("video ") for u in reference)
    unit, units = ("video", "videos") if videos else ("frame", "frames (they have no video_id)")
    method = (f"{pct} percentile bootstrap over the {n_units} validation {units} ({int(n_boot)} resamples of "
              f"whole {unit}s with replacement, seed {seed}); detections are matched once at IoU "
              f"{tables[names[0]].iou_thr:g} as COCO does and mAP@50 is recomputed on each resample"
              + (f"; differences use the same resampled {unit}s for both models." if differences else "."))
    return {"method": method, "n_videos": n_units, "n_boot": int(n_boot), "confidence": float(confidence),
            "seed": int(seed), "models": models, "differences": differences}


def save_match_table(table: MatchTable, path: str | os.PathLike) -> None:
    """Write ``table`` to a compressed ``.npz`` (atomically)."""
    meta = dict(version=_NPZ_VERSION, unit_names=table.unit_names, cat_ids=table.cat_ids,
                classes=table.classes, iou_thr=table.iou_thr, meta=table.meta)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, scores=table.scores, tp=table.tp, units=table.units,
                            class_offsets=table.class_offsets, npos=table.npos,
                            meta=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8))


def load_match_table(path: str | os.PathLike) -> MatchTable:
    """Read a table written by :func:`save_match_table`; a clear error for a file that is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"match table {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("scores", "tp", "units", "class_offsets", "npos", "meta")}
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a match table .npz written by clab ({err})") from None
    meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    if meta.get("version") != _NPZ_VERSION:
        raise ValueError(f"{path}: match table version {meta.get('version')}, expected {_NPZ_VERSION}")
    return MatchTable(scores=arrays["scores"], tp=arrays["tp"].astype(bool), units=arrays["units"],
                      class_offsets=arrays["class_offsets"], npos=arrays["npos"],
                      unit_names=list(meta["unit_names"]), cat_ids=list(meta["cat_ids"]),
                      classes=list(meta["classes"]), iou_thr=float(meta["iou_thr"]), meta=meta.get("meta", {}))
