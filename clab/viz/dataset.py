"""Figures of a data set: boxes per class, box sizes, motion speed (FGFA motion IoU and pixels per frame),
degraded frames, and a few frames with their ground-truth boxes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .common import new_figure, save_figure

__all__ = ["dataset_overview", "sample_frames"]


def dataset_overview(boxes: dict[str, pd.DataFrame], stats: dict[str, dict], path: str | Path) -> Path:
    """Six panels comparing the annotation files: boxes per class, box size, FGFA motion IoU (with the
    slow/medium/fast thresholds), boxes per speed class, speed in pixels/frame (synthetic set), frames per
    degradation.

    Args:
        boxes: ``{file name: clab.analysis.data_prep.annotation_frame(...)}``.
        stats: ``{file name: clab.data.stats.dataset_statistics(...)}``.
    """
    import seaborn as sns

    from ..data.stats import MOTION_THRESHOLDS
    allboxes = pd.concat([b.assign(split=name) for name, b in boxes.items()], ignore_index=True)
    fig, axes = new_figure(2, 3, panel=(4.4, 3.3))
    ax = axes[0, 0]
    counts = allboxes.groupby(["class", "split"]).size().rename("boxes").reset_index()
    sns.barplot(counts, x="class", y="boxes", hue="split", ax=ax)
    ax.set_title("boxes per class")
    ax.tick_params(axis="x", rotation=45)
    ax = axes[0, 1]
    sns.histplot(allboxes, x="size", hue="split", bins=30, element="step", stat="density", common_norm=False, ax=ax)
    ax.set_title("box size sqrt(w*h), pixels")
    ax = axes[0, 2]
    if allboxes["motion_iou"].notna().any():
        sns.histplot(allboxes.dropna(subset=["motion_iou"]), x="motion_iou", hue="split", bins=30, element="step",
                     stat="density", common_norm=False, ax=ax)
        for thr in MOTION_THRESHOLDS:
            ax.axvline(thr, color="k", linestyle="--", linewidth=1)
    ax.set_title("FGFA motion IoU (dashed: 0.7, 0.9)")
    ax = axes[1, 0]
    motion = allboxes.dropna(subset=["motion"]).groupby(["motion", "split"]).size().rename("boxes").reset_index()
    if len(motion):
        sns.barplot(motion, x="motion", y="boxes", hue="split", order=["slow", "medium", "fast"], ax=ax)
    ax.set_title("boxes per speed class")
    ax = axes[1, 1]
    if allboxes["speed"].notna().any():
        sns.histplot(allboxes.dropna(subset=["speed"]), x="speed", hue="split", bins=30, element="step",
                     stat="density", common_norm=False, ax=ax)
        ax.set_title("object speed, pixels/frame")
    else:
        ax.set_title("object speed (not in these annotations)")
    ax = axes[1, 2]
    degradations = [{"split": name, "degradation": k, "frames": n}
                    for name, s in stats.items() for k, n in (s.get("degradations") or {}).items()]
    if degradations:
        sns.barplot(pd.DataFrame(degradations), x="degradation", y="frames", hue="split", ax=ax)
        ax.tick_params(axis="x", rotation=45)
        ax.set_title("frames per degradation")
    else:
        ax.set_title("frame degradations (not in these annotations)")
    fig.suptitle("data set statistics")
    return save_figure(fig, path)


def sample_frames(ann_file: str | Path, img_prefix: str | Path, path: str | Path, num_videos: int = 6,
                  frames_per_video: int = 4) -> Path:
    """A grid of frames (rows: videos spread over the file; columns: frames spread over each video) with their
    ground-truth boxes and class names, and the frame's degradation in the title when the json has one."""
    import cv2

    from ..data.stats import load_coco
    from .detections import draw_boxes

    coco = load_coco(ann_file)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    frames_of: dict = {}
    for img in coco["images"]:
        frames_of.setdefault(img.get("video_id"), []).append(img)
    anns_of: dict = {}
    for a in coco["annotations"]:
        anns_of.setdefault(a["image_id"], []).append(a)
    videos = list(frames_of)
    chosen = [videos[int(i)] for i in np.unique(np.linspace(0, len(videos) - 1, min(num_videos, len(videos))).round())]
    fig, axes = new_figure(len(chosen), frames_per_video, panel=(3.0, 2.1))
    for row, vid in zip(axes, chosen):
        frames = sorted(frames_of[vid], key=lambda im: im.get("frame_id", 0))
        picks = [frames[int(i)] for i in np.unique(np.linspace(0, len(frames) - 1, frames_per_video).round())]
        for ax, img in zip(row, picks):
            image = cv2.imread(str(Path(img_prefix) / img["file_name"]))
            if image is None:
                raise FileNotFoundError(f"cannot read frame {Path(img_prefix) / img['file_name']}")
            anns = anns_of.get(img["id"], [])
            boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], np.float32).reshape(-1, 4)
            labels = [names.get(a["category_id"], "?") for a in anns]
            ax.imshow(draw_boxes(image, boxes, labels, color=(60, 220, 60)))
            title = f"{Path(img['file_name']).parent.name} #{img.get('frame_id')}"
            if img.get("degradation"):
                title += f"\n{img['degradation']} {img.get('degradation_severity') or ''}"
            ax.set_title(title, fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle("frames with ground-truth boxes")
    return save_figure(fig, path)
