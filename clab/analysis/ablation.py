"""Notebook 03: one-factor-at-a-time ablations around the CLAB config (paper Section 4.3).

Factors: the CAB loss weight (the schedule's start value), the NT-Xent temperature, the shape of the weight
schedule (constant, linear, cosine, step, exponential), and the backbone stage the branch taps; plus
"branch off", the TRoI baseline. :func:`ablation_config` edits a CLAB config for one factor value;
:func:`ablation_grid` lists the distinct runs of a grid (a value equal to the config's own is the default
CLAB run, trained once). Every run is trained once per training seed (``SEEDS``) and the table gives the mean
over seeds with its 95% Student t interval. Every run is resumable: a run whose ``eval/metrics.json`` exists is
not repeated.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .layout import RunLayout, cfg_options, model_config, run_seeds, sync_inputs
from .results import model_summary, test_args, test_model
from .training import parallel_cpu, run_clab_jobs, train_args, train_model

__all__ = ["FACTORS", "SCHEDULE_SHAPES", "stage_channels", "cab_defaults", "ablation_config", "AblationRun",
           "ablation_grid", "grid_from_params", "plan_table", "run_ablations", "ablation_table"]

FACTORS = ("weight", "temperature", "schedule", "stage")
SCHEDULE_SHAPES = ("constant", "linear", "cosine", "step", "exponential")
_EXPONENTIAL_GAMMA = 0.01  # an exponential schedule falls to 1% of its start over the schedule length


def stage_channels(backbone: dict, stage: int) -> int:
    """Output channels of 0-based stage ``stage`` of an mmdet ResNet/ResNeXt config:
    ``base_channels * 2**stage * expansion`` (expansion 1 for depths 18/34, 4 for Bottleneck ResNets)."""
    from mmdet.models.builder import MODELS

    import mmdet.models  # noqa: F401  (registers the backbones)
    kind = backbone.get("type")
    cls = MODELS.get(kind) if kind else None
    if cls is None or not hasattr(cls, "arch_settings"):
        raise ValueError(f"stage ablation: backbone type {kind!r} is not an mmdet ResNet/ResNeXt")
    depth = backbone.get("depth")
    if depth not in cls.arch_settings:
        raise ValueError(f"stage ablation: {kind} has no depth {depth!r}; expected one of "
                         f"{sorted(cls.arch_settings)}")
    num_stages = backbone.get("num_stages", 4)
    if not 0 <= stage < num_stages:
        raise ValueError(f"stage ablation: stage must be in 0..{num_stages - 1}, got {stage}")
    block = cls.arch_settings[depth][0]
    return int(backbone.get("base_channels", 64) * 2 ** stage * block.expansion)


def _weight_hook(cfg) -> dict | None:
    for hook in cfg.get("custom_hooks", None) or []:
        if hook.get("type") == "CabWeightHook":
            return hook
    return None


def cab_defaults(cfg) -> dict[str, Any]:
    """The config's own value of each factor: ``{'weight', 'temperature', 'schedule', 'stage'}``."""
    aux = cfg.model.get("auxiliary")
    if not aux:
        raise ValueError(f"{cfg.filename}: not a CLAB config (model.auxiliary is not set)")
    hook = _weight_hook(cfg)
    schedule = hook["schedule"] if hook else None
    weight = aux.get("loss_weight", 0.005)
    if schedule is not None:
        weight = schedule.get("start", schedule.get("value", (schedule.get("values") or [weight])[0]))
    return {"weight": float(weight), "temperature": float(aux.get("temperature", 0.1)),
            "schedule": schedule["type"] if schedule else "constant", "stage": int(cfg.model.get("cab_stage", 2))}


def _schedule_of_shape(shape: str, current: dict | None, start: float) -> dict:
    """A schedule config of ``shape`` that starts at ``start`` and keeps the current end, length and unit."""
    if shape not in SCHEDULE_SHAPES:
        raise ValueError(f"schedule ablation: shape must be one of {list(SCHEDULE_SHAPES)}, got {shape!r}")
    current = dict(current or {})
    end = current.get("end", (current.get("values") or [0.0])[-1] if current.get("type") == "step" else 0.0)
    length = current.get("length", (current.get("milestones") or [None])[0] or current.get("period"))
    unit = {"unit": current["unit"]} if "unit" in current else {}
    if length is None:  # the current schedule has no length (constant): half of training, as the tiny configs
        length, unit = 0.5, {"unit": "fraction"}
    if shape == "constant":
        return dict(type="constant", value=start)
    if shape in ("linear", "cosine"):
        return dict(type=shape, start=start, end=end, length=length, **unit)
    if shape == "step":
        return dict(type="step", values=[start, end], milestones=[length], **unit)
    return dict(type="exponential", start=start, gamma=_EXPONENTIAL_GAMMA, period=length, **unit)


def ablation_config(cfg, weight: float | None = None, temperature: float | None = None,
                    schedule: str | None = None, stage: int | None = None):
    """A copy of the CLAB config ``cfg`` (mmcv ``Config``) with one or more factors changed.

    Args:
        weight: initial CAB loss weight: ``auxiliary.loss_weight`` and the schedule's start value.
        temperature: ``auxiliary.temperature`` of NT-Xent.
        schedule: shape of the CabWeightHook schedule (see ``SCHEDULE_SHAPES``), keeping its start, end,
            length and unit (``constant`` keeps the start; ``exponential`` decays to 1% of it over the length).
        stage: backbone stage tapped by the branch (0-based: 1 = C3, 2 = C4, 3 = C5): sets
            ``model.cab_stage``, ``backbone.out_indices = (stage, last)`` (``(last,)`` for the last stage) and
            ``auxiliary.in_channels`` to that stage's width.
    """
    cab_defaults(cfg)  # raises unless cfg is a CLAB config
    cfg = copy.deepcopy(cfg)
    aux = cfg.model.auxiliary
    if stage is not None:
        stage = int(stage)
        backbone = cfg.model.detector.backbone
        last = backbone.get("num_stages", 4) - 1
        aux.in_channels = stage_channels(backbone, stage)
        backbone.out_indices = (stage, last) if stage != last else (last, )
        cfg.model.cab_stage = stage
    if temperature is not None:
        if not float(temperature) > 0:
            raise ValueError(f"temperature ablation: temperature must be > 0, got {temperature!r}")
        aux.temperature = float(temperature)
    hook = _weight_hook(cfg)
    if weight is not None:
        if not float(weight) >= 0:
            raise ValueError(f"weight ablation: weight must be >= 0, got {weight!r}")
        aux.loss_weight = float(weight)
        if hook is not None:
            sched = hook["schedule"]
            if "start" in sched:
                sched["start"] = float(weight)
            elif "value" in sched:
                sched["value"] = float(weight)
            elif "values" in sched:
                sched["values"] = [float(weight), *list(sched["values"])[1:]]
    if schedule is not None:
        new = _schedule_of_shape(schedule, hook["schedule"] if hook else None, cab_defaults(cfg)["weight"])
        if hook is not None:
            hook["schedule"] = new
        else:
            cfg.custom_hooks = [*(cfg.get("custom_hooks", None) or []), dict(type="CabWeightHook", schedule=new)]
    return cfg


def _config_key(cfg) -> str:
    return json.dumps(cfg._cfg_dict.to_dict(), sort_keys=True, default=str)


def _value_name(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


@dataclass
class AblationRun:
    """One row of the grid: ``factor`` set to ``value`` is trained as run ``name`` (shared by equal configs)."""

    factor: str
    value: Any
    name: str
    is_default: bool
    cfg: Any


def ablation_grid(cfg, weights: Iterable[float] = (), temperatures: Iterable[float] = (),
                  schedules: Iterable[str] = (), stages: Iterable[int] = ()) -> list[AblationRun]:
    """The rows of a one-factor-at-a-time grid around ``cfg``. Values that give an identical config share a
    run; a value equal to the config's own gives the run ``clab_default``."""
    base_key = _config_key(cfg)
    names: dict[str, str] = {base_key: "clab_default"}
    rows = []
    for factor, values in (("weight", weights), ("temperature", temperatures), ("schedule", schedules),
                           ("stage", stages)):
        for value in values:
            variant = ablation_config(cfg, **{factor: value})
            key = _config_key(variant)
            name = names.setdefault(key, f"{factor}_{_value_name(value)}")
            rows.append(AblationRun(factor, value, name, key == base_key, variant))
    return rows


def _load_summary(path: Path) -> dict:
    return json.loads(path.read_text())


def _run_main_model(params: dict, layout: RunLayout, model: str) -> dict[int, dict]:
    """``{seed: summary}`` of ``model`` from notebook 02 (``metrics.json``), or an error telling what to run."""
    models = layout.read_metrics().get("models", {})
    seeds = run_seeds(params)
    per_seed = models.get(model, {}).get("seeds", {})
    missing = [s for s in seeds if str(s) not in per_seed]
    if missing:
        raise FileNotFoundError(f"ablations need the {model} results of notebooks 01_train and 02_evaluate for "
                                f"seeds {missing} ({layout.metrics_file} has no models.{model}.seeds entry for "
                                f"them); include {model!r} in MODELS and run them first")
    return {s: per_seed[str(s)] for s in seeds}


def grid_from_params(params: dict[str, Any]) -> list[AblationRun]:
    """The grid of the ABLATION_* parameters around ``CONFIG_CLAB``."""
    from ..engine.config import load_config
    return ablation_grid(load_config(model_config(params, "clab")), params["ABLATION_WEIGHTS"],
                         params["ABLATION_TEMPERATURES"], params["ABLATION_SCHEDULES"], params["ABLATION_STAGES"])


def plan_table(params: dict[str, Any]) -> pd.DataFrame:
    """What :func:`run_ablations` will run: one row per grid value with its run name (equal configs share one)."""
    rows = [{"factor": r.factor, "value": _value_name(r.value), "run": r.name, "default": r.is_default}
            for r in grid_from_params(params)]
    return pd.DataFrame(rows, columns=["factor", "value", "run", "default"])


def run_ablations(params: dict[str, Any], layout: RunLayout, progress: bool = True) -> pd.DataFrame:
    """Train and test every run of the grid from the ABLATION_* parameters, once per training seed (skipping
    finished ones), and return :func:`ablation_table`. Also writes the rows to ``metrics.json`` under
    ``"ablations"``.

    With no extra ``ABLATION_CFG_OPTIONS`` (or an empty grid) the default CLAB run and "branch off" are the clab
    and baseline runs of notebooks 01/02 (same config, options and seeds); with extra options both are trained
    here too, so every row of the table is trained alike. On a CPU the trainings, then the tests, of several
    runs go to parallel processes.
    """
    from ..engine.config import load_config

    base = load_config(model_config(params, "clab"))
    grid = grid_from_params(params)
    seeds = run_seeds(params)
    extra = list(params["ABLATION_CFG_OPTIONS"])
    options = cfg_options(params, extra)
    results: dict[str, dict[int, dict]] = {}
    todo: dict[str, tuple[str | None, Any]] = {}
    if extra and grid:
        todo["branch_off"] = (model_config(params, "baseline"), None)
        todo["clab_default"] = (None, base)
    else:  # the runs of notebooks 01/02 are the reference rows
        results["branch_off"] = _run_main_model(params, layout, "baseline")
        results["clab_default"] = _run_main_model(params, layout, "clab")
    for row in grid:
        if row.name not in results:
            todo.setdefault(row.name, (None, row.cfg))
    pending = []   # (name, seed, config file, folder) still to train and test
    for name, (config_file, cfg) in todo.items():
        resolved = (load_config(config_file) if config_file else cfg).pretty_text
        results[name] = {}
        for seed in seeds:
            folder = layout.ablation_dir(name, seed)
            sync_inputs(folder, {"config": hashlib.sha256(resolved.encode()).hexdigest()[:16],
                                 "cfg_options": options, "seed": seed, "max_test_frames": params["MAX_TEST_FRAMES"]})
            metrics_path = folder / "eval" / "metrics.json"
            run_config = config_file or str(folder / "config.py")
            if metrics_path.is_file():
                print(f"== ablation {name} seed {seed}: finished before, reusing {metrics_path}", flush=True)
                results[name][seed] = model_summary(_load_summary(metrics_path), run_config)
                continue
            if config_file is None:
                cfg.dump(run_config)
            pending.append((name, seed, run_config, folder))
    if len(pending) > 1 and parallel_cpu(params):
        run_clab_jobs(params, [(f"{n} seed{s}", train_args(c, f / "work_dir", options, resume=params["RESUME"],
                                                           seed=s, device="cpu"), f / "train_job.log")
                               for n, s, c, f in pending], progress)
        run_clab_jobs(params, [(f"{n} seed{s}", test_args(c, str(f / "work_dir" / "latest.pth"), f / "eval", options,
                                                          device="cpu", max_frames=params["MAX_TEST_FRAMES"]),
                                f / "test_job.log") for n, s, c, f in pending], progress)
        for name, seed, config, folder in pending:
            results[name][seed] = model_summary(_load_summary(folder / "eval" / "metrics.json"), config,
                                                str(folder / "work_dir" / "latest.pth"))
    else:
        for i, (name, seed, config, folder) in enumerate(pending, 1):
            print(f"== ablation {i}/{len(pending)} {name} seed {seed}: training {config}", flush=True)
            checkpoint = train_model(config, folder / "work_dir", options, gpus=params["GPUS"],
                                     resume=params["RESUME"], seed=seed, device=params["DEVICE"],
                                     progress=progress, label=f"{name} seed{seed}")
            metrics = test_model(config, checkpoint, folder / "eval", options, gpus=params["GPUS"],
                                 device=params["DEVICE"], max_frames=params["MAX_TEST_FRAMES"], progress=progress)
            results[name][seed] = model_summary(metrics, config, checkpoint)
    table = ablation_table(grid, results, cab_defaults(base))
    layout.update_metrics("ablations", {"rows": table.reset_index().to_dict(orient="records"),
                                        "runs": {n: {str(s): v for s, v in r.items()} for n, r in results.items()},
                                        "cfg_options": extra, "seeds": seeds})
    return table


def ablation_table(grid: list[AblationRun], results: dict[str, dict], defaults: dict[str, Any]) -> pd.DataFrame:
    """Rows: factor, value, run, seeds (n), mAP@50 (mean over seeds) with its std and 95% Student t interval
    over seeds, mAP, mAP@50 slow/medium/fast (means), and the difference to the default CLAB run in points of
    mAP@50 (%), paired by seed; the branch on/off rows first, then the grid in the given order. Each factor
    lists the config's default value too (its row is the default run). ``results``: ``{run: {seed:
    summary}}`` (a single summary per run is read as seed 0)."""
    from ..evaluation.stats import seed_summary

    def per_seed(name: str) -> dict:
        r = results[name]
        return {0: r} if "bbox_mAP_50" in r else r

    def values(name: str, key: str) -> dict:
        return {s: v[key] for s, v in per_seed(name).items() if v.get(key) is not None and v[key] >= 0}

    ref = values("clab_default", "bbox_mAP_50")
    rows = []

    def add(factor: str, value: Any, name: str, is_default: bool) -> None:
        m = values(name, "bbox_mAP_50")
        stats = seed_summary(list(m.values())) if m else {}
        paired = [m[s] - ref[s] for s in m if s in ref]

        def mean_of(key: str) -> float | None:
            v = values(name, key)
            return float(sum(v.values()) / len(v)) if v and len(v) == len(per_seed(name)) else None

        rows.append({"factor": factor, "value": _value_name(value), "run": name, "default": is_default,
                     "seeds": len(per_seed(name)), "mAP@50": stats.get("mean"), "mAP@50 std": stats.get("std"),
                     "95% CI low": stats.get("ci_low"), "95% CI high": stats.get("ci_high"),
                     "mAP": mean_of("bbox_mAP"), "mAP@50 slow": mean_of("bbox_mAP_50_slow"),
                     "mAP@50 medium": mean_of("bbox_mAP_50_medium"), "mAP@50 fast": mean_of("bbox_mAP_50_fast"),
                     "vs default (points)": 100.0 * sum(paired) / len(paired) if paired else None})

    add("branch", "off", "branch_off", False)
    add("branch", "on", "clab_default", True)
    for factor in FACTORS:
        rows_f = [r for r in grid if r.factor == factor]
        if not rows_f:
            continue
        if not any(r.is_default for r in rows_f):
            add(factor, defaults[factor], "clab_default", True)
        for r in rows_f:
            add(factor, r.value, r.name, r.is_default)
    return pd.DataFrame(rows)
