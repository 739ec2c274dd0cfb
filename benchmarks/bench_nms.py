"""The test-time NMS that stops at max_num (clab.models.nms) against mmcv's, on the two NMS calls of a frame.

Random boxes clustered as a detector's are (heavy overlap), at the sizes of the 608x1008 test path with
random weights: the RPN's 6,000 boxes (one level, IoU 0.7, 300 kept) and the box head's 9,000 (300 RoIs
x 30 classes, IoU 0.5, 100 kept). Reports the median of ``--repeats`` calls of each, side by side in one
process, and whether the kept boxes are the same (bit for bit).

Usage::

    python benchmarks/bench_nms.py --threads 2 --repeats 7
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (label, boxes, classes, IoU threshold, max_num)
CASES = [("RPN proposals", 6000, 1, 0.7, 300), ("box head detections", 9000, 30, 0.5, 100)]


def _boxes(n: int, classes: int, seed: int):
    import torch
    gen = torch.Generator().manual_seed(seed)
    centers = torch.rand(n // 20, 2, generator=gen) * torch.tensor([1008.0, 608.0])
    xy = centers.repeat_interleave(20, dim=0) + torch.randn(n, 2, generator=gen) * 15
    wh = torch.rand(n, 2, generator=gen) * 150 + 4
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1).clamp(min=0)
    return boxes, torch.rand(n, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    import torch
    from mmcv.ops import batched_nms as mmcv_batched_nms
    sys.path.insert(0, ROOT)
    from clab.models import nms

    if args.threads:
        torch.set_num_threads(args.threads)
    nms._reproduces_mmcv()  # the one-off check, before anything is timed
    print("| call | boxes | mmcv ms | clab ms | ratio | same kept boxes |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for label, n, classes, iou, max_num in CASES:
        boxes, scores, ids = _boxes(n, classes, seed=n)
        cfg = dict(type="nms", iou_threshold=iou)
        times = {"mmcv": [], "clab": []}
        for _ in range(args.repeats):
            for who in ("mmcv", "clab"):
                start = time.perf_counter()
                if who == "mmcv":
                    dets, keep = mmcv_batched_nms(boxes, scores, ids, cfg)
                    dets, keep = dets[:max_num], keep[:max_num]
                else:
                    got_dets, got_keep = nms.batched_nms(boxes, scores, ids, cfg, max_num)
                times[who].append(time.perf_counter() - start)
        same = torch.equal(keep, got_keep) and torch.equal(dets, got_dets)
        a, b = (statistics.median(times[w]) * 1e3 for w in ("mmcv", "clab"))
        print(f"| {label} | {n:,} | {a:.1f} | {b:.1f} | {b / a:.2f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
