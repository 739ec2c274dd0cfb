"""Statistics of a CocoVID (or plain COCO) annotation json, and FGFA's motion IoU (SPEC.md 3.2, 4).

Motion IoU (Zhu et al., "Flow-Guided Feature Aggregation", sec. 5): the motion IoU of a ground-truth box
is the mean IoU between it and the boxes of the *same instance* (same ``video_id`` and ``instance_id``) in
the frames ``f - 10 .. f + 10`` (the box's own frame excluded; frames where the instance has no box are
skipped). A box whose instance appears in no other frame of that window gets ``isolated`` (0.0 by default,
as the empty entries of FGFA's ground-truth table count as 0). IoU is computed on ``[x, y, w, h]`` boxes
without the +1 pixel convention. Speed classes: **slow** miou > 0.9, **medium** 0.7 <= miou <= 0.9,
**fast** miou < 0.7.

CLI: ``clab dataset-stats ANN_JSON [--json OUT]`` prints a table and optionally writes the statistics.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from clab.io import atomic_write_json, load_json

__all__ = [
    "MOTION_THRESHOLDS", "motion_class", "box_iou_xywh", "motion_iou_per_annotation", "load_coco",
    "dataset_statistics", "format_statistics", "add_arguments", "run",
]

#: (fast below, slow above): fast < 0.7 <= medium <= 0.9 < slow
MOTION_THRESHOLDS = (0.7, 0.9)
_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def motion_class(miou: float) -> str:
    """``'slow'`` (> 0.9), ``'medium'`` (0.7..0.9) or ``'fast'`` (< 0.7)."""
    lo, hi = MOTION_THRESHOLDS
    return "slow" if miou > hi else "fast" if miou < lo else "medium"


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of ``a`` and ``b``, both ``ndarray[N, 4]`` ``[x, y, w, h]`` -> ``ndarray[N]``.

    Boxes with no area give IoU 0."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = np.clip(a[:, 2], 0, None) * np.clip(a[:, 3], 0, None) + \
        np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def motion_iou_per_annotation(coco: dict, window: int = 10, isolated: float = 0.0) -> dict[int, float]:
    """FGFA motion IoU of every video annotation: ``{annotation id: miou in [0, 1]}``.

    Args:
        coco: a loaded CocoVID dict (``images`` with ``video_id`` and ``frame_id``, ``annotations`` with
            ``instance_id``). Annotations of images without ``video_id``/``frame_id`` (DET) or without
            ``instance_id`` are left out of the result.
        window: frames on each side (10 in FGFA).
        isolated: the value for a box whose instance has no other box in the window.
    """
    frame_of = {img["id"]: (img.get("video_id"), img.get("frame_id")) for img in coco["images"]}
    tracks: dict[tuple, list] = defaultdict(list)
    for a in coco["annotations"]:
        if a["image_id"] not in frame_of:
            raise ValueError(f"annotation {a.get('id')} refers to image_id {a['image_id']}, which is not in "
                             "'images'")
        video_id, frame_id = frame_of[a["image_id"]]
        if video_id is None or frame_id is None or a.get("instance_id") is None:
            continue
        tracks[(video_id, a["instance_id"])].append((int(frame_id), a["id"], a["bbox"]))
    result: dict[int, float] = {}
    for track in tracks.values():
        frames = np.array([t[0] for t in track])
        boxes = np.array([t[2] for t in track], np.float64).reshape(-1, 4)
        first = int(frames.min())
        dense = np.full((int(frames.max()) - first + 1, 4), np.nan)
        pos = frames - first
        dense[pos] = boxes
        sums = np.zeros(len(track))
        counts = np.zeros(len(track))
        for k in range(-window, window + 1):
            if k == 0:
                continue
            j = pos + k
            inside = np.nonzero((j >= 0) & (j < len(dense)))[0]
            other = dense[j[inside]]
            present = ~np.isnan(other[:, 0])
            rows = inside[present]
            sums[rows] += box_iou_xywh(boxes[rows], other[present])
            counts[rows] += 1
        miou = np.where(counts > 0, sums / np.maximum(counts, 1), isolated)
        for (_, ann_id, _), m in zip(track, miou):
            result[ann_id] = float(m)
    return result


def load_coco(ann_file: str | Path) -> dict:
    """Load a COCO/CocoVID json and check its top-level fields (errors name the file and the field)."""
    coco = load_json(ann_file, "annotation json")
    if not isinstance(coco, dict):
        raise ValueError(f"annotation json {ann_file}: expected a json object at the top, got "
                         f"{type(coco).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"annotation json {ann_file}: missing list field {key!r}")
    for key, fields in (("images", ("id",)), ("annotations", ("id", "image_id", "category_id", "bbox")),
                        ("categories", ("id", "name"))):
        for i, item in enumerate(coco[key]):
            missing = [f for f in fields if f not in item]
            if missing:
                raise ValueError(f"annotation json {ann_file}: {key}[{i}] lacks field(s) {missing}")
    return coco


def _quantiles(values: list[float] | np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    q = np.quantile(np.asarray(values, np.float64), _QUANTILES)
    return {f"q{int(round(p * 100))}": round(float(v), 4) for p, v in zip(_QUANTILES, q)}


def dataset_statistics(ann_file: str | Path | dict) -> dict[str, Any]:
    """Statistics of an annotation file (or an already loaded dict).

    Returns a json-serialisable dict: ``videos``, ``frames``, ``key_frames`` (``is_vid_train_frame``),
    ``annotations``, ``instances``, ``boxes_per_class`` ``{name: count}``, ``box_size`` (quantiles of
    ``sqrt(w*h)``, ``w`` and ``h``), ``objects_per_frame`` (mean, max, histogram), ``frames_without_objects``,
    ``degenerate_boxes`` (w < 1 or h < 1), ``occluded``, ``motion`` (FGFA speed classes: counts of
    ``slow``/``medium``/``fast`` and miou quantiles; None without videos), and, when the json has them,
    ``video_motion_labels`` and ``degradations`` (frames per degradation name, ``none`` for clean frames).
    """
    coco = ann_file if isinstance(ann_file, dict) else load_coco(ann_file)
    images, anns = coco["images"], coco["annotations"]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_class = Counter(names.get(a["category_id"], f"category_{a['category_id']}") for a in anns)
    per_image = Counter(a["image_id"] for a in anns)
    objects = np.array([per_image.get(img["id"], 0) for img in images])
    boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    w, h = boxes[:, 2], boxes[:, 3]
    stats: dict[str, Any] = {
        "file": None if isinstance(ann_file, dict) else str(ann_file),
        "videos": len(coco.get("videos", [])),
        "frames": len(images),
        "key_frames": sum(bool(img.get("is_vid_train_frame")) for img in images),
        "annotations": len(anns),
        "instances": len({(a.get("video_id"), a["instance_id"]) for a in anns if a.get("instance_id") is not None}),
        "boxes_per_class": {names[c]: per_class.get(names[c], 0) for c in sorted(names)},
        "box_size": {"sqrt_area": _quantiles(np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None))),
                     "width": _quantiles(w), "height": _quantiles(h)},
        "objects_per_frame": {
            "mean": round(float(objects.mean()), 4) if len(objects) else None,
            "max": int(objects.max()) if len(objects) else None,
            "histogram": {str(k): int(v) for k, v in sorted(Counter(objects.tolist()).items())}},
        "frames_without_objects": int((objects == 0).sum()),
        "degenerate_boxes": int(((w < 1) | (h < 1)).sum()),
        "occluded": sum(bool(a.get("occluded")) for a in anns),
        "motion": None,
    }
    for name, count in per_class.items():  # categories used but not declared
        stats["boxes_per_class"].setdefault(name, count)
    if coco.get("videos") and images and "frame_id" in images[0]:
        miou = motion_iou_per_annotation(coco)
        values = np.array(list(miou.values()))
        counts = Counter(motion_class(v) for v in values)
        stats["motion"] = {"slow": counts.get("slow", 0), "medium": counts.get("medium", 0),
                           "fast": counts.get("fast", 0), "miou": _quantiles(values)}
    if any("motion" in v for v in coco.get("videos", [])):
        stats["video_motion_labels"] = dict(sorted(Counter(v.get("motion") for v in coco["videos"]).items()))
    if any("degradation" in img for img in images):
        stats["degradations"] = dict(sorted(Counter(img.get("degradation") or "none" for img in images).items()))
    return stats


def format_statistics(stats: dict[str, Any]) -> str:
    """A readable plain-text table of ``dataset_statistics`` output."""
    w = 24
    lines = []
    if stats.get("file"):
        lines.append(f"{'annotation file':<{w}} {stats['file']}")
    for key in ("videos", "frames", "key_frames", "annotations", "instances", "frames_without_objects",
                "degenerate_boxes", "occluded"):
        lines.append(f"{key:<{w}} {stats[key]:>8}")
    opf = stats["objects_per_frame"]
    lines.append(f"{'objects per frame':<{w}} mean {opf['mean']}, max {opf['max']}, histogram {opf['histogram']}")
    size = stats["box_size"]["sqrt_area"]
    if size:
        lines.append(f"{'box size sqrt(w*h)':<{w}} " + "  ".join(f"{k} {v:g}" for k, v in size.items()))
    lines += ["", f"{'class':<{w}} {'boxes':>8}"]
    for name, n in stats["boxes_per_class"].items():
        lines.append(f"{name:<{w}} {n:>8}")
    if stats.get("motion"):
        m = stats["motion"]
        total = max(m["slow"] + m["medium"] + m["fast"], 1)
        lines += ["", f"{'motion (FGFA miou)':<{w}} {'boxes':>8} {'share':>7}"]
        for k, rng in (("slow", "> 0.9"), ("medium", "0.7-0.9"), ("fast", "< 0.7")):
            lines.append(f"{k + ' (' + rng + ')':<{w}} {m[k]:>8} {m[k] / total:>7.1%}")
    for key, title in (("video_motion_labels", "video motion label"), ("degradations", "frame degradation")):
        if stats.get(key):
            lines += ["", f"{title:<{w}} {'count':>8}"]
            for k, n in stats[key].items():
                lines.append(f"{str(k):<{w}} {n:>8}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ann_json", help="CocoVID / COCO annotation json")
    parser.add_argument("--json", default=None, help="also write the statistics to this json file")


def run(args: argparse.Namespace) -> int:
    try:
        stats = dataset_statistics(args.ann_json)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_statistics(stats))
    if args.json:
        atomic_write_json(args.json, stats, indent=2)
    return 0
