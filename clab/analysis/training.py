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
from pathlib import Path
from typing import Any

import pandas as pd

from .layout import (RunLayout, cfg_options, config_digest, model_checkpoint, model_config, parse_cfg_options,
                     sync_inputs)

__all__ = ["torchrun", "train_model", "train_models", "read_training_log", "training_curves",
           "training_summary"]


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


def train_model(config: str, work_dir: str | Path, options: list[str], *, gpus: int = 1, resume: bool = True,
                seed: int = 0, device: str = "auto", progress: bool = True) -> str:
    """Train ``config`` into ``work_dir`` and return the path of its ``latest.pth``.

    Args:
        config: mmcv config file.
        work_dir: run folder of this model.
        options: ``key=value`` config overrides (as ``clab train --cfg-options``).
        gpus: 1 trains in this process; more trains through torchrun with the ``pytorch`` launcher.
        resume: continue from ``work_dir/latest.pth`` when it exists (a finished training is not repeated);
            False starts over (and clears the previous ``metrics.jsonl``).
        seed, device, progress: as ``clab train``.
    """
    work_dir = Path(work_dir)
    parsed = parse_cfg_options(options)
    if not resume and (work_dir / "metrics.jsonl").exists():
        (work_dir / "metrics.jsonl").unlink()
    if gpus > 1:
        args = ["train", config, "--work-dir", str(work_dir), "--launcher", "pytorch", "--seed", str(seed),
                "--device", device, "--no-progress"]
        if options:
            args += ["--cfg-options", *options]
        if resume:
            args += ["--resume", "auto"]
        torchrun(args, gpus)
    else:
        from ..engine.train import train
        mmcv_logger = logging.getLogger("mmcv")
        level = mmcv_logger.level
        mmcv_logger.setLevel(logging.WARNING)  # not the initialisation of every parameter into the notebook
        try:
            train(config, str(work_dir), parsed, resume="auto" if resume else None, seed=seed, device=device,
                  progress=progress)
        finally:
            mmcv_logger.setLevel(level)
    latest = work_dir / "latest.pth"
    if not latest.is_file():
        raise RuntimeError(f"training of {config} finished without writing {latest}")
    return str(latest)


def train_models(params: dict[str, Any], layout: RunLayout, progress: bool = True) -> dict[str, str]:
    """Train every model of ``MODELS`` (notebook 01); returns ``{model: checkpoint}``.

    Configs are checked to exist before the first training starts. A work dir trained from another resolved
    config (other config file, ``CFG_OPTIONS`` or ``SEED``) is emptied first, so ``RESUME`` never continues a
    different training. With ``TRAIN`` false nothing is trained and the given checkpoints are returned.
    """
    if not params["TRAIN"]:
        print("TRAIN is false: the given checkpoints are evaluated", flush=True)
        return {m: model_checkpoint(params, layout, m) for m in params["MODELS"]}
    configs = {m: model_config(params, m) for m in params["MODELS"]}
    options = cfg_options(params)
    checkpoints = {}
    for model, config in configs.items():
        print(f"== training {model}: {config}", flush=True)
        work_dir = layout.work_dir(model)
        sync_inputs(work_dir, {"config": config, "resolved_config": config_digest(config, options),
                               "seed": params["SEED"]})
        checkpoints[model] = train_model(config, work_dir, options, gpus=params["GPUS"], resume=params["RESUME"],
                                         seed=params["SEED"], device=params["DEVICE"], progress=progress)
    return checkpoints


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


def training_curves(layout: RunLayout, models: list[str]) -> pd.DataFrame:
    """The logs of ``models`` stacked, with a ``model`` column (models without a log are left out; empty when
    nothing was trained in this run folder)."""
    frames = []
    for model in models:
        path = layout.root / "work_dirs" / model
        if (path / "metrics.jsonl").is_file():
            frames.append(read_training_log(path).assign(model=model))
    if not frames:
        return pd.DataFrame(columns=["model", "iter"])
    return pd.concat(frames, ignore_index=True)


def training_summary(curves: pd.DataFrame, tail: float = 0.1) -> pd.DataFrame:
    """Per model: iterations, mean of each loss over the last ``tail`` fraction of iterations, the last
    ``w_cab``, and seconds per iteration (median)."""
    rows = []
    if curves.empty:
        return pd.DataFrame(columns=["model"]).set_index("model")
    for model, frame in curves.groupby("model", sort=False):
        last = frame.tail(max(1, int(round(len(frame) * tail))))
        row: dict[str, Any] = {"model": model, "iterations": int(frame["iter"].max())}
        for key in ("loss", "loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_cab"):
            if key in frame and frame[key].notna().any():
                row[f"{key} (last {int(tail * 100)}%)"] = float(last[key].mean())
        if "w_cab" in frame and frame["w_cab"].notna().any():
            row["final w_cab"] = float(frame["w_cab"].dropna().iloc[-1])
        if "time" in frame:
            row["s/iter"] = float(frame["time"].median())
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")
