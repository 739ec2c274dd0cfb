"""Shared pytest fixtures: tiny CocoVID data sets written as real JPEG files."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest


def frame_image(width: int, height: int, value: int, boxes=()) -> np.ndarray:
    """A uint8 BGR frame: a horizontal gradient, a 6x6 top-left patch of grey ``value`` (to recognise
    the frame after loading), and each ``[x, y, w, h]`` box filled white."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = np.linspace(20, 120, width, dtype=np.uint8)[None, :, None]
    img[:6, :6] = value
    for x, y, w, h in boxes:
        img[int(y):int(y + h), int(x):int(x + w)] = 255
    return img


def write_cocovid_set(root: Path, videos: list[dict], categories=(("a", 1), ("b", 2)),
                      ann_name: str = "vid.json", write_images: bool = True) -> Path:
    """Write ``<root>/Data/VID/<video>/%06d.JPEG`` and ``<root>/annotations/<ann_name>`` (SPEC 3.2).

    Each video spec: ``name`` (e.g. ``'train/v0'``), ``num_frames``, ``width``, ``height``,
    ``train_frames`` (frame ids with ``is_vid_train_frame`` true, or None to leave the field out) and
    ``objects``: ``{frame_id: [(category_id, instance_id, [x, y, w, h]), ...]}`` (default: one object of
    category 1 per frame, moving right 2 px per frame). Image ids, annotation ids and instance ids are
    global; frame content encodes the frame (see ``frame_image``). Returns the json path.
    """
    images, annotations, vids = [], [], []
    img_id = ann_id = 1
    for v_index, spec in enumerate(videos, 1):
        n, w, h = spec["num_frames"], spec.get("width", 64), spec.get("height", 48)
        objects = spec.get("objects")
        if objects is None:
            objects = {f: [(1, 100 * v_index, [4 + 2 * f, 10, 20, 16])] for f in range(n)}
        train_frames = spec.get("train_frames")
        vids.append({"id": v_index, "name": spec["name"],
                     "vid_train_frames": list(train_frames or [])})
        for f in range(n):
            file_name = f"{spec['name']}/{f:06d}.JPEG"
            record = {"id": img_id, "file_name": file_name, "height": h, "width": w, "frame_id": f,
                      "video_id": v_index}
            if train_frames is not None:
                record["is_vid_train_frame"] = f in train_frames
            images.append(record)
            boxes = []
            for cat, inst, bbox in objects.get(f, []):
                annotations.append({"id": ann_id, "video_id": v_index, "image_id": img_id, "category_id": cat,
                                    "instance_id": inst, "bbox": list(bbox), "area": bbox[2] * bbox[3],
                                    "iscrowd": False, "occluded": False, "generated": False})
                boxes.append(bbox)
                ann_id += 1
            if write_images:
                path = root / "Data" / "VID" / file_name
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), frame_image(w, h, 10 * f, boxes))
            img_id += 1
    data = {"videos": vids, "images": images, "annotations": annotations,
            "categories": [{"id": cid, "name": name, "encode_name": name} for name, cid in categories]}
    ann = root / "annotations" / ann_name
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    return ann


@pytest.fixture
def cocovid_set(tmp_path):
    """Factory: ``cocovid_set(videos, **kw) -> json path`` writing under ``tmp_path`` (see
    ``write_cocovid_set``)."""

    def make(videos, **kwargs):
        return write_cocovid_set(tmp_path, videos, **kwargs)

    return make
