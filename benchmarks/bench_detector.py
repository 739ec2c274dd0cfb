"""Benchmark of the SELSA + TRoI detector with and without the CLAB branch (random weights, CPU or GPU).

Measures, each case in a fresh subprocess so that its peak memory is its own:

* ``test_troi_{cached,uncached}``: test latency of the TRoI model (``test_with_adaptive_stride``: K references
  at frame 0, then one frame at a time), with the per-video reference cache (``cache_ref_proposals=True``)
  and without it (the published per-frame path); frame 0 (which builds the cache) is reported apart;
* ``pair_{cached,uncached}``: the CLAB model and the TRoI model with the same detector weights, run frame
  by frame in turn in one process, so that both see the same load on the machine: their latency ratio
  and whether their detections are identical;
* ``train_{troi,clab}``: one training step (forward, backward, SGD step) on 2 clips of a key frame and 2
  references, with and without the branch (the first of ``--train-iters`` steps is a warm-up);
* the peak resident memory of each case (``VmHWM``; on a GPU also the peak CUDA allocation);
* with both ``test_troi_cached`` and ``test_troi_uncached``: the largest box (px) and score difference of the
  cached path's detections from the uncached path's (same frames, same weights), row by row and after
  matching each detection to the nearest box (``compare_detections.py`` does the same for two runs); with
  ``--uncached-unfolded`` the uncached cases run without the test-time batch-norm fold, so the difference
  also includes the fold's.

Latencies are medians (wall clock and process CPU time). On a loaded machine the CPU-time columns,
especially with ``--threads 1``, are the stable ones.

Usage::

    python benchmarks/bench_detector.py --height 600 --width 1000 --refs 14 --frames 3 --depth 50 \
        --out results/bench_detector.json

    # the paper's padded test size, test cases only: cached per-frame and frame-0 time, uncached time, peak
    # memory and the cached-vs-uncached detection difference in one run
    python benchmarks/bench_detector.py --height 608 --width 1008 --cases test_troi_cached,test_troi_uncached

This is a measurement script, not a test. The CLAB/TRoI ratio of the test latency must be 1.00 within
noise: the branch does not run at test time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {False: "selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py",
           True: "clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py"}
#: TRoI alone (frame-0 time, latency, memory), then CLAB and TRoI frame by frame in one process (ratio)
TEST_CASES = ["test_troi_cached", "test_troi_uncached", "pair_cached", "pair_uncached"]
#: CLAB alone at test time: its own memory and unpaired latency (--separate-clab)
CLAB_TEST_CASES = ["test_clab_cached", "test_clab_uncached"]
TRAIN_CASES = ["train_troi", "train_clab"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=600, help="frame height in pixels (padded to /16)")
    p.add_argument("--width", type=int, default=1000, help="frame width in pixels (padded to /16)")
    p.add_argument("--refs", type=int, default=14, help="reference frames per video at test time")
    p.add_argument("--frames", type=int, default=3, help="frames per test video (latency: frames 1..)")
    p.add_argument("--depth", type=int, default=50, choices=(50, 101), help="ResNet depth")
    p.add_argument("--train-iters", type=int, default=2, help="training steps per case (first is warm-up)")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads per case (0: torch's default); 1 makes the CPU-time columns "
                        "robust to other load on the machine")
    p.add_argument("--skip-train", action="store_true", help="only the test-latency cases")
    p.add_argument("--skip-test", action="store_true", help="only the training cases")
    p.add_argument("--separate-clab", action="store_true",
                   help="also run the CLAB model alone at test time (its own peak memory)")
    p.add_argument("--cases", help="comma-separated cases to run instead of the default set, from: "
                                   + ", ".join(TEST_CASES + CLAB_TEST_CASES + TRAIN_CASES))
    p.add_argument("--uncached-unfolded", action="store_true",
                   help="run the uncached cases without the test-time batch-norm fold (test_cfg.fold_batchnorm), "
                        "so that the cached-vs-uncached difference includes the fold's")
    p.add_argument("--out", help="write the results as JSON to this path")
    p.add_argument("--case", help=argparse.SUPPRESS)          # internal: run one case in this process
    p.add_argument("--weights", help=argparse.SUPPRESS)       # internal: detector weights shared by cases
    args = p.parse_args(argv)
    for name in ("height", "width", "refs", "frames", "train_iters"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.frames < 2:
        p.error("--frames must be >= 2 (frame 0 builds the reference cache; latency is measured after it)")
    return args


# ------------------------------------------------------------------------------------------ one case
def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build(branch: bool, cache: bool, depth: int, weights: str | None, fold: bool = True):
    import torch
    from mmcv import Config
    from mmdet.models import build_detector

    import clab  # noqa: F401

    cfg = Config.fromfile(os.path.join(ROOT, "configs", CONFIGS[branch]))
    model_cfg = cfg.model
    model_cfg.detector.backbone.depth = depth
    model_cfg.detector.backbone.init_cfg = None
    model_cfg.test_cfg = dict(cache_ref_proposals=cache)
    if not fold:  # (named only when off: bench_pairs runs this script on revisions without the key)
        model_cfg.test_cfg["fold_batchnorm"] = False
    torch.manual_seed(0)
    model = build_detector(model_cfg)
    model.init_weights()
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        result = model.load_state_dict(state, strict=False)
        assert not result.unexpected_keys and all(k.startswith("auxiliary.") for k in result.missing_keys)
        del state
    return model


def _meta(h: int, w: int, hp: int, wp: int, frame_id: int) -> dict:
    import numpy as np
    return dict(filename=f"{frame_id:06d}.JPEG", ori_shape=(h, w, 3), img_shape=(h, w, 3),
                pad_shape=(hp, wp, 3), scale_factor=np.ones(4, dtype=np.float32), flip=False,
                flip_direction=None, frame_id=frame_id)


def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _test_video(args, g):
    """Frames (each Tensor[1, 3, Hp, Wp]) and the K references (Tensor[1, K, 3, Hp, Wp]) of one video."""
    import torch
    hp, wp = _padded(args)
    base = torch.randn(1, 3, hp, wp, generator=g)
    frames = [(base + 0.5 * torch.randn(1, 3, hp, wp, generator=g)).to(args.device) for _ in range(args.frames)]
    refs = (base + 0.5 * torch.randn(args.refs, 3, hp, wp, generator=g))[None].to(args.device)
    return frames, refs


def _padded(args) -> tuple[int, int]:
    return math.ceil(args.height / 16) * 16, math.ceil(args.width / 16) * 16


def _test_frame(model, args, frames, refs, f: int):
    """Run frame ``f`` (frame 0 with its references); returns (wall s, CPU s, detections)."""
    import torch
    h, w = args.height, args.width
    hp, wp = _padded(args)
    kwargs = {}
    if f == 0:
        kwargs = dict(ref_img=[refs], ref_img_metas=[[[_meta(h, w, hp, wp, i) for i in range(args.refs)]]])
    _sync(args.device)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        res = model(img=[frames[f]], img_metas=[[_meta(h, w, hp, wp, f)]], return_loss=False, rescale=True,
                    **kwargs)
    _sync(args.device)
    return time.perf_counter() - t0, time.process_time() - c0, res["det_bboxes"]


def _summary(times: list[float], cpu_times: list[float]) -> dict:
    return dict(frame0_s=times[0], per_frame_s=statistics.median(times[1:]), per_frame_min_s=min(times[1:]),
                per_frame_cpu_s=statistics.median(cpu_times[1:]), frame_times_s=times,
                frame_cpu_times_s=cpu_times)


def run_case(args) -> dict:
    """One case in this process: ``test_<troi|clab>_<cached|uncached>``, ``pair_<cached|uncached>``
    (both models with the same detector weights, frame by frame in turn) or ``train_<troi|clab>``."""
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    kind, who = args.case.split("_", 1)
    g = torch.Generator().manual_seed(1)
    out: dict = dict(case=args.case)

    if kind == "test":
        branch, cache = who.split("_")
        fold = not (cache == "uncached" and args.uncached_unfolded)
        model = _build(branch == "clab", cache == "cached", args.depth, args.weights, fold).to(args.device).eval()
        out["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        frames, refs = _test_video(args, g)
        runs = [_test_frame(model, args, frames, refs, f) for f in range(args.frames)]
        out.update(_summary([r[0] for r in runs], [r[1] for r in runs]),
                   detections=[int(sum(len(d) for d in r[2])) for r in runs],
                   boxes=[[d.tolist() for d in r[2]] for r in runs])
    elif kind == "pair":
        cache = who == "cached"
        models = {name: _build(name == "clab", cache, args.depth, args.weights).to(args.device).eval()
                  for name in ("troi", "clab")}
        frames, refs = _test_video(args, g)
        runs: dict = {name: [] for name in models}
        identical = True
        for f in range(args.frames):
            order = ("troi", "clab") if f % 2 == 0 else ("clab", "troi")   # alternate who goes first
            for name in order:
                runs[name].append(_test_frame(models[name], args, frames, refs, f))
            a, b = runs["troi"][-1][2], runs["clab"][-1][2]
            identical &= all(np.array_equal(x, y) for x, y in zip(a, b))
        for name, rs in runs.items():
            out[name] = _summary([r[0] for r in rs], [r[1] for r in rs])
        out.update(identical_detections=bool(identical),
                   ratio_median=out["clab"]["per_frame_s"] / out["troi"]["per_frame_s"],
                   ratio_cpu=out["clab"]["per_frame_cpu_s"] / out["troi"]["per_frame_cpu_s"])
    else:
        model = _build(who == "clab", True, args.depth, args.weights).to(args.device)
        out["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        model.train()
        h, w = args.height, args.width
        hp, wp = _padded(args)
        device = args.device
        n, t = 2, 2
        boxes, labels = [], []
        for _ in range(n):
            xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = torch.tensor([w, h]) * (0.1 + 0.3 * torch.rand(3, 2, generator=g))
            boxes.append(torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], 1).to(device))
            labels.append(torch.randint(0, 30, (3,), generator=g).to(device))
        batch = dict(img=torch.randn(n, 3, hp, wp, generator=g).to(device),
                     img_metas=[_meta(h, w, hp, wp, 5) for _ in range(n)], gt_bboxes=boxes, gt_labels=labels,
                     ref_img=torch.randn(n, t, 3, hp, wp, generator=g).to(device),
                     ref_img_metas=[[_meta(h, w, hp, wp, i) for i in (2, 8)] for _ in range(n)])
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        times, cpu_times = [], []
        for _ in range(args.train_iters):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            losses = model(**batch)
            loss, log_vars = model._parse_losses(losses)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            _sync(device)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        measured = times[1:] or times
        out.update(step_s=statistics.median(measured), step_cpu_s=statistics.median(cpu_times[1:] or cpu_times),
                   step_times_s=times, losses=dict(log_vars))
    out["peak_rss_mb"] = _peak_rss_mb()
    if args.device.startswith("cuda"):
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


# ------------------------------------------------------------------------------------------ driver
def _save_shared_weights(args, path: str) -> None:
    """Detector weights of a randomly initialised baseline, shared by every case."""
    import torch
    model = _build(False, True, args.depth, None)
    torch.save(model.state_dict(), path)


def _run_subprocess(args, name: str, weights: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--case", name, "--weights", weights,
           "--height", str(args.height), "--width", str(args.width), "--refs", str(args.refs),
           "--frames", str(args.frames), "--depth", str(args.depth), "--train-iters", str(args.train_iters),
           "--device", args.device, "--threads", str(args.threads)] + (
               ["--uncached-unfolded"] if args.uncached_unfolded else [])
    print(f"running {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"case {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["case_wall_s"] = time.perf_counter() - start
    shown = {k: round(v, 3) for k, v in result.items() if isinstance(v, float)}
    print(f"  {name}: {shown}", file=sys.stderr, flush=True)
    return result


def detection_difference(boxes_a: list, boxes_b: list) -> dict:
    """How two runs' detections differ: ``boxes_*`` are per frame, per class, lists of (x1, y1, x2, y2, score).

    Over the (frame, class) cells whose detection counts agree: the largest box (px) and score difference
    row by row (``in_order_*``), and after matching each detection of ``a`` to the nearest box of ``b``
    (largest coordinate difference; ``matched_*``), with how many detections matched another row than
    their own (``reordered``: scores that tie within rounding can come in another order, which the row-by-row
    figures show as a jump of a whole box); and how many cells' counts differ.
    """
    import numpy as np
    out = dict(in_order_box=0.0, in_order_score=0.0, matched_box=0.0, matched_score=0.0, reordered=0,
               count_differs=0, detections=0)
    for frame_a, frame_b in zip(boxes_a, boxes_b):
        for a, b in zip(frame_a, frame_b):
            a, b = np.asarray(a, dtype=np.float64).reshape(-1, 5), np.asarray(b, dtype=np.float64).reshape(-1, 5)
            if a.shape != b.shape:
                out["count_differs"] += 1
                continue
            if not len(a):
                continue
            out["detections"] += len(a)
            out["in_order_box"] = max(out["in_order_box"], float(np.abs(a[:, :4] - b[:, :4]).max()))
            out["in_order_score"] = max(out["in_order_score"], float(np.abs(a[:, 4] - b[:, 4]).max()))
            dist = np.abs(a[:, None, :4] - b[None, :, :4]).max(axis=2)  # (n, n)
            match = dist.argmin(axis=1)
            out["matched_box"] = max(out["matched_box"], float(dist.min(axis=1).max()))
            out["matched_score"] = max(out["matched_score"], float(np.abs(a[:, 4] - b[match, 4]).max()))
            out["reordered"] += int((match != np.arange(len(a))).sum())
    return out


def _detection_difference(cached: dict, uncached: dict, who: str) -> dict:
    """:func:`detection_difference` of the cached path's detections from the uncached path's, labelled."""
    d = detection_difference(cached["boxes"], uncached["boxes"])
    return {f"max box difference px, cached vs uncached, {who}": d["in_order_box"],
            f"max score difference, cached vs uncached, {who}": d["in_order_score"],
            f"max box difference px after matching nearest boxes, cached vs uncached, {who}": d["matched_box"],
            f"max score difference after matching, cached vs uncached, {who}": d["matched_score"],
            f"detections matched to another row (reordered ties), cached vs uncached, {who}": d["reordered"],
            f"(frame, class) detection counts that differ, cached vs uncached, {who}": d["count_differs"]}


def _table(results: dict, args) -> str:
    rows = [f"SELSA+TRoI R-{args.depth}-DC5, {args.height}x{args.width}, {args.refs} refs, "
            f"{args.frames} frames, device {args.device}, torch threads {args.threads}"]
    cols = [("frame 0 s", "frame0_s"), ("per frame s", "per_frame_s"), ("min frame s", "per_frame_min_s"),
            ("frame CPU s", "per_frame_cpu_s"), ("train step s", "step_s"), ("step CPU s", "step_cpu_s"),
            ("peak RSS MB", "peak_rss_mb")]
    rows.append(f"{'case':<24}" + "".join(f"{title:>14}" for title, _ in cols))
    for name, r in results["cases"].items():
        parts = [(name, r)] if not name.startswith("pair_") else \
            [(f"{name}:{who}", dict(r[who], peak_rss_mb=r["peak_rss_mb"])) for who in ("troi", "clab")]
        for label, values in parts:
            rows.append(f"{label:<24}" + "".join(f"{values[key]:>14.2f}" if key in values else f"{'-':>14}"
                                               for _, key in cols))
    for key, value in results["ratios"].items():
        if isinstance(value, float):
            rows.append(f"{key}: {value:.3f}" if abs(value) >= 0.01 or value == 0 else f"{key}: {value:.2e}")
        else:
            rows.append(f"{key}: {value}")
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return 0
    import torch

    from clab.io import atomic_write_json
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    cases = ([] if args.skip_test else TEST_CASES + (CLAB_TEST_CASES if args.separate_clab else [])) \
        + ([] if args.skip_train else TRAIN_CASES)
    if args.cases:
        cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = sorted(set(cases) - set(TEST_CASES + CLAB_TEST_CASES + TRAIN_CASES))
        if unknown:
            raise SystemExit(f"--cases: unknown case(s) {unknown}")
    results: dict = dict(settings=dict(height=args.height, width=args.width, refs=args.refs, frames=args.frames,
                                       depth=args.depth, train_iters=args.train_iters, device=args.device,
                                       torch_threads=args.threads, torch=torch.__version__),
                         cases={}, ratios={})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.pth")
        _save_shared_weights(args, weights)
        for name in cases:
            results["cases"][name] = _run_subprocess(args, name, weights)
            if args.out:  # partial results survive an interrupted run
                atomic_write_json(args.out, results, indent=2)
    c = results["cases"]
    r = results["ratios"]
    for cache in ("cached", "uncached"):
        if f"pair_{cache}" in c:
            pair = c[f"pair_{cache}"]
            r[f"test per frame, CLAB / TRoI, {cache} (median wall)"] = pair["ratio_median"]
            r[f"test per frame, CLAB / TRoI, {cache} (median CPU)"] = pair["ratio_cpu"]
            r[f"identical detections, CLAB vs TRoI, {cache}"] = pair["identical_detections"]
    if "test_troi_cached" in c and "test_troi_uncached" in c:
        for key, label in (("per_frame_s", "median wall"), ("per_frame_cpu_s", "median CPU")):
            r[f"test per frame, cached / uncached, TRoI ({label})"] = \
                c["test_troi_cached"][key] / c["test_troi_uncached"][key]
    for who in ("troi", "clab"):
        if f"test_{who}_cached" in c and f"test_{who}_uncached" in c:
            r.update(_detection_difference(c[f"test_{who}_cached"], c[f"test_{who}_uncached"], who.upper()))
    if "train_clab" in c and "train_troi" in c:
        r["train step, CLAB / TRoI (median wall)"] = c["train_clab"]["step_s"] / c["train_troi"]["step_s"]
        r["train step, CLAB / TRoI (median CPU)"] = c["train_clab"]["step_cpu_s"] / c["train_troi"]["step_cpu_s"]
    results["wall_s"] = time.perf_counter() - start
    print(_table(results, args))
    print(f"total wall time {results['wall_s']:.0f} s")
    if args.out:
        atomic_write_json(args.out, results, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
