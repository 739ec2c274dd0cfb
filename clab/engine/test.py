"""``clab test CONFIG CHECKPOINT``: detections for every validation frame in video order, and their metrics.

Frames are processed one at a time in video order, so the detector's per-video reference cache is built
once per video; loader workers (``data.workers_per_gpu``) decode frames ahead, in order. With
``torchrun ... --launcher pytorch`` (or ``srun ... --launcher slurm``) whole videos are split across
processes, every batch goes to the device of its process's model, and the detections are gathered to rank 0,
which alone evaluates and writes.
Writes, into ``--out``: ``coco_results.json`` (COCO detections), ``metrics.json`` (``bbox_mAP_50`` and the
other COCO numbers, AP@50 per class, the slow/medium/fast split, frames per second) and ``provenance.json``.

``clab robustness CONFIG CHECKPOINT --kinds motion_blur defocus_blur --severities 1 3 5`` repeats the test
with each degradation inserted after image loading and writes ``robustness.json`` (mAP@50 per kind and
severity); finished cells are kept, so an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import argparse
import copy
import os
import time

from .config import DictAction, check_data_paths, load_config
from .launch import LAUNCHERS, dist_info, gather_to_rank0, init_distributed, local_device, to_model_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="checkpoint path or URL (mmtracking TRoI checkpoints load too)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    parser.add_argument("--launcher", choices=list(LAUNCHERS), default="none")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames (quick checks)")
    parser.add_argument("--no-progress", action="store_true")


def build_model_for_test(cfg, checkpoint: str | None, device: str, classes):
    """The model of ``cfg`` with ``checkpoint`` loaded, in eval mode on this process's ``device``
    (:func:`clab.engine.launch.local_device`)."""
    from mmdet.models import build_detector

    from ..checkpoint import load_checkpoint
    cfg.model.pop("train_cfg", None)
    model = build_detector(cfg.model)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location="cpu")
    model.CLASSES = classes
    return model.to(local_device(device)).eval()


def infer_frames(model, dataset, indices, device: str | None = None, progress: bool = True,
                 workers: int = 0) -> tuple[dict, float]:
    """Run the model on ``indices`` (whole videos, in order); returns ({index: result}, seconds).

    Every batch goes to the device of ``model``'s parameters (``device`` is accepted for older callers and
    ignored). ``workers`` loader processes decode frames ahead, in order. The model's per-video cache is
    freed at the end.
    """
    import torch
    from tqdm.auto import tqdm

    from .loaders import build_test_loader

    results = {}
    loader = build_test_loader(dataset, indices, workers)
    start = time.perf_counter()
    try:
        for idx, batch in tqdm(zip(indices, loader), total=len(indices), desc="test", unit="frame",
                               disable=not progress, mininterval=1.0):
            batch = to_model_device(batch, model)
            with torch.no_grad():
                results[idx] = model(return_loss=False, rescale=True, **batch)
    finally:
        for name in ("reset_video_memo", "clear_folded"):
            release = getattr(model, name, None)
            if callable(release):
                release()               # the reference cache (~0.8 GB on a GPU at 600x1000) and the folded
                                        # backbone copy go now
    for param in model.parameters():
        if param.device.type == "cuda":
            torch.cuda.synchronize(param.device)
        break
    return results, time.perf_counter() - start


def _gather(results: dict, distributed: bool) -> dict | None:
    """All processes' ``{index: result}`` merged on rank 0; None on the other ranks."""
    if not distributed:
        return results
    parts = gather_to_rank0(results)
    if parts is None:
        return None
    merged = {}
    for part in parts:
        merged.update(part)
    return merged


def evaluate_detections(dataset, det_results: list, matches_file: str | None = None, n_boot: int = 1000) -> dict:
    """Every metric of :func:`clab.evaluation.evaluate.evaluate_entries` (COCO, VID devkit, motion splits,
    bootstrap interval), so that ``clab evaluate`` on ``coco_results.json`` gives the same numbers."""
    from ..evaluation.evaluate import evaluate_dataset
    return evaluate_dataset(dataset, det_results, matches_file=matches_file, n_boot=n_boot)


def run_test(cfg, checkpoint: str | None, out_dir: str, device: str = "auto", launcher: str = "none",
             max_frames: int | None = None, progress: bool = True, write: bool = True) -> dict:
    """Test ``checkpoint`` on ``cfg.data.test``; returns the metrics dict (also written to ``out_dir``)."""
    from mmdet.datasets import build_dataset

    import clab  # noqa: F401
    from ..evaluation.coco_metrics import results_to_coco_json
    from ..io import atomic_write_json
    from .launch import resolve_device, setup_multi_processes
    from .loaders import video_shards
    from .provenance import write_run_record

    device = resolve_device(device)
    check_data_paths(cfg, ("test",))
    setup_multi_processes(cfg)
    # joins the group once; a robustness sweep tests many times in the same processes
    distributed = init_distributed(launcher, device)
    rank, world_size = dist_info() if distributed else (0, 1)
    dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    if max_frames:
        dataset.data_infos = dataset.data_infos[:max_frames]
        dataset.img_ids = dataset.img_ids[:max_frames]
    model = build_model_for_test(cfg, checkpoint, device, dataset.CLASSES)
    indices = video_shards(dataset, world_size)[rank]
    workers = int(cfg.data.get("workers_per_gpu", 0))
    partial, seconds = infer_frames(model, dataset, indices, progress=progress and rank == 0, workers=workers)
    del model
    merged = _gather(partial, distributed)
    if rank != 0:
        return {}
    det_results = [merged[i]["det_bboxes"] if isinstance(merged[i], dict) else merged[i]
                   for i in range(len(dataset))]
    metrics = evaluate_detections(dataset, det_results, os.path.join(out_dir, "matches.npz") if write else None,
                                  n_boot=1000 if write else 0)
    metrics.update(num_frames=len(dataset), fps=round(len(indices) / max(seconds, 1e-9), 3),
                   world_size=world_size, device=device, checkpoint=checkpoint)
    if write:
        os.makedirs(out_dir, exist_ok=True)
        atomic_write_json(os.path.join(out_dir, "coco_results.json"),
                          results_to_coco_json(det_results, dataset.img_ids, dataset.cat_ids))
        atomic_write_json(os.path.join(out_dir, "metrics.json"), metrics)
        write_run_record(out_dir, cfg, None, {"checkpoint": checkpoint})
    return metrics


def insert_degradation(cfg, kind: str, severity: int, seed: int = 0):
    """A copy of ``cfg`` whose test pipeline degrades every frame right after loading it."""
    cfg = copy.deepcopy(cfg)
    pipeline = cfg.data.test.pipeline
    if not pipeline or pipeline[0]["type"] != "LoadMultiImagesFromFile":
        raise ValueError("data.test.pipeline must start with LoadMultiImagesFromFile to insert a degradation")
    # per_video: one set of degradation parameters per video, so the cached references and every frame
    # of a video are degraded alike
    pipeline.insert(1, dict(type="SeqDegrade", kind=kind, severity=severity, seed=seed, per_video=True))
    return cfg


def run(args) -> int:
    cfg = load_config(args.config, args.cfg_options)
    metrics = run_test(cfg, args.checkpoint, args.out, args.device, args.launcher, args.max_frames,
                       not args.no_progress)
    if metrics:
        print(f"bbox_mAP_50 = {metrics['bbox_mAP_50']:.4f}  ({metrics['num_frames']} frames, "
              f"{metrics['fps']:.2f} frames/s)  -> {args.out}")
    return 0
