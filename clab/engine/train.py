"""``clab train CONFIG``: the paper's optimisation on one CPU/GPU or several GPUs through ``torchrun``.

One process:      ``clab train configs/X.py --work-dir work_dirs/X``
Several GPUs:     ``torchrun --nproc_per_node 8 -m clab train configs/X.py --launcher pytorch``
Several nodes:    ``torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m clab
                  train ...`` on every node, or ``srun ... python -m clab train ... --launcher slurm``
                  (``scripts/slurm_train.sh``)
Other GPU counts: ``--accumulate K`` (gradient accumulation) or ``--auto-scale-lr`` keep the config's recipe
                  (``auto_scale_lr.base_batch_size``; see :mod:`clab.engine.scaling`)
Resume:           ``clab train configs/X.py --work-dir work_dirs/X --resume auto`` (or a checkpoint path)

The work dir receives ``config.py`` (resolved), ``provenance.json`` (git revision, package versions, seed,
command), ``epoch_{n}.pth`` and ``latest.pth`` (atomic), ``metrics.jsonl`` (one line per iteration), mmcv's
text/JSON logs and TensorBoard events.
"""
from __future__ import annotations

import argparse
import os
import random
import time
import warnings

from mmcv.runner import DistSamplerSeedHook, build_optimizer, build_runner, get_dist_info

from .config import DictAction, check_data_paths, load_config
from .launch import LAUNCHERS, init_distributed, resolve_device, setup_multi_processes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="mmcv config file")
    parser.add_argument("--work-dir", help="run folder (default: work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override existing config keys, e.g. runner.max_epochs=1")
    parser.add_argument("--resume", help="checkpoint to resume from, or 'auto' for <work-dir>/latest.pth")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    parser.add_argument("--launcher", choices=list(LAUNCHERS), default="none",
                        help="'pytorch' when started by torchrun, 'slurm' when started by srun "
                             "(NCCL on GPUs, gloo on CPUs)")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision (GPU only): mmcv fp16 with a dynamic loss scale")
    parser.add_argument("--accumulate", type=int, default=1,
                        help="sum the gradients of K iterations per optimizer step (keeps the global batch "
                             "on fewer GPUs)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr linearly with global batch / auto_scale_lr.base_batch_size")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def train(config: str, work_dir: str | None = None, cfg_options: dict | None = None, resume: str | None = None,
          seed: int = 0, deterministic: bool = False, launcher: str = "none", amp: bool = False,
          device: str = "auto", progress: bool = True, accumulate: int = 1, auto_scale_lr: bool = False):
    """Train the model of ``config``; returns the work dir. See the module docstring."""
    import torch
    from mmcv.utils import get_logger
    from mmdet.datasets import build_dataset
    from mmdet.models import build_detector

    import clab  # noqa: F401  (registries)
    from .hooks import (AtomicCheckpointHook, EpochSeedHook, JsonlLoggerHook, NonFiniteLossHook,
                        ProgressBarHook)
    from .provenance import write_run_record
    from .scaling import apply_plan, optimizer_hook, plan_batch

    cfg = load_config(config, cfg_options)          # unknown keys fail here, before anything is built
    check_data_paths(cfg, ("train",))                # so does a missing data root
    device = resolve_device(device)
    if amp and not device.startswith("cuda"):
        raise ValueError("--amp needs a CUDA device")
    setup_multi_processes(cfg)                       # mp start method and OpenCV threads, before any group
    distributed = init_distributed(launcher, device)
    rank, world_size = get_dist_info()
    plan = plan_batch(cfg, world_size, accumulate, auto_scale_lr)
    apply_plan(cfg, plan)
    work_dir = work_dir or cfg.get("work_dir") or os.path.join(
        "work_dirs", os.path.splitext(os.path.basename(config))[0])
    cfg.work_dir = work_dir
    if resume == "auto":
        latest = os.path.join(work_dir, "latest.pth")
        resume = latest if os.path.exists(latest) else None
    elif resume and not os.path.isfile(resume):
        raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
    os.makedirs(work_dir, exist_ok=True)
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    # one logger per run: mmcv sets a logger up only once per name, so a second training in the same process
    # (a notebook kernel) would otherwise keep writing into the first run's log file
    logger = get_logger(f"train:{os.path.abspath(work_dir)}:{timestamp}",
                        log_file=os.path.join(work_dir, f"{timestamp}.log"))
    seed = int(seed)
    if plan.warning and rank == 0:
        warnings.warn(plan.warning)
        logger.warning(plan.warning)
    if rank == 0:
        write_run_record(work_dir, cfg, seed, {"world_size": world_size, "resume": resume, "amp": amp,
                                               "deterministic": deterministic, "accumulate": accumulate,
                                               "global_batch": plan.global_batch, "lr": plan.lr,
                                               "base_batch": plan.base_batch})
    set_random_seed(seed + rank, deterministic)

    datasets = [build_dataset(cfg.data.train)]
    model = build_detector(cfg.model)
    model.init_weights()
    model.CLASSES = datasets[0].CLASSES

    from .loaders import build_train_loader
    from .parallel import wrap_model
    loader = build_train_loader(datasets[0], cfg.data.samples_per_gpu, cfg.data.workers_per_gpu, seed,
                                distributed)
    model = wrap_model(model, device, distributed, cfg.get("find_unused_parameters", False))

    optimizer = build_optimizer(model, cfg.optimizer)
    meta = dict(seed=seed, config=cfg.pretty_text, exp_name=os.path.basename(config),
                CLASSES=list(datasets[0].CLASSES))
    runner = build_runner(cfg.runner, default_args=dict(model=model, optimizer=optimizer, work_dir=work_dir,
                                                        logger=logger, meta=meta))
    runner.timestamp = timestamp
    # fp16 (mmcv wraps the model with wrap_fp16_model in before_run: fp16_enabled on, autocast in the
    # auto_fp16-decorated forward), gradient accumulation, or both
    optimizer_config = optimizer_hook(cfg, accumulate, amp, distributed)
    runner.register_training_hooks(cfg.lr_config, optimizer_config, None, cfg.log_config,
                                   cfg.get("momentum_config"), custom_hooks_config=cfg.get("custom_hooks"))
    runner.register_hook(NonFiniteLossHook(), priority="HIGH")      # before the optimizer step
    runner.register_hook(EpochSeedHook(seed), priority="VERY_HIGH")
    ckpt_cfg = dict(cfg.get("checkpoint_config") or {})
    runner.register_hook(AtomicCheckpointHook(interval=ckpt_cfg.get("interval", 1),
                                              max_keep_ckpts=ckpt_cfg.get("max_keep_ckpts", -1)),
                         priority="NORMAL")
    runner.register_hook(JsonlLoggerHook(), priority="VERY_LOW")
    if progress:
        runner.register_hook(ProgressBarHook(), priority="LOWEST")
    if distributed:
        runner.register_hook(DistSamplerSeedHook())
    if resume:
        runner.resume(resume, map_location="cpu")
        logger.info(f"resumed from {resume} at epoch {runner.epoch}, iteration {runner.iter}")
    runner.run([loader], cfg.workflow)
    if distributed:
        torch.distributed.barrier()
    return work_dir


def run(args) -> int:
    train(args.config, args.work_dir, args.cfg_options, args.resume, args.seed, args.deterministic,
          args.launcher, args.amp, args.device, progress=not args.no_progress, accumulate=args.accumulate,
          auto_scale_lr=args.auto_scale_lr)
    return 0
