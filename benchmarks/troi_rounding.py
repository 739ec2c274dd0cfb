"""How far the position-first TRoI search's similarities are from the direct ones, on a real detector frame.

Builds the R-50-DC5 TRoI detector with random weights (torch seed 0, as ``bench_detector.py``), runs the
cached test path on frames 0 and 1 of ``bench_detector.py``'s synthetic clip, and takes frame 1's
``TemporalRoIAlign.aggregate`` inputs (300 key RoIs, the cached maps and the key map). On them it reports:

* the largest difference between a position-first similarity (16-tap sum of the key positions'
  similarities, divided by ``||R_p|| + eps``) and the direct one (``R_p_hat @ F_hat``), in units of
  ``sqrt(C) eps (1 + spread)`` (the unit of ``NEAR_TIE_FACTOR``), over all positions and over the top 3,
  on every ``--stride``-th RoI point of every map;
* the quantiles of the gap between the 2nd and the 3rd most similar value in the same unit, and the
  share of (map, point) pairs that would be searched again for several factors;
* the (map, point) pairs whose kept positions differ between ``_search_by_positions`` (as configured) and
  the direct search, one map product at a time (the cached path's re-search), over all points.

Usage::

    python benchmarks/troi_rounding.py --height 608 --width 1008 --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=608)
    p.add_argument("--width", type=int, default=1008)
    p.add_argument("--refs", type=int, default=14)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--stride", type=int, default=5, help="every stride-th RoI point for the value differences")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_detector
    from clab.models import temporal_roi_align
    from clab.models.temporal_roi_align import TemporalRoIAlign

    if args.threads:
        torch.set_num_threads(args.threads)
    bench_args = bench_detector.parse_args(["--height", str(args.height), "--width", str(args.width),
                                            "--refs", str(args.refs), "--frames", "2"])
    model = bench_detector._build(False, True, 50, None).eval()
    frames, refs = bench_detector._test_video(bench_args, torch.Generator().manual_seed(1))
    captured: dict = {}
    plain = TemporalRoIAlign.aggregate

    def capture(self, roi_feats, ref_maps, rois=None, key_maps=None):
        captured.update(extractor=self, roi_feats=roi_feats, ref_maps=list(ref_maps), rois=rois,
                        key_maps=key_maps)
        return plain(self, roi_feats, ref_maps, rois=rois, key_maps=key_maps)

    TemporalRoIAlign.aggregate = capture
    try:
        for f in range(2):
            bench_detector._test_frame(model, bench_args, frames, refs, f)
    finally:
        TemporalRoIAlign.aggregate = plain
    ex, roi_feats, ref_maps = captured["extractor"], captured["roi_feats"], captured["ref_maps"]
    rois, key_maps = captured["rois"], captured["key_maps"]
    n, channels = roi_feats.shape[:2]
    points = n * roi_feats.size(2) * roi_feats.size(3)
    with torch.no_grad():
        taps = ex._roi_taps(rois, key_maps, roi_feats.dtype)
        index, weight = (t.reshape(points, -1) for t in taps)
        used, local = torch.unique(index, return_inverse=True)
        key_rows = key_maps.points[0].index_select(0, used)
        # the search's own unit of NEAR_TIE_FACTOR
        key_points = ex._to_points(roi_feats)
        inv_norm, unit = ex._rounding_unit(key_points, index, weight, key_maps)
        key_hat = key_points * inv_norm[:, None]
        sample = torch.arange(0, points, args.stride)
        worst_all = worst_top = 0.0
        gaps = []
        for maps in ref_maps:
            for k in range(maps.num_maps):
                table = key_rows.mm(maps.normed[k])
                first = F.embedding_bag(local[sample], table, per_sample_weights=weight[sample],
                                        mode="sum") * inv_norm[sample, None]
                direct = key_hat[sample] @ maps.normed[k]
                ratio = (first - direct).abs() / unit[sample, None]
                values, best = first.topk(3, dim=1)
                worst_all = max(worst_all, float(ratio.max()))
                worst_top = max(worst_top, float(ratio.gather(1, best).max()))
                gaps.append((values[:, 1] - values[:, 2]) / unit[sample])
        gaps = torch.cat(gaps)
        found = ex._search_by_positions(roi_feats, taps, key_maps, ref_maps)
        differ = 0
        for maps, (_, rows) in zip(ref_maps, found):
            for k in range(maps.num_maps):
                direct_rows = (key_hat @ maps.normed[k]).topk(ex.num_most_similar_points, dim=1).indices
                differ += int((rows[k].sort(dim=1).values != direct_rows.sort(dim=1).values).any(dim=1).sum())
    pairs = points * sum(m.num_maps for m in ref_maps)
    print(f"{n} RoIs, {sum(m.num_maps for m in ref_maps)} maps of {ref_maps[0].height}x{ref_maps[0].width}"
          f"x{channels}, threads {torch.get_num_threads()}; unit = sqrt(C) eps (1 + spread)")
    print(f"largest |position-first - direct| similarity: {worst_all:.3f} units over all positions, "
          f"{worst_top:.3f} over the top 3 (every {args.stride}th point)")
    qs = torch.tensor([0.001, 0.01, 0.05, 0.1])
    print("gap between the 2nd and 3rd value, quantiles 0.1% / 1% / 5% / 10%: "
          + " / ".join(f"{float(q):.2f}" for q in torch.quantile(gaps, qs)) + " units")
    print("share of pairs searched again with factor 1 / 2 / 4 / 8: "
          + " / ".join(f"{float((gaps <= f).float().mean()):.2%}" for f in (1, 2, 4, 8)))
    print(f"_search_by_positions (NEAR_TIE_FACTOR {temporal_roi_align.NEAR_TIE_FACTOR}): "
          f"{ex.last_search['near_ties']} of {pairs} pairs searched again; {differ} pairs keep other "
          "positions than the direct search")
    return 0


if __name__ == "__main__":
    sys.exit(main())
