"""Throughput of ``clab infer-video`` (random weights) and the share of decoding, drawing and encoding.

Writes an H.264 mp4 of ``--frames`` frames at ``--width`` x ``--height`` (synthetic-set frames scaled to that
size, so the codec sees real content), then runs :func:`clab.inference.infer_video_file` on it, which reads
it back (in mode ``video``: one counting pass that keeps the reference frames, then the streaming pass),
runs the model frame by frame, draws the detections and encodes the annotated mp4. Reported, in seconds of
wall clock for the whole file: ``decode`` (both passes), ``model`` (test pipeline + detector), ``draw``,
``encode``, ``total`` (which includes opening and writing the json), frames/s, and the process CPU time
(steadier on a shared machine), with the CPU seconds of the same decoding and encoding measured on their
own right after (``decode_cpu_s``, ``encode_cpu_s``, ``io_cpu_share`` of the run's CPU time).

Usage::

    python benchmarks/bench_infer_video.py --config configs/selsa-troi_faster-rcnn_tiny_synthetic.py \
        --width 160 --height 96 --frames 48
    python benchmarks/bench_infer_video.py --config configs/selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py \
        --width 1000 --height 600 --frames 4

This is a measurement script, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_video(path: Path, width: int, height: int, frames: int, fps: float = 25.0) -> Path:
    """An mp4 of synthetic-set frames (seed 0, looped) scaled to ``width`` x ``height``."""
    import cv2

    from clab.data.synthetic import make_synthetic
    from clab.data.video_io import VideoWriter

    root = make_synthetic(path.parent / "synthetic", seed=0, train_videos=0, val_videos=2, frames=12, reuse=True)
    files = sorted((root / "Data" / "VID" / "val").glob("*/*.JPEG"))
    with VideoWriter(path, width, height, fps) as writer:
        for i in range(frames):
            writer.write(cv2.resize(cv2.imread(str(files[i % len(files)])), (width, height)))
    return path


def io_cpu_seconds(video: Path, out: Path, passes: int) -> tuple[float, float]:
    """Process CPU seconds of decoding ``video`` ``passes`` times and of encoding its frames again (the I/O
    of an infer-video run without the model, measured on their own in the same process)."""
    from clab.data.video_io import VideoWriter, open_video

    t0 = time.process_time()
    for _ in range(passes):
        with open_video(video) as source:
            frames = [image for _, image in source.frames()]
    decode = time.process_time() - t0
    t0 = time.process_time()
    with VideoWriter(out, source.width, source.height, source.fps) as writer:
        for image in frames:
            writer.write(image)
    return decode, time.process_time() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "selsa-troi_faster-rcnn_tiny_synthetic.py"))
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--mode", default="video", choices=["video", "online", "first"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: library default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the numbers as json here")
    args = parser.parse_args(argv)

    import torch

    from clab.apis import init_model
    from clab.inference import infer_video_file

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # random weights, and no ImageNet download for the backbone
    model = init_model(args.config, device=args.device, cfg_options={"model.detector.backbone.init_cfg": None})
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "input.mp4", args.width, args.height, args.frames)
        cpu0 = time.process_time()
        summary = infer_video_file(model, video, Path(tmp) / "out.mp4", Path(tmp) / "out.json", mode=args.mode,
                                   progress=False)
        cpu = time.process_time() - cpu0
        decode_cpu, encode_cpu = io_cpu_seconds(video, Path(tmp) / "again.mp4", passes=2 if args.mode == "video" else 1)
    total = summary["seconds"]
    cpu_shares = {"decode_cpu_s": round(decode_cpu, 3), "encode_cpu_s": round(encode_cpu, 3),
                  "io_cpu_share": round((decode_cpu + encode_cpu) / cpu, 4),
                  "frames_per_cpu_s": round(summary["frames"] / cpu, 3)}
    result = {
        "config": os.path.basename(args.config), "size": f"{args.width}x{args.height}", "frames": summary["frames"],
        "mode": args.mode, "torch_threads": torch.get_num_threads(), "device": args.device,
        "total_s": round(total, 3), "frames_per_s": round(summary["frames"] / total, 3),
        "cpu_s": round(cpu, 3),
        **{f"{k}_s": round(summary[f"{k}_seconds"], 3) for k in ("decode", "model", "draw", "encode")},
        **{f"{k}_share": round(summary[f"{k}_seconds"] / total, 4) for k in ("decode", "model", "draw", "encode")},
        "io_share": round((summary["decode_seconds"] + summary["encode_seconds"]) / total, 4),
        **cpu_shares,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        from clab.io import atomic_write_json
        atomic_write_json(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
