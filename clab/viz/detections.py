"""Boxes drawn on frames: ground truth and detections (per-class ``ndarray (k, 5)`` x1, y1, x2, y2, score in
image pixels, as the detector returns them)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .common import new_figure, save_figure

__all__ = ["draw_boxes", "detection_boxes", "detections_figure"]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str] = (), color=(255, 80, 80),
               min_width: int = 480) -> np.ndarray:
    """Draw ``boxes`` ndarray[k, 4] x1y1x2y2 (pixels of ``image``) with ``labels`` on a copy of ``image``
    (BGR uint8 ndarray[H, W, 3]); returns an RGB image, upscaled so that it is at least ``min_width`` wide.
    ``color`` is RGB."""
    import cv2

    scale = max(1, int(np.ceil(min_width / image.shape[1])))
    out = cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    for i, box in enumerate(np.asarray(boxes, np.float32).reshape(-1, 4)):
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
        if i < len(labels) and labels[i]:
            cv2.putText(out, str(labels[i]), (x1 + 2, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                        cv2.LINE_AA)
    return out


def detection_boxes(det_bboxes: Sequence[np.ndarray], classes: Sequence[str], score_thr: float
                    ) -> tuple[np.ndarray, list[str]]:
    """Boxes ndarray[k, 4] and ``'<class> <score>'`` labels of the detections scoring at least ``score_thr``."""
    boxes, labels = [], []
    for cls, dets in zip(classes, det_bboxes):
        dets = np.asarray(dets).reshape(-1, 5)
        for det in dets[dets[:, 4] >= score_thr]:
            boxes.append(det[:4])
            labels.append(f"{cls} {det[4]:.2f}")
    return np.array(boxes, np.float32).reshape(-1, 4), labels


def detections_figure(frames: list[dict], classes: Sequence[str], score_thr: float, path: str | Path,
                      title: str = "") -> Path | None:
    """Rows: frames; columns: ground truth, then each model's detections above ``score_thr``.

    ``frames``: dicts with ``image`` (BGR), ``gt`` (ndarray[k, 4]), ``name`` and ``detections``
    ``{model: per-class list}`` (see ``clab.analysis.robustness.degraded_detections``). Returns None (nothing
    drawn) when there are no frames.
    """
    if not frames:
        return None
    models = list(frames[0]["detections"])
    fig, axes = new_figure(len(frames), 1 + len(models), panel=(3.6, 2.4))
    for row, frame in zip(axes, frames):
        row[0].imshow(draw_boxes(frame["image"], frame["gt"], color=(60, 220, 60)))
        row[0].set_title(f"ground truth\n{frame['name']}", fontsize=8)
        for ax, model in zip(row[1:], models):
            boxes, labels = detection_boxes(frame["detections"][model], classes, score_thr)
            ax.imshow(draw_boxes(frame["image"], boxes, labels))
            ax.set_title(f"{model} (score >= {score_thr:g})", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle(title or "detections")
    return save_figure(fig, path)
