"""Seed statistics (Student t) and the bootstrap over videos, on constructed inputs with known answers."""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO

from clab.evaluation.bootstrap import (coco_ap101, load_match_table, match_detections, save_match_table,
                                       table_from_cocoeval, table_from_entries, table_map, units_of_images,
                                       video_bootstrap)
from clab.evaluation.coco_metrics import coco_bbox_metrics, results_to_coco_json
from clab.evaluation.stats import paired_seed_difference, seed_summary


# ------------------------------------------------------------------------------------------ seeds
def _t975_dof2():
    # closed form of Student's t quantile for 2 degrees of freedom: (2p - 1) / sqrt(2 p (1 - p))
    p = 0.975
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def test_seed_summary_known_values():
    s = seed_summary([1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == pytest.approx(1.0)
    half = _t975_dof2() * 1.0 / math.sqrt(3)                   # 4.3027 / sqrt(3)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-12)
    # two values: t(0.975, 1) = tan(0.475 pi) (Cauchy), std of (0, 1) = 1/sqrt(2)
    s = seed_summary([0.0, 1.0])
    half = math.tan(0.475 * math.pi) * (1 / math.sqrt(2)) / math.sqrt(2)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-9)
    # 90% interval is narrower; identical values have zero width; one value has no interval
    assert seed_summary([1.0, 2.0, 3.0], confidence=0.9)["ci_high"] < 2.0 + _t975_dof2() / math.sqrt(3)
    assert seed_summary([0.3, 0.3, 0.3]) == dict(mean=pytest.approx(0.3), std=0.0, n=3,
                                                 ci_low=pytest.approx(0.3), ci_high=pytest.approx(0.3))
    one = seed_summary([0.42])
    assert one["n"] == 1 and one["mean"] == 0.42
    assert math.isnan(one["std"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])


def test_seed_interval_covers_the_mean_at_its_nominal_rate():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        s = seed_summary(rng.normal(5.0, 2.0, size=4))
        hits += s["ci_low"] <= 5.0 <= s["ci_high"]
    assert abs(hits / 2000 - 0.95) < 0.015                     # binomial sd is 0.005


def test_paired_difference_uses_common_seeds_and_pairs():
    a = {0: 0.50, 1: 0.60, 2: 0.40, 7: 0.9}
    b = {0: 0.52, 1: 0.625, 2: 0.415, 5: 0.1}
    d = paired_seed_difference(a, b)
    assert d["seeds"] == [0, 1, 2] and d["n"] == 3
    diffs = [0.02, 0.025, 0.015]
    assert d["mean"] == pytest.approx(0.02) and d["std"] == pytest.approx(np.std(diffs, ddof=1))
    half = _t975_dof2() * d["std"] / math.sqrt(3)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.02 - half, 0.02 + half))
    assert d["ci_low"] > 0 and d["excludes_zero"] is True      # 0.02 ± 0.0124
    # the pairing matters: unpaired, the seed-to-seed spread (0.1) hides the gain in overlapping intervals
    unpaired_a, unpaired_b = seed_summary([0.50, 0.60, 0.40]), seed_summary([0.52, 0.625, 0.415])
    assert unpaired_b["ci_low"] < unpaired_a["mean"] < unpaired_b["mean"] < unpaired_a["ci_high"]
    noisy = paired_seed_difference({0: 0.5, 1: 0.6}, {0: 0.6, 1: 0.5})
    assert noisy["mean"] == pytest.approx(0.0) and noisy["excludes_zero"] is False
    single = paired_seed_difference({3: 0.5}, {3: 0.7})
    assert single["mean"] == pytest.approx(0.2) and single["excludes_zero"] is False


@pytest.mark.parametrize("call, words", [
    (lambda: seed_summary([]), "values is empty"),
    (lambda: seed_summary([0.1, float("nan")]), "values[1] is nan"),
    (lambda: seed_summary("0.1"), "sequence of numbers"),
    (lambda: seed_summary([0.1, 0.2], confidence=95), "confidence must be in (0, 1)"),
    (lambda: paired_seed_difference({0: 1.0}, {1: 1.0}), "no seed in common"),
    (lambda: paired_seed_difference([1.0], {0: 1.0}), "a must be a mapping"),
])
def test_seed_statistics_reject_bad_input(call, words):
    with pytest.raises(ValueError) as err:
        call()
    assert words in str(err.value)


# ------------------------------------------------------------------------------------------ bootstrap
def _coco(dataset):
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _random_videos(rng, n_videos=10, frames=5, n_cats=3):
    """Videos of 300x200 frames with 0..3 random objects each (5% crowd), and detections: a jittered box
    for about half the objects (a third of them twice: duplicates), plus background boxes whose scores are
    rounded to 0.1 (ties across videos)."""
    images, anns = [], []
    for v in range(n_videos):
        for f in range(frames):
            img_id = 100 * v + f + 1
            images.append(dict(id=img_id, file_name=f"v{v}/{f}.JPEG", width=300, height=200, video_id=v + 1,
                               frame_id=f))
            for k in range(int(rng.integers(0, 4))):
                x, y, w, h = rng.uniform(0, 200), rng.uniform(0, 120), rng.uniform(5, 90), rng.uniform(5, 70)
                anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=int(rng.integers(1, n_cats + 1)),
                                 bbox=[x, y, w, h], area=w * h, iscrowd=int(rng.random() < 0.05),
                                 instance_id=k, video_id=v + 1))
    coco = _coco(dict(images=images, annotations=anns, categories=[dict(id=c, name=f"c{c}")
                                                                   for c in range(1, n_cats + 1)]))
    results = []
    for img in images:
        per = [[] for _ in range(n_cats)]
        for a in coco.imgToAnns[img["id"]]:
            if rng.random() < 0.5:
                x, y, w, h = a["bbox"]
                j = rng.normal(0, 4, 4)
                for _ in range(1 + int(rng.random() < 0.3)):
                    per[a["category_id"] - 1].append([x + j[0], y + j[1], x + w + j[2], y + h + j[3], rng.random()])
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 250), rng.uniform(0, 150)
            per[int(rng.integers(0, n_cats))].append([x, y, x + rng.uniform(3, 50), y + rng.uniform(3, 50),
                                                      round(rng.random(), 1)])
        results.append([np.asarray(p, np.float32).reshape(-1, 5) for p in per])
    return coco, results


def _materialise(coco, results, counts):
    """The resampled data set itself: video v copied counts[v] times, with new image and annotation ids."""
    images, anns, out = [], [], []
    for copy in range(int(max(counts))):
        for v, count in enumerate(counts):
            if count <= copy:
                continue
            for n, img in enumerate(coco.dataset["images"]):
                if img["video_id"] != v + 1:
                    continue
                new_id = len(images) + 1
                images.append(dict(img, id=new_id))
                anns += [dict(a, id=len(anns) + 1 + i, image_id=new_id)
                         for i, a in enumerate(coco.imgToAnns[img["id"]])]
                out.append(results[n])
    return _coco(dict(images=images, annotations=anns, categories=coco.dataset["categories"])), out


def test_point_estimate_and_replicates_equal_cocoeval_on_the_resampled_set():
    rng = np.random.default_rng(3)
    coco, results = _random_videos(rng)
    table = match_detections(coco, results)
    assert table.unit_names == [f"video {v}" for v in range(1, 11)]
    reference = coco_bbox_metrics(coco, results)
    point, ap = table_map(table)
    assert point[0] == pytest.approx(reference["coco_stats"]["mAP_50"], abs=1e-12)
    assert ap[0] == pytest.approx(list(reference["AP50_per_class"].values()), abs=1e-12)
    # a replicate with weights equals pycocotools on the data set built by copying the drawn videos
    for _ in range(3):
        counts = rng.multinomial(10, np.full(10, 0.1))
        coco_b, results_b = _materialise(coco, results, counts)
        expected = coco_bbox_metrics(coco_b, results_b)["coco_stats"]["mAP_50"]
        assert table_map(table, counts[None, :].astype(float))[0][0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("max_dets", [1000, 2])
def test_array_matching_equals_cocoeval_decisions(max_dets):
    from pycocotools.cocoeval import COCOeval
    rng = np.random.default_rng(4)
    coco, results = _random_videos(rng, n_videos=8, frames=6)
    img_ids, cat_ids = coco.getImgIds(), coco.getCatIds()
    entries = results_to_coco_json(results, img_ids, cat_ids)
    ev = COCOeval(coco, coco.loadRes(entries) if entries else None, "bbox")
    ev.params.maxDets, ev.params.iouThrs = [max_dets], np.array([0.5])
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    units, names = units_of_images(coco, img_ids)
    expected = table_from_cocoeval(ev, units, names, cat_ids, ["c1", "c2", "c3"])
    got = table_from_entries(coco, entries, img_ids, cat_ids, ["c1", "c2", "c3"], max_dets=max_dets)
    assert any(a.get("iscrowd") for a in coco.dataset["annotations"])      # crowds are exercised
    for key in ("scores", "tp", "units", "class_offsets", "npos"):
        assert np.array_equal(getattr(got, key), getattr(expected, key)), key
    assert got.unit_names == expected.unit_names


def test_coco_ap101_hand_values():
    # 2 objects; scores order TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    tp = np.cumsum([1, 0, 1])[None, :].astype(float)
    fp = np.cumsum([0, 1, 0])[None, :].astype(float)
    # recall thresholds 0..0.5 (51 points) see precision 1, 0.51..1 (50 points) see 2/3
    assert coco_ap101(tp, fp, np.array([2]))[0] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # a third object never found: recall stops at 2/3 -> thresholds 0.67.. get 0
    assert coco_ap101(tp, fp, np.array([3]))[0] == pytest.approx((34 + 33 * 2 / 3) / 101)


def _two_model_tables():
    rng = np.random.default_rng(5)
    coco, weak = _random_videos(rng, n_videos=12)
    strong = []
    for img, per in zip(coco.dataset["images"], weak):      # the strong model also finds every object
        extra = [[] for _ in per]
        for a in coco.imgToAnns[img["id"]]:
            x, y, w, h = a["bbox"]
            extra[a["category_id"] - 1].append([x, y, x + w, y + h, 0.95])
        strong.append([np.concatenate([p, np.asarray(e, np.float32).reshape(-1, 5)]) for p, e in zip(per, extra)])
    return coco, match_detections(coco, weak), match_detections(coco, strong)


def test_video_bootstrap_intervals_and_paired_difference():
    coco, weak, strong = _two_model_tables()
    out = video_bootstrap({"baseline": weak, "clab": strong}, n_boot=300, seed=1)
    assert out["n_videos"] == 12 and out["n_boot"] == 300
    assert "12 validation videos" in out["method"] and "same resampled videos" in out["method"]
    for name, table in (("baseline", weak), ("clab", strong)):
        m = out["models"][name]
        assert m["bbox_mAP_50"] == pytest.approx(table_map(table)[0][0])
        assert m["ci_low"] < m["bbox_mAP_50"] < m["ci_high"]
    d = out["differences"]["clab-baseline"]
    assert d["mean"] == pytest.approx(out["models"]["clab"]["bbox_mAP_50"] - out["models"]["baseline"]["bbox_mAP_50"])
    assert d["mean"] > 0.3 and d["ci_low"] > 0 and d["excludes_zero"] is True
    # the same seed gives the same intervals; the difference of a model with itself is exactly 0
    assert video_bootstrap({"baseline": weak, "clab": strong}, n_boot=300, seed=1) == out
    same = video_bootstrap({"baseline": weak, "clab": weak}, n_boot=50)["differences"]["clab-baseline"]
    assert same["ci_low"] == same["ci_high"] == 0.0 and same["excludes_zero"] is False
    # paired resampling: the interval of the difference is narrower than the two models' intervals
    # combined as if independent
    width = d["ci_high"] - d["ci_low"]
    assert width < math.hypot(*(out["models"][n]["ci_high"] - out["models"][n]["ci_low"]
                                for n in ("baseline", "clab")))


def test_bootstrap_of_identical_videos_has_no_spread():
    # 6 copies of one video: every resample is the same data set up to multiplicity -> same AP
    rng = np.random.default_rng(8)
    coco, results = _random_videos(rng, n_videos=1)
    coco6, results6 = _materialise(coco, results, [6])
    for img in coco6.dataset["images"]:
        img["video_id"] = (img["id"] - 1) // len(coco.dataset["images"]) + 1
    coco6 = _coco(coco6.dataset)
    out = video_bootstrap({"m": match_detections(coco6, results6)}, n_boot=40, pairs=())
    m = out["models"]["m"]
    assert m["ci_low"] == pytest.approx(m["bbox_mAP_50"]) and m["ci_high"] == pytest.approx(m["bbox_mAP_50"])


def test_match_table_round_trip_and_errors(tmp_path):
    coco, weak, strong = _two_model_tables()
    path = tmp_path / "eval" / "matches.npz"
    save_match_table(weak, path)
    loaded = load_match_table(path)
    assert loaded.unit_names == weak.unit_names and loaded.classes == weak.classes
    assert np.array_equal(loaded.tp, weak.tp) and np.array_equal(loaded.npos, weak.npos)
    assert video_bootstrap({"baseline": loaded, "clab": strong}, n_boot=20) == \
        video_bootstrap({"baseline": weak, "clab": strong}, n_boot=20)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="junk.npz is not a match table"):
        load_match_table(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_match_table(tmp_path / "missing.npz")
    other = load_match_table(path)
    other.unit_names = other.unit_names[::-1]
    with pytest.raises(ValueError, match="same videos"):
        video_bootstrap({"baseline": weak, "clab": other}, n_boot=5)
    with pytest.raises(ValueError, match="n_boot must be >= 1"):
        video_bootstrap({"baseline": weak}, n_boot=0)


def test_speed_split_equals_cocoeval_with_out_of_range_objects_ignored():
    from pycocotools.cocoeval import COCOeval  # noqa: F401  (the reference below subclasses it)

    from clab.evaluation.coco_metrics import per_class_ap, run_cocoeval
    from clab.evaluation.speed_split import _RangeCOCOeval, speed_split_entries
    rng = np.random.default_rng(6)
    coco, results = _random_videos(rng, n_videos=6, frames=6)
    img_ids, cat_ids = coco.getImgIds(), coco.getCatIds()
    entries = results_to_coco_json(results, img_ids, cat_ids)
    motion = {a["id"]: float(rng.choice([0.5, 0.8, 0.95])) for a in coco.dataset["annotations"]}
    got = speed_split_entries(coco, entries, img_ids, cat_ids, motion)
    for name, keep in (("slow", 0.95), ("medium", 0.8), ("fast", 0.5)):
        ignored = {a for a, m in motion.items() if m != keep}
        with contextlib.redirect_stdout(io.StringIO()):
            ev = _RangeCOCOeval(coco, coco.loadRes(entries), ignored)
        ev.params.maxDets, ev.params.iouThrs = [100, 300, 1000], np.array([0.5])
        ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        run_cocoeval(ev)
        assert list(got[f"AP50_per_class_{name}"].values()) == pytest.approx(per_class_ap(ev), abs=1e-12,
                                                                               nan_ok=True)
