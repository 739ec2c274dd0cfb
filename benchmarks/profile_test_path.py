"""Per-stage profile of the SELSA + TRoI test path (adaptive stride, per-video cache), random weights.

Builds the CLAB R-50-DC5 model of ``bench_detector.py`` (same random weights: torch seed 0), runs one video
of ``--frames`` frames (frame 0 brings the ``--refs`` reference images and builds the cache) under
``torch.profiler`` and splits each frame's wall time into stages:

* the detector's own calls, each timed from outside (instance methods wrapped in a profiler range):
  key backbone + neck, RPN (with its NMS), RoIAlign of the key RoIs, the key map's search layout and embed
  taps, TRoI aggregation, the key frame's reference encodings, the SELSA box head, ``get_bboxes`` (box
  decoding and class-wise NMS); frame 0 also the reference cache;
* inside TRoI aggregation, the ranges that ``TemporalRoIAlign`` marks itself (``troi.*``: similarity
  GEMMs, top-k, softmax + gather of the most-similar features, embed, attention).

Every stage is reported as seconds (median over frames 1..) and as a share of the frame; shares measured in
one process are what to compare between runs on a machine shared with other jobs. A second pass without
the profiler gives the plain per-frame times (the profiler's overhead is the difference).

Usage::

    python benchmarks/profile_test_path.py --height 608 --width 1008 --refs 14 --frames 4 \
        --out results/profile_test_path.json
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: (label, attribute path from the SELSA model) of the wrapped calls, outermost first
STAGES = [
    ("reference cache (frame 0)", "detector.roi_head.prepare_reference_cache"),
    ("backbone + neck", "extract_feat"),
    ("RPN + proposal NMS", "_rpn"),
    ("RoIAlign, key RoIs", "detector.roi_head.bbox_roi_extractor.forward"),
    ("RoIAlign, key RoIs", "detector.roi_head.bbox_roi_extractor.align_key_rois"),
    ("key map layout + embed taps", "detector.roi_head.bbox_roi_extractor.prepare_reference_maps"),
    ("TRoI aggregation", "detector.roi_head.bbox_roi_extractor.aggregate"),
    ("key frame reference encodings", "detector.roi_head.bbox_head.encode_references"),
    ("SELSA box head", "detector.roi_head.bbox_head.forward_encoded"),
    ("decode + NMS", "detector.roi_head.detections"),
]
TROI_RANGES = ["troi.similarity", "troi.topk", "troi.near_ties", "troi.gather", "troi.embed", "troi.attention"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=608)
    p.add_argument("--width", type=int, default=1008)
    p.add_argument("--refs", type=int, default=14)
    p.add_argument("--frames", type=int, default=4, help="frames of the video (stages: median of 1..)")
    p.add_argument("--depth", type=int, default=50, choices=(50, 101))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-plain-pass", action="store_true", help="skip the second pass without profiler")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.frames < 2:
        p.error("--frames must be >= 2 (frame 0 builds the cache)")
    return args


def _resolve(root, path: str):
    obj = root
    parts = path.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part)
    return obj, parts[-1]


def _wrap_stages(model) -> None:
    """Wrap each STAGES call of ``model`` (on the instance) in a ``stage:<label>`` profiler range."""
    from torch.profiler import record_function

    for label, path in STAGES:
        owner, name = _resolve(model, path)
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def wrapped(*a, __inner=inner, __label=label, **kw):
            with record_function(f"stage:{__label}"):
                return __inner(*a, **kw)
        setattr(owner, name, wrapped)


def _outermost_stage(event):
    """The outermost ``stage:`` range enclosing ``event`` (itself included), or None."""
    found = None
    while event is not None:
        if event.name.startswith("stage:"):
            found = event
        event = event.cpu_parent
    return found


def _frame_stages(events) -> dict:
    """Seconds per stage label (outermost stages only) and per ``troi.*`` range, from profiler events."""
    out: dict = {}
    for ev in events:
        if ev.name.startswith("stage:") and _outermost_stage(ev) is ev:
            key = ev.name[len("stage:"):]
        elif ev.name in TROI_RANGES:
            key = ev.name
        else:
            continue
        out[key] = out.get(key, 0.0) + ev.cpu_time_total / 1e6
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    import bench_detector as bd

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    model = bd._build(True, True, args.depth, None).to(args.device).eval()
    _wrap_stages(model)
    g = torch.Generator().manual_seed(1)
    frames, refs = bd._test_video(args, g)

    per_frame = []
    for f in range(args.frames):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            wall, cpu, _ = bd._test_frame(model, args, frames, refs, f)
        stages = _frame_stages(prof.events())
        stages["frame total"] = wall
        per_frame.append(stages)
        print(f"frame {f}: {wall:.2f} s wall (profiled)", file=sys.stderr, flush=True)
    plain = []
    if not args.no_plain_pass:
        for f in range(args.frames):
            wall, cpu, _ = bd._test_frame(model, args, frames, refs, f)
            plain.append(wall)

    labels = list(dict.fromkeys(label for label, _ in STAGES)) + TROI_RANGES
    later = per_frame[1:]
    rows = []
    total = statistics.median(s["frame total"] for s in later)
    for label in labels:
        if not any(label in s for s in per_frame):
            continue
        sec = statistics.median(s.get(label, 0.0) for s in later)
        rows.append(dict(stage=label, seconds=sec, share=sec / total, frame0_s=per_frame[0].get(label, 0.0)))
    top = sum(r["seconds"] for r in rows if not r["stage"].startswith("troi."))
    rows.append(dict(stage="other (outside the stages)", seconds=total - top, share=(total - top) / total,
                     frame0_s=per_frame[0]["frame total"] - sum(
                         v for k, v in per_frame[0].items() if not k.startswith("troi.") and k != "frame total")))
    result = dict(settings=dict(height=args.height, width=args.width, refs=args.refs, frames=args.frames,
                                depth=args.depth, torch_threads=threads, device=args.device,
                                torch=torch.__version__),
                  stages=rows, frame_total_s=total, frame0_total_s=per_frame[0]["frame total"],
                  per_frame=per_frame, plain_frame_times_s=plain)
    if plain:
        result["plain_per_frame_s"] = statistics.median(plain[1:])
        result["plain_frame0_s"] = plain[0]

    print(f"R-{args.depth}-DC5 CLAB, {args.height}x{args.width}, {args.refs} refs, cached adaptive-stride "
          f"test, torch threads {threads}; stages: median over frames 1..{args.frames - 1}")
    print(f"| {'stage':<34} | {'s / frame':>9} | {'share':>6} | {'frame 0 s':>9} |")
    print(f"| {'-' * 34} | {'-' * 9} | {'-' * 6} | {'-' * 9} |")
    for r in rows:
        name = ("  " + r["stage"]) if r["stage"].startswith("troi.") else r["stage"]
        print(f"| {name:<34} | {r['seconds']:>9.2f} | {100 * r['share']:>5.1f}% | {r['frame0_s']:>9.2f} |")
    print(f"| {'frame (profiled)':<34} | {total:>9.2f} | {100.0:>5.1f}% | {per_frame[0]['frame total']:>9.2f} |")
    if plain:
        print(f"plain pass (no profiler): per frame {result['plain_per_frame_s']:.2f} s, "
              f"frame 0 {result['plain_frame0_s']:.2f} s; frames {[round(t, 2) for t in plain]}")
    if args.out:
        from clab.io import atomic_write_json
        atomic_write_json(args.out, result, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
