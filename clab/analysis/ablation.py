"""Notebook 03: one-factor-at-a-time ablations around the CLAB config (paper Section 4.3).

Factors: the CAB loss weight (the schedule's start value), the NT-Xent temperature, the shape of the weight
schedule (constant, linear, cosine, step, exponential), and the backbone stage the branch taps; plus
"branch off", the TRoI baseline. :func:`ablation_config` edits a CLAB config for one factor value;
:func:`ablation_grid` lists the distinct runs of a grid (a value equal to the config's own is the default
CLAB run, trained once). Every run is resumable: a run whose ``eval/metrics.json`` exists is not repeated.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .layout import RunLayout, cfg_options, model_config, sync_inputs
from .results import model_summary, test_model
from .training import train_model

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


def _run_main_model(params: dict, layout: RunLayout, model: str) -> dict:
    """The summary of ``model`` from notebook 02 (``metrics.json``), or an error telling what to run."""
    models = layout.read_metrics().get("models", {})
    if model not in models:
        raise FileNotFoundError(f"ablations need the {model} result of notebooks 01_train and 02_evaluate "
                                f"({layout.metrics_file} has no models.{model}); include {model!r} in MODELS "
                                f"and run them first")
    return models[model]


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
    """Train and test every run of the grid from the ABLATION_* parameters (skipping finished ones) and return
    :func:`ablation_table`. Also writes the rows to ``metrics.json`` under ``"ablations"``.

    With no extra ``ABLATION_CFG_OPTIONS`` (or an empty grid) the default CLAB run and "branch off" are the clab
    and baseline runs of notebooks 01/02 (same config, options and seed); with extra options both are trained
    here too, so every row of the table is trained alike.
    """
    from ..engine.config import load_config

    base = load_config(model_config(params, "clab"))
    grid = grid_from_params(params)
    extra = list(params["ABLATION_CFG_OPTIONS"])
    options = cfg_options(params, extra)
    results: dict[str, dict] = {}
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
    for i, (name, (config_file, cfg)) in enumerate(todo.items(), 1):
        folder = layout.ablation_dir(name)
        resolved = (load_config(config_file) if config_file else cfg).pretty_text
        sync_inputs(folder, {"config": hashlib.sha256(resolved.encode()).hexdigest()[:16], "cfg_options": options,
                             "seed": params["SEED"], "max_test_frames": params["MAX_TEST_FRAMES"]})
        metrics_path = folder / "eval" / "metrics.json"
        if metrics_path.is_file():
            print(f"== ablation {i}/{len(todo)} {name}: finished before, reusing {metrics_path}", flush=True)
            results[name] = model_summary(_load_summary(metrics_path), config_file or str(folder / "config.py"))
            continue
        if config_file is None:
            config_file = str(folder / "config.py")
            cfg.dump(config_file)
        print(f"== ablation {i}/{len(todo)} {name}: training {config_file}", flush=True)
        checkpoint = train_model(config_file, folder / "work_dir", options, gpus=params["GPUS"],
                                 resume=params["RESUME"], seed=params["SEED"], device=params["DEVICE"],
                                 progress=progress)
        metrics = test_model(config_file, checkpoint, folder / "eval", options, gpus=params["GPUS"],
                             device=params["DEVICE"], max_frames=params["MAX_TEST_FRAMES"], progress=progress)
        results[name] = model_summary(metrics, config_file, checkpoint)
    table = ablation_table(grid, results, cab_defaults(base))
    layout.update_metrics("ablations", {"rows": table.reset_index().to_dict(orient="records"),
                                        "runs": results, "cfg_options": extra})
    return table


def ablation_table(grid: list[AblationRun], results: dict[str, dict], defaults: dict[str, Any]) -> pd.DataFrame:
    """Rows: factor, value, run, mAP@50, mAP, mAP@50 slow/medium/fast and the difference to the default CLAB
    run in points of mAP@50 (%); the branch on/off rows first, then the grid in the given order. Each factor
    lists the config's default value too (its row is the default run)."""
    ref = results["clab_default"]["bbox_mAP_50"]
    rows = []

    def add(factor: str, value: Any, name: str, is_default: bool) -> None:
        s = results[name]
        rows.append({"factor": factor, "value": _value_name(value), "run": name, "default": is_default,
                     "mAP@50": s["bbox_mAP_50"], "mAP": s["bbox_mAP"], "mAP@50 slow": s["bbox_mAP_50_slow"],
                     "mAP@50 medium": s["bbox_mAP_50_medium"], "mAP@50 fast": s["bbox_mAP_50_fast"],
                     "vs default (points)": None if s["bbox_mAP_50"] is None or ref is None
                     else 100.0 * (s["bbox_mAP_50"] - ref)})

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
