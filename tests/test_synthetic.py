"""The synthetic video set: determinism, CocoVID fields, tight boxes, motion/degradation/class coverage."""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from clab.cli import main as cli_main
from clab.data.stats import motion_class, motion_iou_per_annotation
from clab.data.synthetic import (CLASS_COLORS, FRAME_DEGRADATIONS, MANIFEST, MOTION_CLASSES, SYNTHETIC_CLASSES,
                                 SyntheticConfig, annotation_file, is_current, make_synthetic)

SMALL = dict(train_videos=4, val_videos=3, frames=6, width=96, height=64, min_size=14.0, max_size=24.0)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("synthetic")
    t0 = time.perf_counter()
    make_synthetic(out, seed=0)
    return out, time.perf_counter() - t0


def load(root: Path, split: str) -> dict:
    return json.loads(annotation_file(root, split).read_text())


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = tree_bytes(make_synthetic(tmp_path / "a", seed=5, **SMALL))
    b = tree_bytes(make_synthetic(tmp_path / "b", seed=5, **SMALL))
    c = tree_bytes(make_synthetic(tmp_path / "c", seed=6, **SMALL))
    assert a == b
    assert sorted(a) == sorted(c)  # same layout ...
    assert a["annotations/synthetic_vid_train.json"] != c["annotations/synthetic_vid_train.json"]
    frames = [k for k in a if k.endswith(".JPEG")]
    assert len(frames) == (4 + 3) * 6
    assert sum(a[k] != c[k] for k in frames) > 0.9 * len(frames)  # ... different content


def test_default_generation_is_fast_and_has_the_layout(default_set) -> None:
    root, seconds = default_set
    assert seconds < 10.0
    cfg = SyntheticConfig()
    for split, n in (("train", cfg.train_videos), ("val", cfg.val_videos)):
        folders = sorted(p for p in (root / "Data" / "VID" / split).iterdir())
        assert [p.name for p in folders] == [f"synthetic_{split}_{i:04d}" for i in range(n)]
        assert all(len(list(p.glob("*.JPEG"))) == cfg.frames for p in folders)
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["seed"] == 0 and manifest["config"]["frames"] == cfg.frames


@pytest.mark.parametrize("split", ["train", "val"])
def test_cocovid_fields_are_valid(default_set, split: str) -> None:
    root, _ = default_set
    cfg = SyntheticConfig()
    coco = load(root, split)
    assert [c["name"] for c in coco["categories"]] == list(SYNTHETIC_CLASSES)
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(SYNTHETIC_CLASSES) + 1))
    videos = {v["id"]: v for v in coco["videos"]}
    assert list(videos) == list(range(1, len(videos) + 1))
    images = {img["id"]: img for img in coco["images"]}
    assert list(images) == list(range(1, len(images) + 1))
    by_video = defaultdict(list)
    for img in coco["images"]:
        by_video[img["video_id"]].append(img)
        assert img["file_name"] == f"{videos[img['video_id']]['name']}/{img['frame_id']:06d}.JPEG"
        assert (img["width"], img["height"]) == (cfg.width, cfg.height)
        assert img["degradation"] in (None, *FRAME_DEGRADATIONS)
        assert (img["degradation"] is None) == (img["degradation_severity"] is None)
        frame = cv2.imread(str(root / "Data" / "VID" / img["file_name"]))
        assert frame is not None and frame.shape == (cfg.height, cfg.width, 3)
    for vid, imgs in by_video.items():
        assert [i["frame_id"] for i in imgs] == list(range(cfg.frames))
        keys = [i["frame_id"] for i in imgs if i["is_vid_train_frame"]]
        assert keys == videos[vid]["vid_train_frames"]
        if split == "train":
            assert keys == list(range(1, cfg.frames, 3))
        else:
            assert keys == []
        assert videos[vid]["motion"] in MOTION_CLASSES

    instance_owner = {}
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    for a in coco["annotations"]:
        img = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert all(isinstance(v, int) for v in a["bbox"])
        assert w >= 1 and h >= 1 and a["area"] == w * h
        assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
        assert a["video_id"] == img["video_id"] and a["iscrowd"] is False and a["generated"] is False
        assert isinstance(a["occluded"], bool) and a["speed"] >= 0
        owner = instance_owner.setdefault(a["instance_id"], (a["video_id"], a["category_id"]))
        assert owner == (a["video_id"], a["category_id"])  # one instance = one object of one video
    per_frame = Counter((a["image_id"], a["instance_id"]) for a in coco["annotations"])
    assert max(per_frame.values()) == 1


def test_boxes_are_tight(default_set) -> None:
    """On clean frames without an occluder, the pixels of the object's class colour around each isolated
    box span the box itself (up to JPEG edge blur)."""
    root, _ = default_set
    coco = load(root, "train")
    videos = {v["id"]: v for v in coco["videos"]}
    anns = defaultdict(list)
    for a in coco["annotations"]:
        anns[a["image_id"]].append(a)
    errors = []
    for img in coco["images"]:
        if img["degradation"] or videos[img["video_id"]]["occluder"]:
            continue
        frame = cv2.imread(str(root / "Data" / "VID" / img["file_name"])).astype(np.float64)
        for a in anns[img["id"]]:
            x, y, w, h = a["bbox"]
            if any(b is not a and b["bbox"][0] < x + w + 4 and x - 4 < b["bbox"][0] + b["bbox"][2]
                   and b["bbox"][1] < y + h + 4 and y - 4 < b["bbox"][1] + b["bbox"][3] for b in anns[img["id"]]):
                continue  # another object nearby
            color = np.array(CLASS_COLORS[SYNTHETIC_CLASSES[a["category_id"] - 1]], np.float64)
            near = np.zeros(frame.shape[:2], bool)
            near[max(y - 4, 0):y + h + 4, max(x - 4, 0):x + w + 4] = True
            ys, xs = np.nonzero(near & (np.linalg.norm(frame - color, axis=2) < 75))
            errors.append(max(abs(xs.min() - x), abs(ys.min() - y), abs(xs.max() + 1 - x - w),
                              abs(ys.max() + 1 - y - h)))
    assert len(errors) > 50
    assert max(errors) <= 3 and np.mean(errors) < 1.5, Counter(errors)


@pytest.mark.parametrize("split", ["train", "val"])
def test_classes_speeds_occlusion_and_degradations_are_all_present(default_set, split: str) -> None:
    root, _ = default_set
    coco = load(root, split)
    classes = Counter(a["category_id"] for a in coco["annotations"])
    assert len(classes) >= 5
    assert set(v["motion"] for v in coco["videos"]) == set(MOTION_CLASSES)
    assert any(v["occluder"] for v in coco["videos"]) and any(a["occluded"] for a in coco["annotations"])
    degradations = Counter(img["degradation"] for img in coco["images"])
    assert set(degradations) == {None, *FRAME_DEGRADATIONS}
    assert 0.15 < 1 - degradations[None] / len(coco["images"]) < 0.35

    # FGFA's motion IoU classes agree with the per-video labels for most boxes, and all three occur
    miou = motion_iou_per_annotation(coco)
    label = {v["id"]: v["motion"] for v in coco["videos"]}
    pairs = Counter((label[a["video_id"]], motion_class(miou[a["id"]])) for a in coco["annotations"])
    assert {m for _, m in pairs} == set(MOTION_CLASSES)
    agree = sum(n for (lab, m), n in pairs.items() if lab == m)
    assert agree > 0.8 * len(coco["annotations"]), pairs

    speed = defaultdict(list)
    for a in coco["annotations"]:
        speed[label[a["video_id"]]].append(a["speed"])
    assert np.median(speed["slow"]) < np.median(speed["medium"]) < np.median(speed["fast"])


def test_motion_blur_frames_follow_the_motion(default_set) -> None:
    """A motion-blurred frame of a fast video is blurred: less high-frequency energy than its neighbours."""
    root, _ = default_set
    coco = load(root, "train")
    fast = {v["id"] for v in coco["videos"] if v["motion"] == "fast"}
    ratios = []
    by_video = defaultdict(dict)
    for img in coco["images"]:
        by_video[img["video_id"]][img["frame_id"]] = img

    def hf(img: dict) -> float:
        frame = cv2.imread(str(root / "Data" / "VID" / img["file_name"]), cv2.IMREAD_GRAYSCALE)
        return float(np.mean(cv2.Laplacian(frame.astype(np.float32), cv2.CV_32F) ** 2))

    for img in coco["images"]:
        if img["video_id"] in fast and img["degradation"] == "motion_blur":
            clean = [f for f in by_video[img["video_id"]].values() if f["degradation"] is None]
            ratios.append(hf(img) / np.mean([hf(f) for f in clean]))
    assert ratios and max(ratios) < 0.8


def test_reuse_config_checks_and_cli(tmp_path: Path, capsys) -> None:
    out = make_synthetic(tmp_path / "s", seed=1, **SMALL)
    cfg = SyntheticConfig(**SMALL)
    assert is_current(out, 1, cfg) and not is_current(out, 2, cfg) and not is_current(out, 1, SyntheticConfig())
    stamp = (out / MANIFEST).stat().st_mtime_ns
    make_synthetic(out, seed=1, reuse=True, **SMALL)
    assert (out / MANIFEST).stat().st_mtime_ns == stamp
    # a different config replaces the old videos
    make_synthetic(out, seed=1, **{**SMALL, "train_videos": 2})
    assert len(list((out / "Data" / "VID" / "train").iterdir())) == 2

    with pytest.raises(ValueError, match="unknown SyntheticConfig field.*'fps'"):
        make_synthetic(tmp_path / "x", fps=3)
    with pytest.raises(ValueError, match="SyntheticConfig.frames must be >= 2"):
        SyntheticConfig(frames=1)
    with pytest.raises(ValueError, match="SyntheticConfig.max_size"):
        SyntheticConfig(width=40, height=40)
    with pytest.raises(ValueError, match="seed"):
        make_synthetic(tmp_path / "x", seed=-1)

    rc = cli_main(["make-synthetic", "--out", str(tmp_path / "cli"), "--seed", "3", "--train-videos", "2",
                   "--val-videos", "1", "--frames", "4", "--width", "96", "--height", "64"])
    assert rc == 0
    coco = load(tmp_path / "cli", "val")
    assert len(coco["videos"]) == 1 and len(coco["images"]) == 4
    rc = cli_main(["make-synthetic", "--out", str(tmp_path / "cli2"), "--frames", "1"])
    assert rc == 2 and "frames must be >= 2" in capsys.readouterr().err
