"""One-shot check of the GPU path: one run, one JSON (``results/benchmarks/gpu_check_<device>.json``).

Sections (each one is timed and, when it fails, records its error instead of stopping the others):

* ``ops``: mmcv's ``RoIAlign`` and ``nms`` on the device against the same ops on the CPU (max abs difference
  of the pooled features; the kept boxes equal);
* ``train``: the CLAB R-101-DC5 model (random weights, no download) for a few training steps with 2 clips of a
  key frame and 2 references, in fp32 and with mixed precision the way ``clab train --amp`` runs it (mmcv's
  ``wrap_fp16_model`` then autocast in the ``auto_fp16`` forward, dynamic loss scale): seconds per step
  (median after one warm-up step), peak memory, losses finite;
* ``test``: the test path over one clip with 14 references, with the per-video cache and without it (the
  published per-frame path): frames per second of both, and whether their detections are equal;
* ``tiny``: the tiny synthetic config trained and tested end to end through ``clab.engine`` (mAP@50, times);
* ``projection``: wall time of the paper's R-101 recipe on one GPU, global batch 16 by accumulating 8 steps
  of 2 clips over ~49,000 optimizer iterations (SPEC 1.8), from the measured fp32 and amp seconds per step.

On a GPU (``--device cuda``, default sizes 600x1000, 14 references) this takes a few minutes. With
``--device cpu`` the same code runs at smaller sizes (R-50 at 96x160, 2 references, 64 proposals by default
on the CPU) so that it ends in a few minutes on a shared 2-core machine; the JSON says which sizes were used, and its ``projection`` is
then only a statement about this CPU.

Usage::

    python benchmarks/gpu_check.py                       # on a GPU machine
    python benchmarks/gpu_check.py --device cpu          # here
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CLAB_R101 = os.path.join(ROOT, "configs", "clab_selsa-troi_faster-rcnn_r101-dc5_8xb2-7e_imagenetvid.py")
TINY_CLAB = os.path.join(ROOT, "configs", "clab_selsa-troi_faster-rcnn_tiny_synthetic.py")
#: the paper's R-101 recipe: global batch 16 = 8 accumulated steps of 2 clips on one GPU, ~49k iterations
PAPER_ITERATIONS = 49_000
PAPER_ACCUMULATE = 8

GPU_SIZES = dict(height=600, width=1000, refs=14, frames=8, train_steps=4, depth=101, proposals=0)
CPU_SIZES = dict(height=96, width=160, refs=2, frames=3, train_steps=2, depth=50, proposals=64)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="'cuda' (default), 'cuda:N' or 'cpu'")
    p.add_argument("--height", type=int, help="frame height (default 600 on a GPU, 128 on the CPU)")
    p.add_argument("--width", type=int, help="frame width (default 1000 on a GPU, 224 on the CPU)")
    p.add_argument("--refs", type=int, help="test references per video (default 14 on a GPU, 4 on the CPU)")
    p.add_argument("--frames", type=int, help="test frames after frame 0 (default 8 on a GPU, 4 on the CPU)")
    p.add_argument("--train-steps", type=int, help="training steps per precision, the first a warm-up")
    p.add_argument("--depth", type=int, choices=(50, 101), help="ResNet depth (default 101; 50 on the CPU)")
    p.add_argument("--proposals", type=int,
                   help="cap on RPN proposals and sampled RoIs per image (0: the config's 600/300 and 256; "
                        "default 0 on a GPU, 64 on the CPU)")
    p.add_argument("--skip", nargs="*", default=[], choices=["ops", "train", "test", "tiny"],
                   help="sections to leave out")
    p.add_argument("--out", help="JSON path (default results/benchmarks/gpu_check_<device>.json)")
    args = p.parse_args(argv)
    sizes = CPU_SIZES if args.device == "cpu" else GPU_SIZES
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# ------------------------------------------------------------------ helpers
def _sync(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float:
    """Peak CUDA allocation since the last reset on a GPU; the process's peak resident memory on the CPU."""
    import resource

    import torch
    if torch.device(device).type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _padded(args) -> tuple[int, int]:
    return math.ceil(args.height / 16) * 16, math.ceil(args.width / 16) * 16


def _meta(args, frame_id: int) -> dict:
    import numpy as np
    hp, wp = _padded(args)
    return dict(filename=f"clip/{frame_id:06d}.JPEG", ori_shape=(args.height, args.width, 3),
                img_shape=(args.height, args.width, 3), pad_shape=(hp, wp, 3),
                scale_factor=np.ones(4, dtype=np.float32), flip=False, flip_direction=None, frame_id=frame_id,
                video_id=0, is_video_data=True)


def _build(args, cache: bool = True):
    """The CLAB R-101 model of the paper config with random weights (``init_cfg`` off: no download)."""
    import torch
    from mmcv import Config
    from mmdet.models import build_detector

    import clab  # noqa: F401
    cfg = Config.fromfile(CLAB_R101)
    cfg.model.detector.backbone.depth = args.depth
    cfg.model.detector.backbone.init_cfg = None
    cfg.model.test_cfg = dict(cache_ref_proposals=cache)
    if args.proposals:   # the CPU version: fewer proposals and RoIs, same code
        det = cfg.model.detector
        det.train_cfg.rpn_proposal.max_per_img = args.proposals
        det.train_cfg.rcnn.sampler.num = args.proposals
        det.test_cfg.rpn.max_per_img = args.proposals
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    model.init_weights()
    return model


def _section(report: dict, name: str, fn, *a) -> None:
    start = time.perf_counter()
    try:
        report[name] = fn(*a)
        report[name]["ok"] = True
    except Exception as err:  # a one-shot check records what failed and goes on
        report[name] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                        "traceback": traceback.format_exc()[-4000:]}
    report[name]["seconds"] = round(time.perf_counter() - start, 2)
    print(f"[gpu_check] {name}: {'ok' if report[name]['ok'] else report[name]['error']} "
          f"({report[name]['seconds']} s)", flush=True)


# ------------------------------------------------------------------ sections
def check_ops(args) -> dict:
    """mmcv RoIAlign and nms on the device against the CPU."""
    import torch
    from mmcv.ops import RoIAlign, nms
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 256, 38, 63, generator=g)
    xy = torch.rand(300, 2, generator=g) * torch.tensor([900.0, 500.0])
    wh = 8 + torch.rand(300, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + wh], 1)
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=g).float(), boxes], 1)
    op = RoIAlign((7, 7), spatial_scale=1 / 16, sampling_ratio=2, aligned=True)
    ref = op(feats, rois)
    dev = op(feats.to(args.device), rois.to(args.device)).cpu()
    scores = torch.rand(300, generator=g)
    _, keep_cpu = nms(boxes, scores, 0.5)
    _, keep_dev = nms(boxes.to(args.device), scores.to(args.device), 0.5)
    return {"roi_align_max_abs_diff": float((ref - dev).abs().max()), "roi_align_shape": list(ref.shape),
            "nms_kept_cpu": int(keep_cpu.numel()), "nms_same_keep": bool(torch.equal(keep_cpu, keep_dev.cpu())),
            "compared_with_itself": args.device == "cpu"}


def _train_batch(args, device):
    import torch
    g = torch.Generator().manual_seed(1)
    hp, wp = _padded(args)
    n, t, h, w = 2, 2, args.height, args.width
    boxes, labels = [], []
    for _ in range(n):
        xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.tensor([w, h]) * (0.1 + 0.3 * torch.rand(3, 2, generator=g))
        boxes.append(torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], 1).to(device))
        labels.append(torch.randint(0, 30, (3,), generator=g).to(device))
    return dict(img=torch.randn(n, 3, hp, wp, generator=g).to(device),
                img_metas=[_meta(args, 5) for _ in range(n)], gt_bboxes=boxes, gt_labels=labels,
                ref_img=torch.randn(n, t, 3, hp, wp, generator=g).to(device),
                ref_img_metas=[[_meta(args, i) for i in (2, 8)] for _ in range(n)])


def _train_steps(args, amp: bool) -> dict:
    import torch
    from mmcv.runner import wrap_fp16_model
    device = torch.device(args.device)
    model = _build(args).to(device)
    model.train()
    if amp:
        wrap_fp16_model(model)      # what Fp16OptimizerHook.before_run does: fp16_enabled -> autocast forward
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.cuda.amp.GradScaler() if amp else None      # dynamic loss scale
    batch = _train_batch(args, device)
    _reset_peak(device)
    times, cpu_times, losses = [], [], []
    for _ in range(args.train_steps):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss, log_vars = model._parse_losses(model(**batch))
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 35)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 35)
            optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        losses.append(dict(log_vars))
    measured = times[1:] or times
    out = {"s_per_step": round(statistics.median(measured), 4), "step_times_s": [round(x, 4) for x in times],
           "process_cpu_s_per_step": round(statistics.median(cpu_times[1:] or cpu_times), 4),
           "peak_memory_mb": _peak_mb(device), "losses_finite": all(math.isfinite(v) for r in losses
                                                                   for v in r.values()),
           "last_losses": {k: round(v, 5) for k, v in losses[-1].items()}}
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def check_train(args) -> dict:
    out = {"clips": 2, "refs_per_clip": 2, "fp32": _train_steps(args, amp=False)}
    if args.device == "cpu":
        out["amp"] = {"skipped": "mixed precision (--amp) needs a CUDA device"}
    else:
        out["amp"] = _train_steps(args, amp=True)
        out["amp_speedup"] = round(out["fp32"]["s_per_step"] / out["amp"]["s_per_step"], 3)
    return out


def check_test(args) -> dict:
    """One clip: frame 0 with ``refs`` references, then ``frames`` frames; cached and uncached."""
    import numpy as np
    import torch
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(2)
    hp, wp = _padded(args)
    base = torch.randn(1, 3, hp, wp, generator=g)
    frames = [(base + 0.5 * torch.randn(1, 3, hp, wp, generator=g)).to(device) for _ in range(args.frames + 1)]
    refs = (base + 0.5 * torch.randn(args.refs, 3, hp, wp, generator=g))[None].to(device)
    out, dets = {"refs": args.refs, "frames": args.frames + 1}, {}
    for cache in (True, False):
        model = _build(args, cache).to(device).eval()
        _reset_peak(device)
        times, results = [], []
        with torch.no_grad():
            for f, img in enumerate(frames):
                kwargs = dict(ref_img=[refs], ref_img_metas=[[[_meta(args, 0) for _ in range(args.refs)]]]) \
                    if f == 0 else {}
                _sync(device)
                t0 = time.perf_counter()
                res = model(img=[img], img_metas=[[_meta(args, f)]], return_loss=False, rescale=True, **kwargs)
                _sync(device)
                times.append(time.perf_counter() - t0)
                results.append(res["det_bboxes"])
        model.reset_video_memo()
        name = "cached" if cache else "uncached"
        per_frame = statistics.median(times[1:])
        out[name] = {"frame0_s": round(times[0], 4), "per_frame_s": round(per_frame, 4),
                     "frames_per_s": round(1.0 / per_frame, 3), "peak_memory_mb": _peak_mb(device)}
        dets[name] = results
        del model
    equal = all(len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, rtol=1e-3, atol=1e-3)
                                         for x, y in zip(a, b))
                for a, b in zip(dets["cached"], dets["uncached"]))
    out["outputs_equal"] = bool(equal)
    out["speedup_cached"] = round(out["uncached"]["per_frame_s"] / out["cached"]["per_frame_s"], 3)
    return out


def check_tiny(args) -> dict:
    """The tiny synthetic CLAB config trained (1 epoch) and tested through clab.engine on the device."""
    from clab.data.synthetic import make_synthetic
    from clab.engine.config import load_config
    from clab.engine.test import run_test
    from clab.engine.train import train
    device = "cpu" if args.device == "cpu" else args.device.split(":")[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(os.path.join(tmp, "synthetic"), seed=0, train_videos=4, val_videos=2, frames=8)
        options = {"data_root": f"{root}/", "runner.max_epochs": 1, "log_config.interval": 1,
                   "data.workers_per_gpu": 0}
        t0 = time.perf_counter()
        work = train(TINY_CLAB, os.path.join(tmp, "work"), options, device=device, progress=False)
        train_s = time.perf_counter() - t0
        cfg = load_config(TINY_CLAB, {"data_root": f"{root}/", "data.workers_per_gpu": 0})
        t0 = time.perf_counter()
        metrics = run_test(cfg, os.path.join(work, "latest.pth"), os.path.join(tmp, "eval"), device,
                           progress=False)
        test_s = time.perf_counter() - t0
    return {"train_s": round(train_s, 2), "test_s": round(test_s, 2), "bbox_mAP_50": metrics["bbox_mAP_50"],
            "num_frames": metrics["num_frames"], "fps": metrics["fps"]}


def projection(report: dict) -> dict:
    """Hours of the paper's R-101 recipe on one device from the measured seconds per 2-clip step."""
    train = report.get("train") or {}
    out = {"iterations": PAPER_ITERATIONS, "accumulated_steps_per_iteration": PAPER_ACCUMULATE,
           "global_batch": 2 * PAPER_ACCUMULATE, "note": "training steps only: data loading, checkpoints and "
           "the final test are not included"}
    for precision in ("fp32", "amp"):
        step = (train.get(precision) or {}).get("s_per_step")
        if step:
            out[f"{precision}_hours"] = round(PAPER_ITERATIONS * PAPER_ACCUMULATE * step / 3600, 1)
    return out


def main(argv=None) -> int:
    import torch

    import clab  # noqa: F401
    args = parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"[gpu_check] --device {args.device}: no CUDA device is visible; run with --device cpu for the "
              f"CPU version", file=sys.stderr)
        return 2
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device != "cpu" else "cpu"
    tag = "cpu" if args.device == "cpu" else device_name.replace(" ", "_").replace("/", "_")
    out_path = args.out or os.path.join(ROOT, "results", "benchmarks", f"gpu_check_{tag}.json")
    import mmcv
    report = {"device": args.device, "device_name": device_name,
              "gpu_available": torch.cuda.is_available(),
              "sizes": {k: getattr(args, k) for k in GPU_SIZES},
              "sizes_note": ("the paper's sizes (600x1000, 14 references)" if args.device != "cpu" else
                             "R-50 at 96x160, 2 references, 64 proposals instead of the paper's R-101 at "
                             "600x1000, 14 references, 600/300 proposals, so the CPU run ends in minutes; "
                             "CPU numbers say nothing about a GPU"),
              "versions": {"torch": torch.__version__, "mmcv": mmcv.__version__,
                           "cuda": torch.version.cuda, "python": platform.python_version()},
              "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
              "cpu_count": os.cpu_count()}
    for name, fn in (("ops", check_ops), ("train", check_train), ("test", check_test), ("tiny", check_tiny)):
        if name not in args.skip:
            _section(report, name, fn, args)
    report["projection"] = projection(report)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    from clab.io import atomic_write_json
    atomic_write_json(out_path, report)
    print(f"[gpu_check] wrote {out_path}")
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
