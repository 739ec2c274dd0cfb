"""Pictures of one frame for the explorer, drawn with OpenCV (a few milliseconds, so a slider stays smooth):
ground truth, then each model's detections side by side, with matched detections in green, false ones in
red and missed ground-truth boxes in orange (dashed). Returned as RGB arrays and encoded as PNG bytes for an
``ipywidgets.Image``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .compare import FrameMatch

__all__ = ["MATCHED", "FALSE", "MISSED", "GT", "panel", "frame_panels", "png_bytes"]

# RGB
GT = (60, 200, 255)
MATCHED = (40, 200, 60)
FALSE = (235, 50, 50)
MISSED = (255, 150, 0)


def _dashed_rect(img: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color, dash: int = 6) -> None:
    import cv2
    (x1, y1), (x2, y2) = p1, p2
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for start in range(0, length, 2 * dash):
            t0, t1 = start / length, min(start + dash, length) / length
            cv2.line(img, (int(a[0] + (b[0] - a[0]) * t0), int(a[1] + (b[1] - a[1]) * t0)),
                     (int(a[0] + (b[0] - a[0]) * t1), int(a[1] + (b[1] - a[1]) * t1)), color, 2)


def panel(image: np.ndarray, title: str, boxes: Sequence[tuple[np.ndarray, tuple, str, bool]], scale: int = 3
          ) -> np.ndarray:
    """One panel: ``image`` (BGR uint8 ndarray[H, W, 3]) upscaled ``scale`` times (nearest), a title strip
    on top, and ``boxes``: ``(x1y1x2y2 in image pixels, RGB colour, label, dashed)``. Returns RGB uint8."""
    import cv2

    h, w = image.shape[:2]
    big = cv2.cvtColor(cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST), cv2.COLOR_BGR2RGB)
    for box, color, label, dashed in boxes:
        x1, y1, x2, y2 = (int(round(float(v) * scale)) for v in box)
        if dashed:
            _dashed_rect(big, (x1, y1), (x2, y2), color)
        else:
            cv2.rectangle(big, (x1, y1), (x2, y2), color, 2)
        if label:
            cv2.putText(big, label, (x1 + 2, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.42, color, 1, cv2.LINE_AA)
    strip = np.full((24, big.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([strip, big], axis=0)


def frame_panels(image: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, classes: Sequence[str],
                 matches: dict[str, FrameMatch | str], score_thr: float, title: str = "", scale: int = 3
                 ) -> np.ndarray:
    """Ground truth, then one panel per model of ``matches`` (``{model: FrameMatch}``, or a string shown
    instead when that model's detections are not available), side by side; RGB uint8 ndarray."""
    gt = [(b, GT, classes[int(c)], False) for b, c in zip(gt_boxes, gt_labels)]
    panels = [panel(image, f"ground truth {title}".strip(), gt, scale)]
    for model, m in matches.items():
        if isinstance(m, str):
            blank = panel(image // 3, f"{model}: n/a", [], scale)
            import cv2
            for i, line in enumerate(_wrap(m, 42)[:6]):
                cv2.putText(blank, line, (8, 50 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1,
                            cv2.LINE_AA)
            panels.append(blank)
            continue
        boxes = [(b, MATCHED if ok else FALSE, f"{classes[int(c)]} {s:.2f}", False)
                 for b, c, s, ok in zip(m.boxes, m.labels, m.scores, m.matched)]
        boxes += [(b, MISSED, "missed", True) for b, hit in zip(gt_boxes, m.gt_matched) if not hit]
        head = f"{model} >= {score_thr:.2f}: {m.num_matched} ok, {m.num_missed} missed, {m.num_false} false"
        panels.append(panel(image, head, boxes, scale))
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [gap, p]
    return np.concatenate(out, axis=1)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def png_bytes(rgb: np.ndarray) -> bytes:
    """RGB uint8 ndarray[H, W, 3] -> PNG file bytes."""
    import cv2
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the frame as PNG")
    return buf.tobytes()
