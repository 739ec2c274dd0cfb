"""Training the run's models (notebook 01) and reading back what they logged.

One device: ``clab.engine.train.train`` runs inside the calling process (the notebook's kernel). Several GPUs
(``GPUS > 1``): the same command line goes through ``torchrun``
(``python -m torch.distributed.run --standalone --nproc_per_node GPUS -m clab train ... --launcher pytorch``)
and its output is streamed into the notebook. ``LAUNCHER: slurm`` runs it through ``srun`` inside an allocation
and ``NODES`` / ``GPUS_PER_NODE`` spread it over machines (:func:`clab.engine.launch.launch_command`).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .layout import (RunLayout, cfg_options, config_digest, model_checkpoint, model_config, parse_cfg_options,
                     run_seeds, sync_inputs)

__all__ = ["torchrun", "parallel_cpu", "run_clab_jobs", "train_args", "train_model", "train_models",
           "read_training_log", "training_curves", "training_summary", "first_seed_curves"]


def torchrun(args: list[str], gpus: int) -> None:
    """Run ``clab <args>`` in ``gpus`` processes per node through torchrun, printing its output as it comes.

    ``clab reproduce`` passes the run's ``LAUNCHER`` / ``NODES`` / ``GPUS_PER_NODE`` in the environment
    (:func:`clab.engine.launch.launch_from_environment`): ``slurm`` runs the command through ``srun``,
    ``NODES > 1`` spreads it over machines, ``GPUS_PER_NODE`` (when > 0) replaces ``gpus``
    (:func:`clab.engine.launch.run_clab`). Raises ``RuntimeError`` with the last lines of output when a
    process fails.
    """
    from ..engine.launch import launch_from_environment, process_plan, run_clab
    plan = process_plan(gpus, **launch_from_environment())
    launcher, nodes, per_node = plan or ("pytorch", 1, gpus)
    run_clab(args, launcher, nodes, per_node)


def parallel_cpu(params: dict[str, Any]) -> bool:
    """True when the run's work goes to parallel CPU processes: one device (``GPUS == 1``) that is the CPU
    (``DEVICE`` cpu, or auto without CUDA)."""
    if params.get("GPUS", 1) > 1 or params["DEVICE"] == "cuda":
        return False
    if params["DEVICE"] == "cpu":
        return True
    import torch
    return not torch.cuda.is_available()


def run_clab_jobs(params: dict[str, Any], jobs: list[tuple[str, list[str], Path]], progress: bool = True) -> None:
    """Run ``[(name, clab args, log file)]`` as ``python -m clab ...`` processes in parallel on the CPU
    (``CPU_THREADS`` threads each - the kernel's ``OMP_NUM_THREADS`` - 1 when unset; as many at a time as fit the cores). Their progress lines go
    to the notebook and to the runner's terminal; a failed job raises ``JobError`` naming it and its log."""
    from .jobs import clab_job, default_processes, run_jobs
    from .progress import TeeStream

    # CPU_THREADS is applied by the runner to the kernel's environment (notebooks do not declare it)
    threads = params.get("CPU_THREADS") or int(os.environ.get("OMP_NUM_THREADS", "") or 0) or 1
    processes = min(len(jobs), default_processes(threads))
    print(f"{len(jobs)} job(s), {processes} at a time, {threads} thread(s) each", flush=True)
    run_jobs([clab_job(name, args, log) for name, args, log in jobs], processes=processes, threads=threads,
             progress=progress, stream=TeeStream(), interval=15.0)


def _fresh_start(work_dir: Path, resume: bool) -> None:
    """Before a training that starts at iteration 0 (no resume, or nothing to resume from), remove the
    training log an earlier run left, so the new run's curves are its own."""
    if (not resume or not (work_dir / "latest.pth").is_file()) and (work_dir / "metrics.jsonl").exists():
        print(f"{work_dir}: a new training starts; the previous metrics.jsonl is removed", flush=True)
        (work_dir / "metrics.jsonl").unlink()


def train_args(config: str, work_dir: str | Path, options: list[str], *, resume: bool = True, seed: int = 0,
               device: str = "auto") -> list[str]:
    """The ``clab train`` arguments of one training (as :func:`train_model` runs it in another process)."""
    args = ["train", config, "--work-dir", str(work_dir), "--seed", str(seed), "--device", device]
    if options:
        args += ["--cfg-options", *options]
    if resume:
        args += ["--resume", "auto"]
    return args


def train_model(config: str, work_dir: str | Path, options: list[str], *, gpus: int = 1, resume: bool = True,
                seed: int = 0, device: str = "auto", progress: bool = True, label: str = "") -> str:
    """Train ``config`` into ``work_dir`` and return the path of its ``latest.pth``.

    Args:
        config: mmcv config file.
        work_dir: run folder of this model.
        options: ``key=value`` config overrides (as ``clab train --cfg-options``).
        gpus: 1 trains in this process; more trains through torchrun with the ``pytorch`` launcher.
        resume: continue from ``work_dir/latest.pth`` when it exists (a finished training is not repeated);
            False starts over. A training that starts over starts its own ``metrics.jsonl``.
        seed, device, progress: as ``clab train``.
        label: name of the run in progress lines (default: the work dir's name).
    """
    from .progress import watch_training_log

    work_dir = Path(work_dir)
    parsed = parse_cfg_options(options)
    _fresh_start(work_dir, resume)
    if gpus > 1:
        args = train_args(config, work_dir, options, resume=resume, seed=seed, device=device)
        torchrun([*args, "--launcher", "pytorch", "--no-progress"], gpus)
    else:
        from ..engine.config import load_config
        from ..engine.train import train
        max_epochs = load_config(config, parsed).runner.get("max_epochs")
        mmcv_logger = logging.getLogger("mmcv")
        level = mmcv_logger.level
        mmcv_logger.setLevel(logging.WARNING)  # not the initialisation of every parameter into the notebook
        try:
            with watch_training_log(work_dir, label or work_dir.name, max_epochs):
                train(config, str(work_dir), parsed, resume="auto" if resume else None, seed=seed, device=device,
                      progress=progress)
        finally:
            mmcv_logger.setLevel(level)
    latest = work_dir / "latest.pth"
    if not latest.is_file():
        raise RuntimeError(f"training of {config} finished without writing {latest}")
    return str(latest)


def train_models(params: dict[str, Any], layout: RunLayout, progress: bool = True) -> dict[str, dict[int, str]]:
    """Train every model of ``MODELS`` once per training seed (notebook 01); returns
    ``{model: {seed: checkpoint}}``.

    Configs are checked to exist before the first training starts. A work dir trained from another resolved
    config (other config file or ``CFG_OPTIONS``) is emptied first, so ``RESUME`` never continues a
    different training; a finished training is not repeated. On a CPU the runs go to parallel processes
    (see the module docstring). With ``TRAIN`` false nothing is trained and the given checkpoints are returned.
    """
    seeds = run_seeds(params)
    if not params["TRAIN"]:
        print("TRAIN is false: the given checkpoints are evaluated", flush=True)
        return {m: {seeds[0]: model_checkpoint(params, layout, m, seed=seeds[0])} for m in params["MODELS"]}
    configs = {m: model_config(params, m) for m in params["MODELS"]}
    options = cfg_options(params)
    digests = {m: config_digest(c, options) for m, c in configs.items()}
    runs = [(m, s) for m in configs for s in seeds]
    for model, seed in runs:
        work_dir = layout.work_dir(model, seed)
        sync_inputs(work_dir, {"config": configs[model], "resolved_config": digests[model], "seed": seed})
    checkpoints: dict[str, dict[int, str]] = {m: {} for m in configs}
    todo = [(m, s) for m, s in runs if not (params["RESUME"] and _finished(layout.work_dir(m, s)))]
    for model, seed in runs:
        if (model, seed) not in todo:
            print(f"== {model} seed {seed}: trained before, kept ({layout.checkpoint(model, seed)})", flush=True)
    if len(todo) > 1 and parallel_cpu(params):
        jobs = []
        for model, seed in todo:
            work_dir = layout.work_dir(model, seed)
            _fresh_start(work_dir, params["RESUME"])
            jobs.append((f"{model} seed{seed}", train_args(configs[model], work_dir, options,
                                                           resume=params["RESUME"], seed=seed, device="cpu"),
                         work_dir / "train_job.log"))
        run_clab_jobs(params, jobs, progress)
    else:
        for model, seed in todo:
            print(f"== training {model} seed {seed}: {configs[model]}", flush=True)
            train_model(configs[model], layout.work_dir(model, seed), options, gpus=params["GPUS"],
                        resume=params["RESUME"], seed=seed, device=params["DEVICE"], progress=progress,
                        label=f"{model} seed{seed}")
    for model, seed in runs:
        latest = layout.checkpoint(model, seed)
        if not latest.is_file():
            raise RuntimeError(f"training of {model} seed {seed} finished without writing {latest}")
        checkpoints[model][seed] = str(latest)
    return checkpoints


def _finished(work_dir: Path) -> bool:
    """True when ``work_dir/latest.pth`` holds the last epoch of its training (``meta.epoch`` equals
    ``runner.max_epochs`` of the resolved ``config.py`` the training wrote)."""
    latest, config = work_dir / "latest.pth", work_dir / "config.py"
    if not latest.is_file() or not config.is_file():
        return False
    import torch
    try:
        meta = torch.load(latest, map_location="cpu", weights_only=True).get("meta", {})
        from ..engine.config import load_config
        return int(meta.get("epoch", -1)) >= int(load_config(str(config)).runner.max_epochs)
    except Exception:  # noqa: BLE001  (unreadable: train again, which resumes or starts over)
        return False


def read_training_log(work_dir: str | Path) -> pd.DataFrame:
    """``metrics.jsonl`` of a work dir as a DataFrame, one row per iteration (sorted by ``iter``).

    A resumed run logs replayed iterations again; the last record of each iteration is kept. With the CAB
    branch, ``nt_xent = loss_cab / w_cab`` (the unweighted contrastive loss; NaN once the weight is 0).
    """
    path = Path(work_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training log {path}; was the model trained in this run folder?")
    records: dict[int, dict] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {lineno}: not valid json ({err})") from err
        records[int(record["iter"])] = record
    frame = pd.DataFrame([records[k] for k in sorted(records)])
    if "lr" in frame and frame["lr"].map(lambda v: isinstance(v, dict)).any():
        frame["lr"] = frame["lr"].map(lambda v: next(iter(v.values())) if isinstance(v, dict) else v)
    if "loss_cab" in frame and "w_cab" in frame:  # the contrastive task itself, before weighting
        frame["nt_xent"] = (frame["loss_cab"] / frame["w_cab"]).where(frame["w_cab"] > 0)
    return frame


def training_curves(layout: RunLayout, models: list[str], seeds: list[int] | None = None) -> pd.DataFrame:
    """The logs of ``models`` x ``seeds`` (default: the layout's seeds) stacked, with ``model`` and ``seed``
    columns (runs without a log are left out; empty when nothing was trained in this run folder)."""
    frames = []
    for model in models:
        for seed in (layout.seeds if seeds is None else seeds):
            path = layout.root / "work_dirs" / model / f"seed{seed}"
            if (path / "metrics.jsonl").is_file():
                frames.append(read_training_log(path).assign(model=model, seed=int(seed)))
    if not frames:
        return pd.DataFrame(columns=["model", "seed", "iter"])
    return pd.concat(frames, ignore_index=True)


def training_summary(curves: pd.DataFrame, tail: float = 0.1) -> pd.DataFrame:
    """Per model and seed: iterations, mean of each loss over the last ``tail`` fraction of iterations, the
    last ``w_cab``, and seconds per iteration (median). Index ``(model, seed)``."""
    rows = []
    if curves.empty:
        return pd.DataFrame(columns=["model", "seed"]).set_index(["model", "seed"])
    if "seed" not in curves:
        curves = curves.assign(seed=0)
    for (model, seed), frame in curves.groupby(["model", "seed"], sort=False):
        last = frame.tail(max(1, int(round(len(frame) * tail))))
        row: dict[str, Any] = {"model": model, "seed": int(seed), "iterations": int(frame["iter"].max())}
        for key in ("loss", "loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_cab"):
            if key in frame and frame[key].notna().any():
                row[f"{key} (last {int(tail * 100)}%)"] = float(last[key].mean())
        if "w_cab" in frame and frame["w_cab"].notna().any():
            row["final w_cab"] = float(frame["w_cab"].dropna().iloc[-1])
        if "time" in frame:
            row["s/iter"] = float(frame["time"].median())
        rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "seed"])


def first_seed_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first seed of ``curves`` (the training curves figure draws one run per model)."""
    if curves.empty or "seed" not in curves:
        return curves
    return curves[curves["seed"] == curves["seed"].iloc[0]]
