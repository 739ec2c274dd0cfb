"""COCO box metrics and the motion-speed split (clab.evaluation) on hand-made ground truth written to disk."""
from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from mmdet.datasets import CocoDataset
from pycocotools.cocoeval import COCOeval

from clab.evaluation import (coco_bbox_metrics, motion_iou_per_annotation, results_to_coco_json, speed_of,
                             speed_split_metrics)

CATEGORIES = [dict(id=1, name="cat_a", encode_name="n001"), dict(id=2, name="cat_b", encode_name="n002")]


def _xyxy(xywh, score):
    x, y, w, h = xywh
    return [x, y, x + w, y + h, score]


def _write(path, images, annotations, videos=()):
    path.write_text(json.dumps(dict(videos=list(videos), images=images, annotations=annotations,
                                    categories=CATEGORIES)))
    return path


def _ann(ann_id, image_id, category_id, bbox, **extra):
    return dict(id=ann_id, image_id=image_id, category_id=category_id, bbox=list(bbox),
                area=float(bbox[2] * bbox[3]), iscrowd=0, **extra)


# ------------------------------------------------------------------------------------------ COCO metrics
@pytest.fixture
def still_images(tmp_path):
    """3 images; cat_a: one box in images 1 and 2; cat_b: one box in images 1, 2 and 3."""
    images = [dict(id=i, file_name=f"{i}.JPEG", height=100, width=120) for i in (1, 2, 3)]
    anns = [_ann(1, 1, 1, (10, 10, 20, 20)), _ann(2, 1, 2, (50, 50, 30, 30)),
            _ann(3, 2, 1, (5, 5, 40, 40)), _ann(4, 2, 2, (60, 20, 25, 35)), _ann(5, 3, 2, (0, 0, 10, 10))]
    return _write(tmp_path / "gt.json", images, anns), anns


def _perfect(anns, img_ids=(1, 2, 3)):
    results = [[np.zeros((0, 5), np.float32) for _ in CATEGORIES] for _ in img_ids]
    for ann in anns:
        i = list(img_ids).index(ann["image_id"])
        results[i][ann["category_id"] - 1] = np.array([_xyxy(ann["bbox"], 0.9)], np.float32)
    return results


def test_perfect_detections_score_one(still_images):
    gt_file, anns = still_images
    metrics = coco_bbox_metrics(gt_file, _perfect(anns), img_ids=[1, 2, 3], cat_ids=[1, 2])
    assert metrics["bbox_mAP"] == 1.0 and metrics["bbox_mAP_50"] == 1.0 and metrics["bbox_mAP_75"] == 1.0
    assert metrics["bbox_mAP_l"] == -1.0        # no large object in the ground truth (COCO's -1)
    assert metrics["AP50_per_class"] == {"cat_a": 1.0, "cat_b": 1.0}
    assert metrics["bbox_mAP_copypaste"].startswith("1.0000 1.0000 1.0000")
    assert len(metrics["coco_stats"]) == 12


def test_known_values_and_direct_pycocotools_run(still_images, tmp_path):
    gt_file, anns = still_images
    results = _perfect(anns)
    results[1][1] = np.zeros((0, 5), np.float32)          # miss cat_b in image 2
    results[2][1] = np.zeros((0, 5), np.float32)          # and in image 3: cat_b recall 1/3
    results[0][0] = np.array([[10, 10, 30, 30, 0.9], [70, 60, 90, 95, 0.3]], np.float32)  # + a low FP
    results[1][0] = np.array([[9, 7, 44, 47, 0.8]], np.float32)     # IoU 0.79 with (5, 5, 40, 40)
    metrics = coco_bbox_metrics(gt_file, results, img_ids=[1, 2, 3], cat_ids=[1, 2])

    # cat_b: one of three found, precision 1: recall thresholds 0.00..0.33 -> 34 of 101 points
    assert metrics["AP50_per_class"]["cat_b"] == pytest.approx(34 / 101)
    # cat_a: both found before the lower-scored FP
    assert metrics["AP50_per_class"]["cat_a"] == pytest.approx(1.0)
    assert metrics["coco_stats"]["mAP_50"] == pytest.approx((1.0 + 34 / 101) / 2)

    # the same detections through pycocotools by hand, from a json file on disk
    det_file = tmp_path / "dets.json"
    entries = results_to_coco_json(results, [1, 2, 3], [1, 2], out_file=det_file)
    assert json.loads(det_file.read_text()) == entries
    assert entries[0] == dict(image_id=1, bbox=[10.0, 10.0, 20.0, 20.0], score=pytest.approx(0.9),
                              category_id=1)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(det_file)), "bbox")
        ev.params.imgIds, ev.params.catIds, ev.params.maxDets = [1, 2, 3], [1, 2], [100, 300, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert list(metrics["coco_stats"].values()) == pytest.approx(list(ev.stats), abs=1e-12)
    for i, name in enumerate(["mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"]):
        assert metrics[f"bbox_{name}"] == float(f"{ev.stats[i]:.4f}")    # as mmdet 2.28 rounds
    p = ev.eval["precision"][0, :, 1, 0, -1]
    assert metrics["AP50_per_class"]["cat_b"] == pytest.approx(float(np.mean(p[p > -1])))

    # and mmdet's own CocoDataset.evaluate gives the same numbers, digit for digit
    dataset = CocoDataset(ann_file=str(gt_file), pipeline=[], classes=("cat_a", "cat_b"), test_mode=True)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = dataset.evaluate(results, metric="bbox")
    assert {k: metrics[k] for k in reference} == dict(reference)


def test_empty_detections_and_dict_input(still_images):
    gt_file, anns = still_images
    empty = [[np.zeros((0, 5)) for _ in CATEGORIES] for _ in range(3)]
    metrics = coco_bbox_metrics(gt_file, dict(det_bboxes=empty), img_ids=[1, 2, 3], cat_ids=[1, 2])
    assert metrics["bbox_mAP_50"] == 0.0 and metrics["AP50_per_class"] == {"cat_a": 0.0, "cat_b": 0.0}
    # defaults: all images and categories in file order; class names given by the caller
    metrics = coco_bbox_metrics(str(gt_file), _perfect(anns), classes=("A", "B"))
    assert metrics["bbox_mAP_50"] == 1.0 and metrics["AP50_per_class"] == {"A": 1.0, "B": 1.0}
    with pytest.raises(ValueError, match="one name per cat_ids entry"):
        coco_bbox_metrics(gt_file, _perfect(anns), classes=("A",))


@pytest.mark.parametrize("mutate, words", [
    (lambda r: r[:2], "one entry per image (3)"),
    (lambda r: [x[:1] for x in r], "list of 2 per-class arrays"),
    (lambda r: [[np.zeros((1, 4)), x[1]] for x in r], "must be an array (k, 5)"),
])
def test_bad_detections_are_rejected(still_images, mutate, words):
    gt_file, anns = still_images
    with pytest.raises(ValueError) as err:
        coco_bbox_metrics(gt_file, mutate(_perfect(anns)), img_ids=[1, 2, 3], cat_ids=[1, 2])
    assert words in str(err.value)


def test_bad_ground_truth_inputs(still_images, tmp_path):
    gt_file, anns = still_images
    with pytest.raises(FileNotFoundError, match="missing.json"):
        coco_bbox_metrics(tmp_path / "missing.json", _perfect(anns))
    with pytest.raises(ValueError, match=r"img_ids not in the annotation file: \[9\]"):
        coco_bbox_metrics(gt_file, _perfect(anns)[:1], img_ids=[9], cat_ids=[1, 2])


# ------------------------------------------------------------------------------------------ speed split
def _offset_iou(d, size=100, speed=2):
    return (size - speed * d) / (size + speed * d)


@pytest.fixture
def video_gt(tmp_path):
    """Video 1 (21 frames of 1000x400): A static (slow, cat_a), B jumping 30 px per frame (fast, cat_a),
    C moving 2 px per frame, 100 px wide (medium, cat_b), D in frame 5 only (no neighbour, cat_b).
    Video 2 (2 frames) reuses instance id 1 elsewhere."""
    images, anns = [], []
    for f in range(21):
        images.append(dict(id=f + 1, file_name=f"val/v1/{f:06d}.JPEG", height=400, width=1000, frame_id=f,
                           video_id=1))
        anns.append(_ann(len(anns) + 1, f + 1, 1, (10, 10, 20, 20), instance_id=1, video_id=1))
        anns.append(_ann(len(anns) + 1, f + 1, 1, (100 + 30 * f, 300, 20, 20), instance_id=2, video_id=1))
        anns.append(_ann(len(anns) + 1, f + 1, 2, (300 + 2 * f, 100, 100, 100), instance_id=3, video_id=1))
        if f == 5:
            anns.append(_ann(len(anns) + 1, f + 1, 2, (800, 50, 40, 40), instance_id=4, video_id=1))
    for f in range(2):
        images.append(dict(id=100 + f, file_name=f"val/v2/{f:06d}.JPEG", height=400, width=1000, frame_id=f,
                           video_id=2))
        anns.append(_ann(len(anns) + 1, 100 + f, 1, (500 + 100 * f, 200, 50, 50), instance_id=1, video_id=2))
    videos = [dict(id=1, name="val/v1"), dict(id=2, name="val/v2")]
    return _write(tmp_path / "vid.json", images, anns, videos), anns


def test_motion_iou_of_constructed_tracks(video_gt):
    gt_file, anns = video_gt
    motion = motion_iou_per_annotation(json.loads(gt_file.read_text()))   # clab.data.stats, re-exported
    assert set(motion) == {a["id"] for a in anns}
    by_track = {}
    for a in anns:
        by_track.setdefault((a["video_id"], a["instance_id"]), []).append(motion[a["id"]])
    assert by_track[(1, 1)] == [1.0] * 21                    # static
    assert by_track[(1, 2)] == [0.0] * 21                    # jumps further than its width
    assert by_track[(1, 4)] == [0.0]                         # no neighbour in the window
    assert by_track[(2, 1)] == [0.0, 0.0]                    # video 2 is its own track (IoU 0 there)
    assert [speed_of(motion[a["id"]]) for a in anns[:4]] == ["slow", "fast", "medium", "slow"]
    c = by_track[(1, 3)]
    one_side = sum(_offset_iou(d) for d in range(1, 11))
    assert c[0] == pytest.approx(one_side / 10)             # frame 0: frames 1..10
    assert c[10] == pytest.approx(2 * one_side / 20)        # frame 10: frames 0..9 and 11..20
    assert c[3] == pytest.approx((sum(_offset_iou(d) for d in range(1, 4)) + one_side) / 13)
    assert all(0.7 <= v <= 0.9 for v in c)


def test_speed_ranges_partition_with_chosen_ends():
    assert [speed_of(v) for v in (0.0, 0.69999, 0.7, 0.9, 0.90001, 1.0)] == \
        ["fast", "fast", "medium", "medium", "slow", "slow"]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        speed_of(1.5)


def _video_detections(anns):
    """A and B detected in every frame (B scored higher), C detected in frames 0..9, D missed."""
    results = [[np.zeros((0, 5), np.float32) for _ in CATEGORIES] for _ in range(21)]
    for a in anns:
        if a["video_id"] != 1:
            continue
        f = a["image_id"] - 1
        score = {1: 0.5, 2: 0.9, 3: 0.7 if f < 10 else None, 4: None}[a["instance_id"]]
        if score is not None:
            cls = a["category_id"] - 1
            box = np.array([_xyxy(a["bbox"], score)], np.float32)
            results[f][cls] = np.concatenate([results[f][cls], box])
    return results


def test_speed_split_metrics(video_gt):
    gt_file, anns = video_gt
    img_ids = list(range(1, 22))
    results = _video_detections(anns)
    metrics = speed_split_metrics(gt_file, results, img_ids=img_ids, cat_ids=[1, 2])

    # all: cat_a 42/42 found; cat_b 10 of 22 found (precision 1): recall thresholds 0.00..0.45
    assert metrics["AP50_per_class_all"] == pytest.approx({"cat_a": 1.0, "cat_b": 46 / 101})
    assert metrics["bbox_mAP_50_all"] == pytest.approx((1.0 + 46 / 101) / 2)
    assert metrics["bbox_mAP_50_all"] == pytest.approx(
        coco_bbox_metrics(gt_file, results, img_ids=img_ids, cat_ids=[1, 2])["coco_stats"]["mAP_50"])

    # slow: A (and D, below); B's higher-scored detections hit ignored objects and count neither as TP nor FP
    # (as FPs they would halve the precision: AP 0.5)
    # D has no annotated neighbour: motion IoU 1.0 (FGFA's rule), so it is slow, and missed
    assert metrics["AP50_per_class_slow"]["cat_a"] == pytest.approx(1.0)
    assert metrics["AP50_per_class_slow"]["cat_b"] == 0.0
    assert metrics["bbox_mAP_50_slow"] == pytest.approx(0.5)
    assert metrics["num_gts_slow"] == 22

    # medium: only C, 10 of 21 found
    assert metrics["AP50_per_class_medium"]["cat_b"] == pytest.approx(48 / 101)
    assert metrics["bbox_mAP_50_medium"] == pytest.approx(48 / 101)
    assert metrics["num_gts_medium"] == 21

    # fast: B only (found); C's detections are ignored, not FPs
    assert metrics["AP50_per_class_fast"]["cat_a"] == pytest.approx(1.0)
    assert math.isnan(metrics["AP50_per_class_fast"]["cat_b"])
    assert metrics["num_gts_fast"] == 21


def test_speed_split_unmatched_detection_is_a_full_fp(video_gt):
    gt_file, anns = video_gt
    results = _video_detections(anns)
    # a high-scored cat_a box on empty background in frame 0: an FP in every range
    results[0][0] = np.concatenate([np.array([[600, 10, 640, 50, 0.99]], np.float32), results[0][0]])
    metrics = speed_split_metrics(gt_file, results, img_ids=list(range(1, 22)), cat_ids=[1, 2],
                                  ranges=("slow",))
    assert set(metrics) == {"bbox_mAP_50_slow", "num_gts_slow", "AP50_per_class_slow"}
    # slow cat_a in score order: the FP, B x21 (ignored: dropped), A x21 (TP). Precision after k TPs is
    # k / (k + 1); interpolated (max to the right) it is 21/22 at every recall threshold
    assert metrics["AP50_per_class_slow"]["cat_a"] == pytest.approx(21 / 22)
    assert metrics["AP50_per_class_slow"]["cat_a"] < 1.0


def test_speed_split_errors(video_gt):
    gt_file, anns = video_gt
    results = _video_detections(anns)
    with pytest.raises(ValueError, match="unknown speed range"):
        speed_split_metrics(gt_file, results, img_ids=list(range(1, 22)), ranges=("quick",))
    with pytest.raises(ValueError, match="no motion IoU for annotation"):
        speed_split_metrics(gt_file, results, img_ids=list(range(1, 22)), motion_iou={})


def test_speed_split_needs_video_frames(still_images):
    gt_file, anns = still_images
    with pytest.raises(ValueError, match="needs video frames"):
        speed_split_metrics(gt_file, _perfect(anns))
