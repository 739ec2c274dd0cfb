"""Cost of the bootstrap over videos at ImageNet VID val size: matching once, then the replicates.

    python benchmarks/bench_bootstrap.py --out results/benchmarks/bootstrap.json
    python benchmarks/bench_bootstrap.py --videos 40 --frames 12000 --n-boot 200      # a quick run

Builds a synthetic problem of the size of ImageNet VID val (555 videos, 176,126 frames, 30 classes, about
1.6 objects per frame as there, 20 detections per frame: a jittered box on most objects, sometimes a
duplicate, the rest background boxes of random classes), for two models (the second finds more objects).
Measures, in one process: matching each model's detections the way COCO does
(:func:`clab.evaluation.coco_match.match_coco_arrays`), then ``video_bootstrap`` of both models and their
paired difference with ``--n-boot`` replicates; and the peak resident memory. With ``--compare-videos N``
it also times pycocotools' own ``COCOeval.evaluate`` (one IoU, area 'all') against the array matching on
the first N videos, side by side, and checks that both give the same table.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import time

import numpy as np


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_problem(videos: int, frames: int, classes: int, dets_per_frame: int, seed: int = 0):
    """Ground truth as a pycocotools COCO and two models' detections as columns."""
    from pycocotools.coco import COCO
    rng = np.random.default_rng(seed)
    lengths = rng.multinomial(frames - videos, np.full(videos, 1.0 / videos)) + 1
    video_of = np.repeat(np.arange(1, videos + 1), lengths)
    frame_of = np.concatenate([np.arange(n) for n in lengths])
    img_ids = np.arange(1, frames + 1)
    n_obj = rng.choice([0, 1, 2, 3, 4], size=frames, p=[0.08, 0.45, 0.3, 0.12, 0.05])   # mean 1.61
    obj_img = np.repeat(img_ids, n_obj)
    m = obj_img.size
    wh = rng.uniform(20, 400, size=(m, 2))
    xy = rng.uniform(0, 1, size=(m, 2)) * (np.array([1000.0, 600.0]) - wh)
    obj_cat = rng.integers(1, classes + 1, size=m)
    images = [dict(id=int(i), file_name=f"{v}/{f:06d}.JPEG", width=1000, height=600, video_id=int(v),
                   frame_id=int(f)) for i, v, f in zip(img_ids, video_of, frame_of)]
    anns = [dict(id=k + 1, image_id=int(obj_img[k]), category_id=int(obj_cat[k]),
                 bbox=[float(xy[k, 0]), float(xy[k, 1]), float(wh[k, 0]), float(wh[k, 1])],
                 area=float(wh[k, 0] * wh[k, 1]), iscrowd=0) for k in range(m)]
    coco = COCO()
    coco.dataset = dict(images=images, annotations=anns, categories=[dict(id=c, name=f"class{c}")
                                                                     for c in range(1, classes + 1)],
                        videos=[dict(id=v, name=str(v)) for v in range(1, videos + 1)])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()

    def model(recall: float):
        found = rng.random(m) < recall
        dup = found & (rng.random(m) < 0.3)
        src = np.concatenate([np.flatnonzero(found), np.flatnonzero(dup)])
        jitter = rng.normal(0, 0.08, size=(src.size, 4)) * np.repeat(wh[src], 2, axis=1)
        boxes = np.column_stack([xy[src], wh[src]]) + jitter
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
        scores = np.clip(rng.normal(0.7, 0.2, src.size), 0.0, 1.0)
        images_of = obj_img[src]
        per_frame = np.bincount(images_of - 1, minlength=frames)
        n_bg = np.maximum(dets_per_frame - per_frame, 0)
        bg_img = np.repeat(img_ids, n_bg)
        bg_wh = rng.uniform(10, 300, size=(bg_img.size, 2))
        bg = np.column_stack([rng.uniform(0, 700, bg_img.size), rng.uniform(0, 300, bg_img.size), bg_wh])
        return (np.concatenate([images_of, bg_img]), np.concatenate([obj_cat[src], rng.integers(1, classes + 1,
                                                                                             bg_img.size)]),
                np.concatenate([boxes, bg]), np.concatenate([scores, rng.beta(1, 4, bg_img.size)]).astype(np.float32))

    return coco, [model(0.6), model(0.75)]


def _table(coco, dets, classes):
    from clab.evaluation.bootstrap import MatchTable, units_of_images
    from clab.evaluation.coco_match import IGNORED, TP, match_coco_arrays
    img_ids, cat_ids = sorted(coco.imgs), sorted(coco.cats)
    m = match_coco_arrays(coco, *dets, img_ids, cat_ids)
    unit_of_image, names = units_of_images(coco, m.img_ids)
    unit = np.asarray([unit_of_image[i] for i in m.img_ids])
    keep = m.status != IGNORED
    npos = np.zeros((len(names), len(cat_ids)), np.int64)
    np.add.at(npos, (unit[m.gt_image[m.gt_counted]], m.gt_label[m.gt_counted]), 1)
    return MatchTable(scores=m.score[keep], tp=m.status[keep] == TP, units=unit[m.image[keep]],
                      class_offsets=np.searchsorted(m.label[keep], np.arange(len(cat_ids) + 1)), npos=npos,
                      unit_names=names, cat_ids=cat_ids, classes=[f"class{c}" for c in cat_ids])


def compare_with_cocoeval(coco, dets, n_videos: int) -> dict:
    """Array matching vs pycocotools ``COCOeval.evaluate`` on the frames of the first ``n_videos`` videos."""
    from pycocotools.cocoeval import COCOeval

    from clab.evaluation.bootstrap import table_from_cocoeval, table_from_entries, units_of_images
    img_ids = [i for i in sorted(coco.imgs) if coco.imgs[i]["video_id"] <= n_videos]
    sel = np.isin(dets[0], img_ids)
    entries = [dict(image_id=int(i), category_id=int(c), bbox=[float(v) for v in b], score=float(s))
               for i, c, b, s in zip(dets[0][sel], dets[1][sel], dets[2][sel], dets[3][sel])]
    cat_ids = sorted(coco.cats)
    names = [coco.cats[c]["name"] for c in cat_ids]
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(entries), "bbox")
        ev.params.imgIds, ev.params.iouThrs, ev.params.maxDets = img_ids, np.array([0.5]), [1000]
        ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        ev.evaluate()
    units, unit_names = units_of_images(coco, img_ids)
    reference = table_from_cocoeval(ev, units, unit_names, cat_ids, names)
    cocoeval_s, cocoeval_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    table = table_from_entries(coco, entries, img_ids, cat_ids, names)
    arrays_s, arrays_cpu = time.perf_counter() - start, time.process_time() - cpu
    same = all(np.array_equal(getattr(table, k), getattr(reference, k))
               for k in ("scores", "tp", "units", "class_offsets", "npos"))
    return dict(videos=n_videos, frames=len(img_ids), detections=len(entries), cocoeval_s=round(cocoeval_s, 2),
                arrays_s=round(arrays_s, 2), cocoeval_cpu_s=round(cocoeval_cpu, 2), arrays_cpu_s=round(arrays_cpu, 2),
                speedup=round(cocoeval_s / max(arrays_s, 1e-9), 1), same_table=same)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=555)
    parser.add_argument("--frames", type=int, default=176126)
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--dets-per-frame", type=int, default=20)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--compare-videos", type=int, default=0, help="also time COCOeval on N videos")
    parser.add_argument("--out", default=None, help="write the measurements as json")
    args = parser.parse_args()

    from clab.evaluation.bootstrap import video_bootstrap
    start, cpu = time.perf_counter(), time.process_time()
    coco, models = make_problem(args.videos, args.frames, args.classes, args.dets_per_frame)
    build_s = time.perf_counter() - start
    rss_data = _peak_rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    tables = {name: _table(coco, dets, args.classes) for name, dets in zip(("baseline", "clab"), models)}
    match_s, match_cpu = time.perf_counter() - start, time.process_time() - cpu
    rss_match = _peak_rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    boot = video_bootstrap(tables, n_boot=args.n_boot, seed=0)
    boot_s, boot_cpu = time.perf_counter() - start, time.process_time() - cpu
    result = dict(
        videos=args.videos, frames=args.frames, classes=args.classes,
        objects=len(coco.anns), detections_per_model=int(models[0][0].size),
        build_problem_s=round(build_s, 1), match_two_models_s=round(match_s, 1),
        match_two_models_cpu_s=round(match_cpu, 1), bootstrap_s=round(boot_s, 1),
        bootstrap_cpu_s=round(boot_cpu, 1), n_boot=args.n_boot,
        peak_rss_mib=dict(after_problem=round(rss_data), after_matching=round(rss_match),
                          after_bootstrap=round(_peak_rss_mib())),
        table_entries=int(sum(t.scores.size for t in tables.values())),
        models=boot["models"], differences=boot["differences"], cpu_count=os.cpu_count())
    if args.compare_videos:
        result["compare_with_cocoeval"] = compare_with_cocoeval(coco, models[0], args.compare_videos)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        from clab.io import atomic_write_text
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
