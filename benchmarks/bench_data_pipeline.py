"""Throughput of the training data pipeline (clips per second, one process, no workers).

    python benchmarks/bench_data_pipeline.py --out results/benchmarks/data_pipeline.json

Generates two synthetic sets in a temporary folder, one at the synthetic default size and one of
1000x600 JPEGs (ImageNet VID's typical frame size, resized by the pipeline to 1000x600), and pulls clips
(key frame + 2 references: load, resize, flip, normalise, pad, format) through the train pipeline of
``configs/_base_/datasets/synthetic-vid.py`` and of ``configs/_base_/datasets/imagenet-vid-det_troi.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def _dataset(base_cfg: str, root: str, classes):
    from mmcv import Config
    from mmdet.datasets import build_dataset

    import clab  # noqa: F401
    cfg = Config.fromfile(base_cfg)
    train = cfg.data.train
    train = train[0] if isinstance(train, (list, tuple)) else train
    train.update(ann_file=os.path.join(root, "annotations", "synthetic_vid_train.json"),
                 img_prefix=os.path.join(root, "Data", "VID"))
    if train.type == "ImagenetVIDDataset":  # 1000x600 frames through the paper's pipeline, synthetic classes
        train.type = "CocoVideoDataset"
    train.classes = classes
    return build_dataset(train)


def measure(dataset, clips: int) -> float:
    n = min(clips, len(dataset))
    dataset[0]  # warm-up (first cv2 call, caches)
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    from clab.data.synthetic import SYNTHETIC_CLASSES, make_synthetic
    from clab.io import atomic_write_json

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        small = make_synthetic(os.path.join(tmp, "small"), seed=0)
        large = make_synthetic(os.path.join(tmp, "large"), seed=0, width=1000, height=600, train_videos=6,
                               val_videos=1)
        results["synthetic_default_clips_per_s"] = measure(
            _dataset("configs/_base_/datasets/synthetic-vid.py", str(small), SYNTHETIC_CLASSES), args.clips)
        results["jpeg_1000x600_clips_per_s"] = measure(
            _dataset("configs/_base_/datasets/imagenet-vid-det_troi.py", str(large), SYNTHETIC_CLASSES),
            args.clips)
    results = {k: round(v, 2) for k, v in results.items()}
    print(json.dumps(results, indent=1))
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
