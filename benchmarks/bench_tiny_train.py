"""Seconds per training iteration of the two tiny synthetic configs, with a table of where the time goes.

    python benchmarks/bench_tiny_train.py                          # both configs, 1 and 2 threads
    python benchmarks/bench_tiny_train.py --parallel 2 --threads 1 # the demo's setting: 2 trainings at once
    python benchmarks/bench_tiny_train.py --before                 # the tiny configs as they were (BEFORE)
    python benchmarks/bench_tiny_train.py --out results/benchmarks/tiny_train.json

Each measurement is a real ``clab.engine.train.train`` run (the runner, every hook, checkpoints, logs) on the
default synthetic set (24 train videos: 48 iterations per epoch), in a fresh process with ``OMP_NUM_THREADS``
set. It runs ``--warmup`` + ``--iters`` iterations; the time of an iteration is what ``metrics.jsonl``
records (from the end of one iteration to the end of the next: data, forward, backward, optimizer, hooks),
and the stages are timed by wrapping the functions that implement them, each stage counted without the
stages it calls:

    data              dataset __getitem__ (load + decode + pipeline) and collate
    backbone + neck   SELSA.extract_feat (key frames and references)
    RPN               RPNHead.forward_train (head, anchors, loss, key proposals) + reference proposals
    assign + sample   MaxIoUAssigner.assign and RandomSampler.sample (anchors and RoIs)
    RoI align         TemporalRoIAlign.forward without the temporal part
    TRoI              TemporalRoIAlign.aggregate_clips (most-similar search + temporal attention)
    SELSA head        SelsaBBoxHead.forward (shared fcs + SELSA aggregators)
    box targets+loss  SelsaBBoxHead.get_targets + loss
    CAB branch        ContrastiveHead.forward_train
    backward          Tensor.backward
    optimizer         SGD.step + gradient clipping
    hooks             every hook of the iteration (logging, metrics.jsonl, lr, CAB weight, ...)
    other             the rest (scatter, loss parsing, Python)
    per epoch         time outside iterations (mmcv's 2 s epoch-start pause, checkpoint), per iteration
                      of a 48-iteration epoch

``--before`` applies ``BEFORE_OPTIONS``, the settings the tiny configs had before they were tuned for
speed, so the two are measured by the same code on the same machine. The machine may be shared: compare
numbers of one invocation (``--before`` and the default side by side) rather than absolute times.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"baseline": REPO / "configs" / "selsa-troi_faster-rcnn_tiny_synthetic.py",
           "clab": REPO / "configs" / "clab_selsa-troi_faster-rcnn_tiny_synthetic.py"}
#: the tiny configs' settings before the speed-up (applied with --before)
BEFORE_OPTIONS: dict[str, object] = {
    "model.detector.train_cfg.rpn_proposal.nms_pre": 1000,
    "model.detector.train_cfg.rpn_proposal.max_per_img": 300,
    "model.detector.train_cfg.rcnn.sampler.num": 64,
    "model.detector.test_cfg.rpn.nms_pre": 1000,
    "model.detector.test_cfg.rpn.max_per_img": 100,
    "runner.type": "EpochBasedRunner",
}
#: --before also turns these speed-ups off by environment variable
BEFORE_ENV: dict[str, str] = {}
ITERS_PER_EPOCH = 48
STAGES = ["data", "backbone + neck", "RPN", "assign + sample", "RoI align", "TRoI", "SELSA head",
          "box targets + loss", "CAB branch", "backward", "optimizer", "hooks", "other"]


class StageTimer:
    """Exclusive wall time per stage: a wrapped call's time minus the time of wrapped calls inside it."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[float] = []
        self.enabled = False
        self.cpu_start = 0.0

    def wrap(self, owner, attr: str, stage: str) -> None:
        fn = getattr(owner, attr)
        timer = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            timer.stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = timer.stack.pop()
                if timer.enabled:
                    timer.totals[stage] += elapsed - inner
                if timer.stack:
                    timer.stack[-1] += elapsed

        setattr(owner, attr, timed)

    def reset(self) -> None:
        self.totals.clear()


def _instrument(timer: StageTimer, warmup: int, epoch_times: list) -> None:
    """Wrap the stage functions (class attributes, so the model train() builds is timed too)."""
    import torch
    from mmcv.runner import EpochBasedRunner
    from mmcv.runner.hooks import OptimizerHook
    from mmdet.core.bbox.assigners import MaxIoUAssigner
    from mmdet.core.bbox.samplers import RandomSampler
    from mmdet.models.dense_heads import RPNHead

    import clab.engine.loaders as loaders
    from clab.data.coco_video import CocoVideoDataset
    from clab.models.contrastive import ContrastiveHead
    from clab.models.selsa import SELSA
    from clab.models.selsa_bbox_head import SelsaBBoxHead
    from clab.models.temporal_roi_align import TemporalRoIAlign

    timer.wrap(CocoVideoDataset, "__getitem__", "data")
    timer.wrap(loaders, "collate", "data")
    timer.wrap(SELSA, "extract_feat", "backbone + neck")
    timer.wrap(RPNHead, "forward_train", "RPN")
    timer.wrap(RPNHead, "simple_test_rpn", "RPN")
    timer.wrap(MaxIoUAssigner, "assign", "assign + sample")
    timer.wrap(RandomSampler, "sample", "assign + sample")
    timer.wrap(TemporalRoIAlign, "forward", "RoI align")
    timer.wrap(TemporalRoIAlign, "aggregate_clips", "TRoI")
    timer.wrap(SelsaBBoxHead, "forward", "SELSA head")
    timer.wrap(SelsaBBoxHead, "get_targets", "box targets + loss")
    timer.wrap(SelsaBBoxHead, "loss", "box targets + loss")
    timer.wrap(ContrastiveHead, "forward_train", "CAB branch")
    timer.wrap(torch.Tensor, "backward", "backward")
    timer.wrap(torch.optim.SGD, "step", "optimizer")
    timer.wrap(OptimizerHook, "clip_grads", "optimizer")
    call_hook = EpochBasedRunner.call_hook
    timer.wrap(EpochBasedRunner, "call_hook", "hooks")
    iteration_hooks = EpochBasedRunner.call_hook
    EpochBasedRunner.call_hook = lambda self, fn_name: (  # epoch-level hooks (checkpoints) are "per epoch"
        iteration_hooks(self, fn_name) if fn_name.endswith("_iter") else call_hook(self, fn_name))
    timer.wrap(EpochBasedRunner, "run_iter", "other")

    run_iter = EpochBasedRunner.run_iter

    def counted(self, *args, **kwargs):  # timing starts after the warm-up iterations
        timer.enabled = self.iter >= warmup
        if self.iter == warmup:
            timer.cpu_start = time.process_time()
        return run_iter(self, *args, **kwargs)

    EpochBasedRunner.run_iter = counted
    train_epoch = EpochBasedRunner.train

    def timed_epoch(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return train_epoch(self, *args, **kwargs)
        finally:
            epoch_times.append(time.perf_counter() - start)

    EpochBasedRunner.train = timed_epoch


def worker(args) -> dict:
    """One measurement in this process (started by ``main`` with the thread variables set)."""
    import torch
    timer = StageTimer()
    epoch_times: list[float] = []
    _instrument(timer, args.warmup, epoch_times)
    from clab.engine.train import train
    total = args.warmup + args.iters
    epochs = -(-total // ITERS_PER_EPOCH)
    options = {"data_root": f"{args.data}/", "data.workers_per_gpu": 0, "runner.max_epochs": epochs,
               **(BEFORE_OPTIONS if args.before else {})}
    work = Path(args.work)
    # stop after `total` iterations: the last epoch is cut short by a hook-free runner limit
    from mmcv.runner import EpochBasedRunner
    train_epoch = EpochBasedRunner.train

    def limited(self, data_loader, **kwargs):
        class Head:  # the first batches of the loader only
            def __init__(self, loader, n):
                self.loader, self.n = loader, n

            def __len__(self):
                return len(self.loader)

            def __iter__(self):
                for i, batch in enumerate(self.loader):
                    if i >= self.n:
                        return
                    yield batch

            def __getattr__(self, name):
                return getattr(self.loader, name)

        left = total - self.iter
        return train_epoch(self, Head(data_loader, left), **kwargs)

    EpochBasedRunner.train = limited
    t0 = time.perf_counter()
    train(str(CONFIGS[args.config]), str(work), options, seed=0, progress=False)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - timer.cpu_start  # CPU time of this process over the measured iterations
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in records if r["iter"] > args.warmup]
    iter_times = [r["time"] for r in measured]
    n = len(measured)
    stages = {k: timer.totals.get(k, 0.0) / n for k in STAGES}
    # "other" so far is run_iter's own time; add what the iteration time holds beyond the timed stages
    per_iter = statistics.mean(iter_times)
    stages["other"] += max(0.0, per_iter - sum(stages.values()))
    per_epoch = sum(epoch_times) - sum(r["time"] for r in records)
    return {"config": args.config, "threads": torch.get_num_threads(), "before": args.before,
            "iterations": n, "s_per_iter_mean": per_iter, "s_per_iter_median": statistics.median(iter_times),
            "cpu_s_per_iter": cpu / n,
            "stages_s_per_iter": stages, "per_epoch_s": per_epoch / max(1, len(epoch_times)),
            "wall_s": wall, "final_loss": measured[-1].get("loss")}


def _table(rows: list[dict]) -> str:
    head = [f"{r['config']}{' (before)' if r['before'] else ''}, {r['threads']} thr" for r in rows]
    lines = ["| stage (ms/iteration) | " + " | ".join(head) + " |",
             "| --- |" + " ---: |" * len(rows)]
    for stage in STAGES:
        lines.append(f"| {stage} | " + " | ".join(f"{1000 * r['stages_s_per_iter'][stage]:.0f}" for r in rows) + " |")
    lines.append("| **iteration (mean)** | " + " | ".join(f"**{1000 * r['s_per_iter_mean']:.0f}**" for r in rows)
                 + " |")
    lines.append("| CPU time of the process per iteration | " + " | ".join(
        f"{1000 * r['cpu_s_per_iter']:.0f}" for r in rows) + " |")
    lines.append("| per epoch, outside iterations (s) | " + " | ".join(f"{r['per_epoch_s']:.1f}" for r in rows)
                 + " |")
    lines.append(f"| training of {6 * ITERS_PER_EPOCH} iterations, estimated (s) | "
                 + " | ".join(f"{6 * ITERS_PER_EPOCH * r['s_per_iter_mean'] + 6 * r['per_epoch_s']:.0f}"
                              for r in rows) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["baseline", "clab"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--iters", type=int, default=32, help="measured iterations (default 32)")
    parser.add_argument("--warmup", type=int, default=8, help="iterations before measuring (default 8)")
    parser.add_argument("--before", action="store_true", help="measure the settings before the speed-up")
    parser.add_argument("--both", action="store_true", help="measure before and after, side by side")
    parser.add_argument("--parallel", type=int, default=1,
                        help="cores to fill: this many one-thread measurements at once (the demo trains 2 "
                             "models at a time), half as many of 2 threads")
    parser.add_argument("--data", help="synthetic set to use (default: generated in a temporary folder)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args)
        Path(args.result).write_text(json.dumps(result))
        return

    sys.path.insert(0, str(REPO))
    from clab.analysis.jobs import Job, run_jobs
    from clab.data.synthetic import make_synthetic
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(make_synthetic(Path(tmp) / "synthetic", seed=0))
        jobs, order = [], []
        for before in ([True, False] if args.both else [args.before]):
            for threads in args.threads:
                for config in args.configs:
                    name = f"{config}{'-before' if before else ''}-{threads}t"
                    argv = [sys.executable, __file__, "--worker", "--config", config, "--data", data,
                            "--work", f"{tmp}/{name}", "--result", f"{tmp}/{name}.json",
                            "--iters", str(args.iters), "--warmup", str(args.warmup)]
                    if before:
                        argv.append("--before")
                    env = {"PYTHONWARNINGS": "ignore", **(BEFORE_ENV if before else {})}
                    jobs.append((threads, Job(name, argv, f"{tmp}/{name}.log", env=env, cwd=REPO)))
                    order.append(name)
        rows = []
        for threads in sorted({t for t, _ in jobs}):
            batch = [j for t, j in jobs if t == threads]
            # --parallel counts cores: 2 one-thread measurements at a time, or one of 2 threads
            run_jobs(batch, processes=max(1, args.parallel // threads), threads=threads, interval=30)
            rows += [json.loads(Path(f"{tmp}/{j.name}.json").read_text()) for j in batch]
    rows.sort(key=lambda r: order.index(f"{r['config']}{'-before' if r['before'] else ''}-{r['threads']}t"))
    print(f"\n{args.parallel} measurement(s) at a time; {args.warmup} warm-up + {args.iters} measured iterations\n")
    print(_table(rows))
    if args.out:
        sys.path.insert(0, str(REPO))
        from clab.io import atomic_write_json
        atomic_write_json(args.out, {"parallel": args.parallel, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
