"""Test-time NMS that stops once enough boxes are kept: mmcv's CPU NMS, the same kept boxes in the same order.

mmcv's CPU ``nms`` visits every box in score order and compares each kept box with every later box still
alive, then the callers keep only the first ``max_per_img`` (300 RPN proposals, 100 detections). Greedy NMS
decides box ``j`` only from the kept boxes before it in score order, so the first ``max_num`` kept boxes do
not depend on anything after the ``max_num``-th kept one: :func:`greedy_nms` stops there, and compares each
kept box with all later boxes at once (a few vector ops per kept box instead of a C loop over every
pair); benchmarks/bench_nms.py times both on the 608x1008 test path's two calls.

The arithmetic is the kernel's, operation for operation, in float32: ``areas = (x2 - x1 + offset) *
(y2 - y1 + offset)``; for a kept box i and a later box j, ``w = max(0, min(x2_i, x2_j) - max(x1_i, x1_j) +
offset)`` (h likewise), ``inter = w * h``, ``iou = inter / (area_i + area_j - inter)``, suppressed when
``iou > iou_threshold``; boxes visited in the order of ``scores.sort(0, descending=True)``. Each of these
is one correctly rounded IEEE operation both in the kernel and in torch's vector ops, so the kept indices
are bitwise mmcv's; :func:`_reproduces_mmcv` checks this once per process on this build (a build whose
compiler fused the multiply and the subtraction would differ) and falls back to mmcv's op where it fails.
Other devices, dtypes and settings (score threshold, soft-NMS, the per-class split for >= ``split_thr``
boxes) use mmcv's functions and truncate their result.
"""
from __future__ import annotations

import functools

import torch
from mmcv.ops import batched_nms as mmcv_batched_nms
from mmcv.ops import nms as mmcv_nms
from torch import Tensor

#: mmcv's ``batched_nms`` default: at and above this many boxes it runs NMS class by class
SPLIT_THRESHOLD = 10000


def greedy_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0,
               max_num: int = -1) -> Tensor:
    """Indices of the boxes kept by greedy NMS, in score order, at most ``max_num`` (all if <= 0).

    Args:
        boxes: Tensor[N, 4] float (x1, y1, x2, y2).
        scores: Tensor[N] float.
        iou_threshold: a later box is suppressed when its IoU with a kept box is larger.
        offset: 0 or 1, added to widths and heights (mmcv's ``offset``).
        max_num: stop after this many kept boxes; <= 0 keeps all.

    Returns:
        Tensor[K] long, ``mmcv.ops.nms(boxes, scores, iou_threshold, offset, max_num=max_num)[1]``.
    """
    if (boxes.device.type != 'cpu' or boxes.dtype != torch.float32 or scores.dtype != torch.float32
            or max_num <= 0 or offset not in (0, 1) or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or not _reproduces_mmcv()):
        return mmcv_nms(boxes, scores, iou_threshold, offset=offset, max_num=max_num)[1]
    return _greedy_prefix(boxes, scores, iou_threshold, offset, max_num)


def _greedy_prefix(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int, max_num: int) -> Tensor:
    """:func:`greedy_nms` on a CPU in float32, without the checks (see the module docstring)."""
    n = boxes.size(0)
    if n == 0:
        return boxes.new_empty(0, dtype=torch.long)
    x1, y1, x2, y2 = (boxes[:, c].contiguous() for c in range(4))
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    order = scores.sort(0, descending=True)[1]
    # the boxes in the order they are visited
    x1, y1, x2, y2, areas = (t.index_select(0, order) for t in (x1, y1, x2, y2, areas))
    threshold = torch.tensor(float(iou_threshold), dtype=torch.float32)
    alive = torch.ones(n, dtype=torch.bool)
    kept = []
    i = 0
    while len(kept) < max_num:
        kept.append(i)
        rest = slice(i + 1, n)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + offset).clamp_(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + offset).clamp_(min=0)
        inter = w.mul_(h)
        iou = inter / (areas[i] + areas[rest] - inter)
        alive[rest] &= ~(iou > threshold)
        later = alive[i + 1:].nonzero()
        if later.numel() == 0:
            break
        i += 1 + int(later[0])
    return order[torch.tensor(kept, dtype=torch.long)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, nms_cfg: dict | None,
                max_num: int = -1) -> tuple[Tensor, Tensor]:
    """``mmcv.ops.batched_nms(boxes, scores, idxs, nms_cfg)`` truncated to its first ``max_num`` rows (all if
    <= 0), with :func:`greedy_nms` for plain NMS below ``split_thr`` boxes.

    Args:
        boxes: Tensor[N, 4] float; scores: Tensor[N]; idxs: Tensor[N] long, the class (or level) of each box:
            boxes of different idxs never suppress each other.
        nms_cfg: mmcv's nms config, e.g. ``dict(type='nms', iou_threshold=0.5)``; None: no NMS (mmcv's
            meaning), the boxes in score order.
        max_num: the most rows returned.

    Returns:
        dets Tensor[K, 5] (boxes and score) and keep Tensor[K] long, indices into ``boxes``.
    """
    if nms_cfg is not None and boxes.numel() == 0:
        return boxes.new_zeros(0, 5), boxes.new_zeros(0, dtype=torch.long)
    if nms_cfg is None or not _plain_below_split(nms_cfg, boxes):
        dets, keep = mmcv_batched_nms(boxes, scores, idxs, nms_cfg)
        return (dets[:max_num], keep[:max_num]) if max_num > 0 else (dets, keep)
    cfg = nms_cfg
    limit = cfg.get('max_num', -1)
    if max_num > 0:
        limit = max_num if limit <= 0 else min(limit, max_num)
    # mmcv's offsets, so that boxes of different idxs never overlap (the same float sums)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    keep = greedy_nms(boxes + offsets[:, None], scores, cfg['iou_threshold'], int(cfg.get('offset', 0)),
                      limit)
    return torch.cat([boxes[keep], scores[keep][:, None]], -1), keep


def _plain_below_split(nms_cfg: dict, boxes: Tensor) -> bool:
    """Whether mmcv's ``batched_nms`` would run plain NMS on all of ``boxes`` at once (type ``nms``, not
    class-agnostic, fewer than ``split_thr`` boxes of 4 coordinates, no score threshold) with no settings
    but ``iou_threshold``, ``offset`` and ``max_num``: the case :func:`greedy_nms` reproduces."""
    cfg = dict(nms_cfg)
    return (cfg.pop('type', 'nms') == 'nms' and not cfg.pop('class_agnostic', False)
            and boxes.size(0) < cfg.pop('split_thr', SPLIT_THRESHOLD) and boxes.size(-1) == 4
            and not cfg.pop('score_threshold', 0) > 0 and set(cfg) <= {'iou_threshold', 'offset', 'max_num'})


def multiclass_nms(multi_bboxes: Tensor, multi_scores: Tensor, score_thr: float, nms_cfg: dict,
                   max_num: int = -1) -> tuple[Tensor, Tensor]:
    """mmdet's ``multiclass_nms`` (no score factors, no ONNX export) with :func:`batched_nms`.

    Args:
        multi_bboxes: Tensor[n, 4 * C] (class-specific) or Tensor[n, 4].
        multi_scores: Tensor[n, C + 1], the background last.
        score_thr: boxes scoring at or below it are dropped before NMS.
        nms_cfg: mmcv's nms config.
        max_num: the most detections kept; <= 0 keeps all.

    Returns:
        dets Tensor[k, 5] (x1, y1, x2, y2, score) and labels Tensor[k] long.
    """
    num_classes = multi_scores.size(1) - 1
    if multi_bboxes.size(1) > 4:
        bboxes = multi_bboxes.view(multi_scores.size(0), -1, 4)
    else:
        bboxes = multi_bboxes[:, None].expand(multi_scores.size(0), num_classes, 4)
    scores = multi_scores[:, :-1]
    labels = torch.arange(num_classes, dtype=torch.long, device=scores.device).view(1, -1).expand_as(scores)
    bboxes, scores, labels = bboxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    inds = (scores > score_thr).nonzero(as_tuple=False).squeeze(1)
    bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]
    if bboxes.numel() == 0:
        return torch.cat([bboxes, scores[:, None]], -1), labels
    dets, keep = batched_nms(bboxes, scores, labels, nms_cfg, max_num)
    return dets, labels[keep]


@functools.lru_cache(maxsize=1)
def _reproduces_mmcv() -> bool:
    """Whether :func:`_greedy_prefix` keeps exactly the boxes mmcv's CPU ``nms`` keeps, in its order: on
    clustered random boxes (near-duplicates, exact duplicates, zero-size boxes, equal scores) at two IoU
    thresholds and both offsets, and on pairs of boxes whose IoU sweeps the threshold over consecutive
    float32 values (where a build that fused the kernel's multiply and subtraction would decide some pairs
    the other way). The loop does not look past the ``max_num``-th kept box, so a prefix of the whole run
    is the run with that ``max_num``: the whole run is compared."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.rand(20, 2, generator=gen) * 500
    xy = centers.repeat_interleave(30, dim=0) + torch.randn(600, 2, generator=gen) * 12
    wh = torch.rand(600, 2, generator=gen) * 90
    wh[::97] = 0  # zero-size boxes
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    boxes[1::50] = boxes[0::50]  # exact duplicates
    scores = torch.rand(600, generator=gen)
    scores[::7] = 0.5  # equal scores
    cases = [(boxes, scores, threshold, offset) for threshold in (0.5, 0.7) for offset in (0, 1)]
    for threshold in (0.5, 0.7):
        cases.append((*_threshold_sweep(threshold, gen), threshold, 0))
    for boxes, scores, threshold, offset in cases:
        expected = mmcv_nms(boxes, scores, threshold, offset=offset)[1]
        got = _greedy_prefix(boxes, scores, threshold, offset, boxes.size(0))
        if not torch.equal(got, expected):
            return False
    return True


def _threshold_sweep(threshold: float, gen: torch.Generator, pairs: int = 400) -> tuple[Tensor, Tensor]:
    """``pairs`` pairs of boxes, each pair far from the others: a box of random size and, shifted right by
    the shift that gives IoU ``threshold`` moved by -pairs/2 .. pairs/2 float32 steps, a copy of it with a
    lower score; Tensor[2 * pairs, 4] and Tensor[2 * pairs]."""
    size = 20 + torch.rand(pairs, 2, generator=gen) * 80
    # shift s along x with IoU t: (w - s) h / (2 w h - (w - s) h) = t  ->  s = w (1 - 2 t / (1 + t))
    shift = size[:, 0] * (1 - 2 * threshold / (1 + threshold))
    steps = torch.arange(pairs, dtype=torch.float32) - pairs // 2
    shift = shift + steps * (torch.nextafter(shift, shift + 1) - shift)
    origin = torch.stack([torch.arange(pairs, dtype=torch.float32) * 300, torch.zeros(pairs)], dim=1)
    first = torch.cat([origin, origin + size], dim=1)
    second = first + torch.stack([shift, torch.zeros(pairs), shift, torch.zeros(pairs)], dim=1)
    boxes = torch.stack([first, second], dim=1).reshape(-1, 4)
    scores = torch.stack([torch.full((pairs,), 0.9), torch.full((pairs,), 0.8)], dim=1).reshape(-1)
    return boxes, scores
