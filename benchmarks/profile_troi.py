"""TRoI aggregation of one cached test frame, this tree against an earlier revision, side by side.

Random TRoI R-50 sizes (512 channels, 300 key RoIs, ``--refs`` cached maps plus the key frame's own map of
``--map-h`` x ``--map-w``, i.e. 38x63 for a 608x1008 frame). Both implementations get the same weights and
inputs and run in turn in one process (so both see the same load on a shared machine): per repeat, the
cached path's RoI-head part of a frame (the key map's layout and embed taps, then the aggregation against
the cached stack and the key map). Reports the median wall and process CPU seconds of each, their ratios, the ``troi.*`` ranges
of this tree (torch.profiler) and the largest output difference.

Usage::

    python benchmarks/profile_troi.py --baseline HEAD~1 --repeats 3
"""
from __future__ import annotations

import argparse
import inspect
import os
import statistics
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_revision(rev: str):
    """The ``TemporalRoIAlign`` class of ``clab/models/temporal_roi_align.py`` at git revision ``rev``
    (not registered in mmdet's registry)."""
    source = subprocess.run(["git", "show", f"{rev}:clab/models/temporal_roi_align.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    source = source.replace("@MODELS.register_module()\n", "")
    module = types.ModuleType("clab.models._troi_baseline")
    module.__package__ = "clab.models"
    exec(compile(source, f"{rev}:temporal_roi_align.py", "exec"), module.__dict__)
    return module.TemporalRoIAlign


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="HEAD", help="git revision to compare with (default HEAD)")
    p.add_argument("--map-h", type=int, default=38)
    p.add_argument("--map-w", type=int, default=63)
    p.add_argument("--refs", type=int, default=14)
    p.add_argument("--rois", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--chunk", type=int, default=0, help="similarity_chunk_elements of this tree (0: default)")
    p.add_argument("--cpu-block", type=int, default=0,
                   help="CPU_POSITION_BLOCK_ELEMENTS of this tree's position-first search (0: default)")
    p.add_argument("--cpu-tile", type=int, default=None,
                   help="CPU_TABLE_TILE of this tree's position-first search (0: whole-width blocks)")
    p.add_argument("--cpu-tile-elements", type=int, default=0,
                   help="CPU_TILE_ELEMENTS of this tree's position-first search (0: default)")
    p.add_argument("--cpu-native", type=int, choices=(0, 1), default=None,
                   help="CPU_NATIVE_SEARCH of this tree: 1 the tiled search's top-k and the attention logits "
                        "by the compiled kernels where they build, 0 by torch ops (default: the module's)")
    p.add_argument("--cpu-embed-block", type=int, default=0,
                   help="CPU_EMBED_BLOCK_POINTS of this tree's map-by-map attention logits (0: default)")
    args = p.parse_args(argv)

    import torch
    from mmdet.core import bbox2roi
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, ROOT)
    import clab.models  # noqa: F401
    from clab.models import temporal_roi_align
    from clab.models.temporal_roi_align import TemporalRoIAlign

    if args.cpu_block:
        temporal_roi_align.CPU_POSITION_BLOCK_ELEMENTS = args.cpu_block
    if args.cpu_tile is not None:
        temporal_roi_align.CPU_TABLE_TILE = args.cpu_tile
    if args.cpu_tile_elements:
        temporal_roi_align.CPU_TILE_ELEMENTS = args.cpu_tile_elements
    if args.cpu_embed_block:
        temporal_roi_align.CPU_EMBED_BLOCK_POINTS = args.cpu_embed_block
    if args.cpu_native is not None:
        temporal_roi_align.CPU_NATIVE_SEARCH = bool(args.cpu_native)
    if temporal_roi_align.CPU_NATIVE_SEARCH:
        from clab.models import native
        native.tiled_top()  # build (or load) the kernel and run its check before anything is timed

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=2), out_channels=512,
               featmap_strides=[16], num_most_similar_points=2, num_temporal_attention_blocks=4)
    torch.manual_seed(0)
    ours = TemporalRoIAlign(**cfg, similarity_chunk_elements=args.chunk or None).eval()
    base = load_revision(args.baseline)(**cfg).eval()
    base.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(1)
    h, w = args.map_h, args.map_w
    refs = torch.rand(args.refs, 512, h, w, generator=g)
    key = torch.rand(1, 512, h, w, generator=g)
    wh = 16 + torch.rand(args.rois, 2, generator=g) * 200
    xy = torch.rand(args.rois, 2, generator=g) * (torch.tensor([w * 16.0, h * 16.0]) - wh).clamp(min=1)
    rois = bbox2roi([torch.cat([xy, xy + wh], 1)])

    def frame(extractor, cache):
        roi_feats = extractor((key,), rois)
        key_maps = extractor.prepare_reference_maps(key, with_embed_taps=True)
        # the cached test path's call (the position-first search), where the revision has it
        if "key_maps" in inspect.signature(extractor.aggregate).parameters:
            return extractor.aggregate(roi_feats, [cache, key_maps], rois=rois, key_maps=key_maps)
        return extractor.aggregate(roi_feats, [cache, key_maps])

    with torch.no_grad():
        caches = {name: ex.prepare_reference_maps(refs, with_embed_taps=True) for name, ex in
                  (("ours", ours), ("base", base))}
        times = {"ours": [], "base": []}
        cpu = {"ours": [], "base": []}
        outs = {}
        for r in range(args.repeats):
            for name in (("base", "ours") if r % 2 == 0 else ("ours", "base")):
                ex = ours if name == "ours" else base
                t0, c0 = time.perf_counter(), time.process_time()
                outs[name] = frame(ex, caches[name])
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
            print(f"repeat {r}: base {times['base'][-1]:.2f} s, ours {times['ours'][-1]:.2f} s", file=sys.stderr,
                  flush=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            frame(ours, caches["ours"])
    ranges: dict = {}
    for ev in prof.events():
        if ev.name.startswith("troi."):
            ranges[ev.name] = ranges.get(ev.name, 0.0) + ev.cpu_time_total / 1e6
    tb, to = statistics.median(times["base"]), statistics.median(times["ours"])
    print(f"TRoI part of a cached frame, {args.rois} RoIs, {args.refs}+1 maps of {h}x{w}x512, "
          f"threads {torch.get_num_threads()}, chunk {ours.chunk_elements('cpu')}")
    print(f"baseline {args.baseline}: {tb:.2f} s; this tree: {to:.2f} s; ratio {to / tb:.3f} "
          f"(medians of {args.repeats}; {times})")
    cb, co = statistics.median(cpu["base"]), statistics.median(cpu["ours"])
    print(f"process CPU time: baseline {cb:.2f} s; this tree: {co:.2f} s; ratio {co / cb:.3f}")
    print("this tree, profiled once: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(ranges.items())))
    print(f"max |difference| {float((outs['ours'] - outs['base']).abs().max()):.2e}, "
          f"max |output| {float(outs['base'].abs().max()):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
