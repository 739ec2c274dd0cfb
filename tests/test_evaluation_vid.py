"""The ILSVRC VID devkit protocol (vid_mAP_50) and FGFA's motion split, on hand-computed cases."""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO

from clab.evaluation.coco_metrics import coco_bbox_metrics
from clab.evaluation.fgfa_motion import fgfa_motion_iou, fgfa_motion_metrics, motion_iou_evidence
from clab.evaluation.vid_devkit import (Detections, detections_from_entries, devkit_iou, devkit_match,
                                        gt_from_coco, object_thresholds, vid_map_metrics, voc_ap)


def _coco(images, anns, n_cats=3):
    coco = COCO()
    coco.dataset = dict(images=images, annotations=anns,
                        categories=[dict(id=c, name=f"c{c}") for c in range(1, n_cats + 1)])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _img(img_id, video_id=1, frame_id=None):
    return dict(id=img_id, file_name=f"{img_id}.JPEG", width=400, height=300, video_id=video_id,
                frame_id=img_id - 1 if frame_id is None else frame_id)


def _ann(ann_id, img_id, cat, bbox, instance_id=0, video_id=1):
    return dict(id=ann_id, image_id=img_id, category_id=cat, bbox=list(map(float, bbox)),
                area=float(bbox[2] * bbox[3]), iscrowd=0, instance_id=instance_id, video_id=video_id)


def _det(img_id, cat, xyxy, score):
    x1, y1, x2, y2 = xyxy
    return dict(image_id=img_id, category_id=cat, bbox=[x1, y1, x2 - x1, y2 - y1], score=score)


def _vid(coco, entries, **kw):
    img_ids, cat_ids = sorted(coco.imgs), sorted(coco.cats)
    names = [coco.cats[c]["name"] for c in cat_ids]
    return vid_map_metrics(detections_from_entries(entries, img_ids, cat_ids), gt_from_coco(coco, img_ids, cat_ids),
                           names, **kw)


def _as_results(coco, entries):
    """COCO entries -> mmdet per-image, per-class arrays (for the COCO metric of the same detections)."""
    img_ids, cat_ids = sorted(coco.imgs), sorted(coco.cats)
    out = [[[] for _ in cat_ids] for _ in img_ids]
    for e in entries:
        x, y, w, h = e["bbox"]
        out[img_ids.index(e["image_id"])][cat_ids.index(e["category_id"])].append([x, y, x + w, y + h, e["score"]])
    return [[np.asarray(p, np.float64).reshape(-1, 5) for p in per] for per in out]


# ------------------------------------------------------------------------------------------ devkit parts
def test_thresholds_and_iou_use_inclusive_pixels():
    # a 10 x 10 pixel object (COCO w = 9): 100 / (20 * 20) = 0.25; a 20 x 20 one: 400 / 900; large: 0.5
    boxes = np.array([[10, 10, 19, 19], [0, 0, 19, 19], [0, 0, 299, 199]], float)
    assert object_thresholds(boxes) == pytest.approx([0.25, 400 / 900, 0.5])
    # identical boxes: 1; touching at one pixel column: the +1 convention makes them overlap
    a = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9]], float)
    b = np.array([[0, 0, 9, 9], [9, 0, 18, 9], [10, 0, 19, 9]], float)
    assert devkit_iou(a, b) == pytest.approx([1.0, 10 / 190, 0.0])


def test_voc_ap_hand_value():
    # TP, FP, TP on 2 objects: envelope 1 up to recall 0.5, then 2/3 -> 0.5 + 0.5 * 2/3
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)
    assert voc_ap(np.array([]), np.array([])) == 0.0


@pytest.fixture
def frames():
    """3 frames. c1: a small 10 x 10 object in frame 1, two large ones in frame 2 (one 60 x 40 at
    (100, 100), one far away); c2: one object in frame 3; c3: one object in frame 1 (never detected)."""
    images = [_img(i) for i in (1, 2, 3)]
    anns = [_ann(1, 1, 1, (10, 10, 9, 9)), _ann(2, 2, 1, (100, 100, 60, 40)), _ann(3, 2, 1, (300, 200, 50, 50)),
            _ann(4, 3, 2, (50, 50, 80, 80)), _ann(5, 1, 3, (200, 100, 40, 40))]
    return _coco(images, anns)


def test_small_object_threshold_duplicates_and_missing_class(frames):
    entries = [
        _det(1, 1, (10, 10, 42, 19), 0.9),        # small object: devkit IoU 100/330 = 0.303 >= 0.25 (COCO: 0.28)
        _det(2, 1, (100, 100, 160, 140), 0.8),    # large object, exact
        _det(2, 1, (102, 100, 160, 140), 0.7),    # duplicate of it: false positive
        _det(2, 1, (300, 200, 350, 250), 0.6),    # the second large object
        _det(3, 2, (50, 50, 130, 130), 0.5),      # c2 found
    ]
    m = _vid(frames, entries)
    # c1 in score order: TP, TP, FP, TP on 3 objects -> recall 1/3, 2/3, 2/3, 1; precision 1, 1, 2/3, 3/4
    assert m["vid_AP50_per_class"]["c1"] == pytest.approx(2 / 3 + 1 / 3 * 3 / 4)
    assert m["vid_AP50_per_class"]["c2"] == pytest.approx(1.0)
    assert m["vid_AP50_per_class"]["c3"] == 0.0              # a class with objects and no detection: 0
    assert m["vid_mAP_50"] == pytest.approx((11 / 12 + 1.0 + 0.0) / 3)
    assert m["vid_num_gts"] == 5
    # COCO at IoU 0.5 (no +1 pixel: IoU 81 / 288 = 0.28) misses the small object: FP, TP, FP, TP ->
    # precision envelope 1/2 up to recall 2/3: recall thresholds 0.00..0.66 (67 of 101) see 1/2
    coco_ap = coco_bbox_metrics(frames, _as_results(frames, entries))["AP50_per_class"]["c1"]
    assert coco_ap == pytest.approx(67 * 0.5 / 101)


def test_class_without_ground_truth_is_left_out(frames):
    images = frames.dataset["images"]
    anns = [a for a in frames.dataset["annotations"] if a["category_id"] != 3]
    coco = _coco(images, anns)
    entries = [_det(3, 2, (50, 50, 130, 130), 0.5), _det(1, 3, (0, 0, 20, 20), 0.9)]   # a c3 box: no c3 object
    m = _vid(coco, entries)
    assert math.isnan(m["vid_AP50_per_class"]["c3"]) and m["vid_AP50_per_class"]["c1"] == 0.0
    assert m["vid_mAP_50"] == pytest.approx(0.5)              # mean of c1 (0) and c2 (1)


def test_greedy_matching_takes_the_best_free_object():
    # two overlapping c1 objects; the first detection overlaps both, best with object 2; the second
    # detection then can only take object 1 (if it overlaps it enough)
    coco = _coco([_img(1)], [_ann(1, 1, 1, (0, 0, 99, 99)), _ann(2, 1, 1, (20, 0, 99, 99))])
    img_ids, cat_ids = [1], [1, 2, 3]
    dets = detections_from_entries([_det(1, 1, (15, 0, 115, 99), 0.9), _det(1, 1, (0, 0, 99, 99), 0.8)],
                                   img_ids, cat_ids)
    gt = gt_from_coco(coco, img_ids, cat_ids)
    assert devkit_match(dets, gt).tolist() == [1, 0]          # indices into gt: object 2, then object 1


def _reference_vid_ap(coco, entries, cat):
    """The devkit's procedure written as plain loops, for one class."""
    gts = {i: [a for a in coco.imgToAnns[i] if a["category_id"] == cat] for i in sorted(coco.imgs)}
    scored = []
    npos = sum(len(g) for g in gts.values())
    for img_id in sorted(coco.imgs):
        dets = sorted([e for e in entries if e["image_id"] == img_id and e["category_id"] == cat],
                      key=lambda e: -e["score"])
        found = [False] * len(gts[img_id])
        for e in dets:
            x, y, w, h = e["bbox"]
            best, best_ov = -1, -1.0
            for k, a in enumerate(gts[img_id]):
                gx, gy, gw, gh = a["bbox"]
                iw = min(x + w, gx + gw) - max(x, gx) + 1
                ih = min(y + h, gy + gh) - max(y, gy) + 1
                if found[k] or iw <= 0 or ih <= 0:
                    continue
                ov = iw * ih / ((w + 1) * (h + 1) + (gw + 1) * (gh + 1) - iw * ih)
                thr = min(0.5, (gw + 1) * (gh + 1) / ((gw + 11) * (gh + 11)))
                if ov >= thr and ov > best_ov:
                    best, best_ov = k, ov
            if best >= 0:
                found[best] = True
            scored.append((e["score"], best >= 0))
    scored.sort(key=lambda s: -s[0])
    tp = np.cumsum([s[1] for s in scored])
    fp = np.cumsum([not s[1] for s in scored])
    return voc_ap(tp / npos, tp / np.maximum(tp + fp, 1e-300)) if npos else float("nan")


def test_random_frames_agree_with_a_plain_loop_reading_of_the_devkit():
    rng = np.random.default_rng(11)
    images = [_img(i) for i in range(1, 31)]
    anns, entries = [], []
    for img in images:
        for _ in range(int(rng.integers(0, 4))):
            x, y, w, h = rng.uniform(0, 300), rng.uniform(0, 200), rng.uniform(4, 80), rng.uniform(4, 80)
            anns.append(_ann(len(anns) + 1, img["id"], int(rng.integers(1, 4)), (x, y, w, h)))
            for _ in range(int(rng.integers(0, 3))):             # 0..2 jittered detections
                j = rng.normal(0, 0.25 * min(w, h), 4)
                entries.append(_det(img["id"], anns[-1]["category_id"], (x + j[0], y + j[1], x + w + j[2],
                                                                         y + h + j[3]), float(rng.random())))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 300), rng.uniform(0, 200)
            entries.append(_det(img["id"], int(rng.integers(1, 4)), (x, y, x + 30, y + 30), float(rng.random())))
    coco = _coco(images, anns)
    m = _vid(coco, entries)
    for c in (1, 2, 3):
        assert m["vid_AP50_per_class"][f"c{c}"] == pytest.approx(_reference_vid_ap(coco, entries, c), abs=1e-12)


# ------------------------------------------------------------------------------------------ FGFA split
def test_isolated_objects_get_motion_iou_one():
    images = [_img(i) for i in range(1, 31)]
    anns = []
    for f in range(30):
        anns.append(_ann(len(anns) + 1, f + 1, 1, (10, 10, 50, 50), instance_id=1))          # static
        anns.append(_ann(len(anns) + 1, f + 1, 2, (100 + 40 * f, 50, 30, 30), instance_id=2))
    anns.append(_ann(len(anns) + 1, 5, 3, (300, 200, 20, 20), instance_id=3))               # one frame only
    anns.append(_ann(len(anns) + 1, 2, 3, (300, 10, 20, 20), instance_id=4))                # frames 2 and 25:
    anns.append(_ann(len(anns) + 1, 25, 3, (300, 10, 20, 20), instance_id=4))               # 23 apart
    miou = fgfa_motion_iou(_coco(images, anns).dataset)
    assert len(miou) == len(anns)                             # a value for every object, as FGFA's table
    assert [miou[a["id"]] for a in anns if a["instance_id"] == 1] == [1.0] * 30
    assert miou[anns[-3]["id"]] == 1.0 and miou[anns[-2]["id"]] == 1.0 and miou[anns[-1]["id"]] == 1.0
    assert all(miou[a["id"]] == 0.0 for a in anns if a["instance_id"] == 2)
    # the counts to hold against FGFA's table: 63 objects, 3 isolated, the 30 static ones at exactly 1.0
    assert motion_iou_evidence(_coco(images, anns).dataset) == {"objects": 63, "isolated": 3,
                                                                "one_with_neighbours": 30}


@pytest.fixture
def motion_case():
    """Frame 1: P (c1, motion IoU 0.95: slow) and Q (c2, 0.5: fast); frame 2: no object; frame 3: R (c3,
    0.8: medium)."""
    images = [_img(1), _img(2), _img(3)]
    anns = [_ann(1, 1, 1, (10, 10, 60, 60)), _ann(2, 1, 2, (200, 100, 60, 60)), _ann(3, 3, 3, (50, 50, 40, 40))]
    return _coco(images, anns), {1: 0.95, 2: 0.5, 3: 0.8}


def _motion(coco, miou, entries, ranges=("slow", "medium", "fast")):
    img_ids, cat_ids = sorted(coco.imgs), sorted(coco.cats)
    names = [coco.cats[c]["name"] for c in cat_ids]
    return fgfa_motion_metrics(detections_from_entries(entries, img_ids, cat_ids), gt_from_coco(coco, img_ids, cat_ids),
                               names, miou, ranges=ranges)


MOTION_DETS = [
    _det(2, 1, (0, 0, 30, 30), 0.97),            # d4: c1 in the empty frame: empty weight (1/3 in range)
    _det(1, 1, (330, 250, 360, 280), 0.95),      # d3: c1 on background of frame 1: ties at IoU 0 -> 1/2
    _det(1, 1, (10, 10, 70, 70), 0.90),          # d1: c1 on P
    _det(1, 1, (230, 100, 290, 160), 0.80),      # d2: c1 half on Q (a c2 object): overlaps Q only
    _det(1, 2, (20, 10, 80, 70), 0.99),          # e2: c2 on P (a c1 object): overlaps P only
    _det(1, 2, (250, 150, 310, 210), 0.97),      # e3: c2 on Q, IoU below 0.5: unmatched, overlaps Q only
    _det(1, 2, (200, 100, 260, 160), 0.85),      # e1: c2 on Q
]


def test_fgfa_split_weights_false_positives(motion_case):
    coco, miou = motion_case
    m = _motion(coco, miou, MOTION_DETS)
    assert (m["vid_num_gts_slow"], m["vid_num_gts_medium"], m["vid_num_gts_fast"]) == (1, 1, 1)
    # slow, c1 by score: d4 (FP 1/3), d3 (FP 1/2: frame 1 has one of its two objects ignored), d1 (TP),
    # d2 (overlaps only the ignored Q: weight 0) -> precision at the TP = 1 / (1 + 5/6)
    assert m["vid_AP50_per_class_slow"]["c1"] == pytest.approx(6 / 11)
    assert math.isnan(m["vid_AP50_per_class_slow"]["c2"])   # no slow c2 object (e1 on Q counts for nothing)
    assert m["vid_mAP_50_slow"] == pytest.approx(6 / 11)
    # fast, c2 by score: e2 (overlaps only the ignored P: 0), e3 (overlaps Q more: 1), e1 (TP) -> 1/2;
    # scored as plain false positives e2 would make it 1/3
    assert m["vid_AP50_per_class_fast"]["c2"] == pytest.approx(0.5)
    assert m["vid_mAP_50_fast"] == pytest.approx(0.5)
    # medium: R never detected
    assert m["vid_AP50_per_class_medium"]["c3"] == 0.0 and m["vid_mAP_50_medium"] == 0.0


def test_fgfa_all_range_is_the_devkit_and_ranges_are_closed(motion_case):
    coco, miou = motion_case
    everything = _motion(coco, miou, MOTION_DETS, ranges=("all",))
    devkit = _vid(coco, MOTION_DETS)
    assert everything["vid_mAP_50_all"] == pytest.approx(devkit["vid_mAP_50"])
    assert everything["vid_AP50_per_class_all"] == pytest.approx(devkit["vid_AP50_per_class"], nan_ok=True)
    # objects exactly at 0.7 and 0.9 count in both neighbouring ranges
    m = _motion(coco, {1: 0.9, 2: 0.7, 3: 0.8}, MOTION_DETS)
    assert (m["vid_num_gts_slow"], m["vid_num_gts_medium"], m["vid_num_gts_fast"]) == (1, 3, 1)
    with pytest.raises(ValueError, match="unknown motion range"):
        _motion(coco, miou, MOTION_DETS, ranges=("quick",))
    with pytest.raises(ValueError, match="no motion IoU for annotation"):
        _motion(coco, {1: 0.9}, MOTION_DETS)


def test_detections_sort_by_frame_then_score():
    d = Detections(image=np.array([1, 0, 1, 0]), label=np.zeros(4, np.int64), scores=np.array([0.2, 0.5, 0.9, 0.5]),
                   boxes=np.arange(16, dtype=float).reshape(4, 4))
    assert d.image.tolist() == [0, 0, 1, 1] and d.scores.tolist() == [0.5, 0.5, 0.9, 0.2]
    assert d.boxes[:2, 0].tolist() == [4.0, 12.0]            # ties keep file order
