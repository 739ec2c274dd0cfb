"""Notebook 05: mAP@50 against degradation severity for each model and training seed
(``clab.engine.robustness``), and frames degraded the same way with each model's detections drawn on them.

Each run's sweep is kept in ``robustness/<model>/seed<s>/robustness.json`` (``{"clean": m, kind: {severity:
m}}``); finished cells are not recomputed when the notebook runs again. The degradations use ``SEED`` for
every model and training seed, so every run sees the same degraded frames and the CLAB - baseline difference
of each cell is paired by seed (:func:`wide_table`: its mean and 95% Student t interval over seeds).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .layout import (RunLayout, cfg_options, checkpoint_stamp, config_digest, model_checkpoint, model_config,
                     parse_cfg_options, run_seeds, sync_inputs)

__all__ = ["degradation_kinds", "run_sweeps", "robustness_table", "wide_table", "robustness_sentence",
           "degraded_detections"]


def degradation_kinds(params: dict[str, Any]) -> list[str]:
    """``ROBUSTNESS_KINDS``, or every degradation when it is empty."""
    from ..data.degradations import DEGRADATIONS
    return list(params["ROBUSTNESS_KINDS"]) or list(DEGRADATIONS)


def _frames(params: dict[str, Any]) -> int | None:
    return params["ROBUSTNESS_FRAMES"] or params["MAX_TEST_FRAMES"] or None


def run_sweeps(params: dict[str, Any], layout: RunLayout, progress: bool = True) -> dict[str, dict[int, dict]]:
    """``{model: {seed: robustness table}}`` for every model of ``MODELS`` and training seed (also in the
    merged ``metrics.json`` under ``"robustness"``). Several runs on a CPU go to parallel processes
    (``clab robustness``)."""
    from ..engine.config import load_config
    from ..engine.robustness import run_robustness
    from .training import parallel_cpu, run_clab_jobs

    items = cfg_options(params)
    options = parse_cfg_options(items)
    seeds = run_seeds(params)
    checkpoints = {(m, s): model_checkpoint(params, layout, m, seed=s) for m in params["MODELS"] for s in seeds}
    kinds = degradation_kinds(params)
    severities = [int(v) for v in params["ROBUSTNESS_SEVERITIES"]]
    print(f"== robustness: {len(kinds)} degradations x {len(severities)} severities, models {params['MODELS']}, "
          f"seeds {seeds}", flush=True)
    configs = {m: model_config(params, m) for m in params["MODELS"]}
    digests = {m: config_digest(c, items) for m, c in configs.items()}
    for (model, seed), checkpoint in checkpoints.items():
        # cells kept from an earlier sweep are reused only if they tested the same checkpoint the same way
        sync_inputs(layout.robustness_dir(model, seed), {"config": digests[model], "checkpoint": checkpoint_stamp(
            checkpoint), "frames": _frames(params), "seed": params["SEED"], "kinds": kinds,
            "severities": severities})
    runs = list(checkpoints)
    if len(runs) > 1 and parallel_cpu(params):
        jobs = []
        for model, seed in runs:
            folder = layout.robustness_dir(model, seed)
            args = ["robustness", configs[model], checkpoints[model, seed], "--out", str(folder), "--kinds", *kinds,
                    "--severities", *map(str, severities), "--seed", str(params["SEED"]), "--device", "cpu"]
            if _frames(params):
                args += ["--max-frames", str(_frames(params))]
            if items:
                args += ["--cfg-options", *items]
            jobs.append((f"{model} seed{seed}", args, folder / "robustness_job.log"))
        run_clab_jobs(params, jobs, progress)
        import json
        found = {r: json.loads((layout.robustness_dir(*r) / "robustness.json").read_text()) for r in runs}
    else:
        found = {}
        for model, seed in runs:
            cfg = load_config(configs[model], options)
            found[model, seed] = run_robustness(cfg, checkpoints[model, seed], str(layout.robustness_dir(model, seed)),
                                                kinds, severities, params["SEED"], params["DEVICE"], _frames(params),
                                                progress)
    tables = {m: {s: found[m, s] for s in seeds} for m in params["MODELS"]}
    layout.update_metrics("robustness", {m: {str(s): t for s, t in v.items()} for m, v in tables.items()})
    return tables


def robustness_table(tables: dict[str, dict], kinds: list[str], severities: list[int]) -> pd.DataFrame:
    """Long table: ``degradation``, ``severity`` (0 = clean, repeated for every degradation so each curve
    starts at the clean value), ``model``, ``seed``, ``mAP@50``. ``tables``: ``{model: {seed: sweep}}`` (a
    single sweep per model is read as seed 0)."""
    rows = []
    for model, per_seed in tables.items():
        if "clean" in per_seed:
            per_seed = {0: per_seed}
        for seed, table in per_seed.items():
            for kind in kinds:
                rows.append({"degradation": kind, "severity": 0, "model": model, "seed": int(seed),
                             "mAP@50": table["clean"]})
                for s in severities:
                    rows.append({"degradation": kind, "severity": int(s), "model": model, "seed": int(seed),
                                 "mAP@50": table.get(kind, {}).get(str(s), np.nan)})
    return pd.DataFrame(rows)


def wide_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rows (degradation, severity), columns: each model's mAP@50 (mean over seeds) and, with both models,
    ``CLAB - baseline (points)``: the difference paired by seed (points of mAP@50, %), its 95% Student t
    interval over seeds (``CI low``, ``CI high``; none with one seed) and ``n`` seeds. The clean value
    appears once, as degradation ``none``, severity 0."""
    from ..evaluation.stats import paired_seed_difference

    if "seed" not in table:
        table = table.assign(seed=0)
    clean = table[table["severity"] == 0].drop_duplicates(subset=["model", "seed"]).assign(degradation="none")
    rows = pd.concat([clean, table[table["severity"] > 0]], ignore_index=True)
    wide = rows.pivot_table(index=["degradation", "severity"], columns="model", values="mAP@50", sort=False,
                            aggfunc="mean")
    wide.columns.name = None
    if "baseline" in wide and "clab" in wide:
        diffs = []
        for (kind, severity), cell in rows.groupby(["degradation", "severity"], sort=False):
            by_model = {m: dict(zip(g["seed"], g["mAP@50"])) for m, g in cell.groupby("model")}
            a = {k: v for k, v in by_model.get("baseline", {}).items() if v == v}
            b = {k: v for k, v in by_model.get("clab", {}).items() if v == v}
            d = paired_seed_difference(a, b) if set(a) & set(b) else None
            diffs.append({"degradation": kind, "severity": severity,
                          "CLAB - baseline (points)": 100.0 * d["mean"] if d else np.nan,
                          "CI low": 100.0 * d["ci_low"] if d else np.nan,
                          "CI high": 100.0 * d["ci_high"] if d else np.nan, "n": d["n"] if d else 0})
        wide = wide.join(pd.DataFrame(diffs).set_index(["degradation", "severity"]))
    return wide


def robustness_sentence(wide: pd.DataFrame) -> str:
    """What the robustness table supports, in words: CLAB is called ahead (or behind) at every tested cell
    only if every cell's interval over seeds excludes zero on that side; otherwise the cells are counted."""
    if "CLAB - baseline (points)" not in wide:
        return "The robustness sweep has no CLAB - baseline comparison (both models must be swept)."
    cells = wide[wide.index.get_level_values("severity") > 0]
    n_seeds = int(wide["n"].min()) if len(wide) else 0
    mean = cells["CLAB - baseline (points)"]
    ahead = int((mean > 0).sum())
    if n_seeds < 2:
        return (f"CLAB's mAP@50 is above the baseline's in {ahead} of {len(cells)} degraded cells, from a single "
                "training seed: there is no interval over seeds, so this does not tell a robustness gain from noise.")
    above = int((cells["CI low"] > 0).sum())
    below = int((cells["CI high"] < 0).sum())
    if above == len(cells):
        return (f"CLAB is ahead of the baseline at every tested degradation and severity ({len(cells)} cells): "
                f"every cell's 95% interval over {n_seeds} seeds is above zero.")
    return (f"CLAB's mean mAP@50 is above the baseline's in {ahead} of {len(cells)} degraded cells; the 95% "
            f"interval over {n_seeds} seeds excludes zero in {above} cell(s) above and {below} below zero, "
            f"so in the other {len(cells) - above - below} the difference is not told apart from seed noise.")


def degraded_detections(params: dict[str, Any], layout: RunLayout, kind: str, severity: int,
                        num_frames: int) -> tuple[list[dict], tuple[str, ...]]:
    """Detections of every model on the first ``num_frames`` frames of the first validation video that has
    boxes, degraded with ``kind`` at ``severity`` exactly as in the sweep.

    Returns ``(frames, class names)``, with one dict per frame: ``image`` (the degraded frame, BGR uint8
    ndarray[H, W, 3]), ``gt`` (ndarray[k, 4] x1y1x2y2), ``name`` (file name) and ``detections``
    ``{model: [per-class ndarray (m, 5)]}``.
    """
    from mmdet.datasets import build_dataset
    from mmdet.datasets.pipelines import Compose

    import clab  # noqa: F401
    from ..apis import init_model
    from ..engine.config import load_config
    from ..engine.launch import resolve_device
    from ..engine.test import infer_frames, insert_degradation

    device = resolve_device(params["DEVICE"])
    options = parse_cfg_options(cfg_options(params))
    checkpoints = {m: model_checkpoint(params, layout, m) for m in params["MODELS"]}  # the first training seed
    base = load_config(model_config(params, params["MODELS"][0]), options)
    degraded_cfg = insert_degradation(base, kind, int(severity), params["SEED"])
    dataset = build_dataset(degraded_cfg.data.test, dict(test_mode=True))
    # the first frames of the first video with at least one box
    by_video: dict[Any, list[int]] = {}
    for i, info in enumerate(dataset.data_infos):
        by_video.setdefault(info.get("video_id"), []).append(i)
    video = next((v for v, idx in by_video.items()
                  if any(dataset.coco.imgToAnns.get(dataset.data_infos[i]["id"]) for i in idx)), None)
    if video is None or num_frames <= 0:
        return [], tuple(dataset.CLASSES)
    shown = by_video[video][:num_frames]  # frame 0 first: the detector caches the video's references there
    load_and_degrade = Compose(degraded_cfg.data.test.pipeline[:2])
    frames = []
    for i in shown:
        info = dataset.data_infos[i]
        results = load_and_degrade([dataset.prepare_results(dict(info))])[0]
        anns = dataset.coco.imgToAnns.get(info["id"], [])
        gt = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in anns], np.float32).reshape(-1, 4)
        frames.append({"image": results["img"], "gt": gt, "name": info["filename"], "detections": {}})
    for model in params["MODELS"]:
        cfg = load_config(model_config(params, model), options)
        net = init_model(cfg, checkpoints[model], device)
        if hasattr(net, "reset_video_memo"):
            net.reset_video_memo()
        found, _ = infer_frames(net, dataset, shown, device, progress=False)  # from frame 0, in order
        for frame, i in zip(frames, shown):
            result = found[i]
            frame["detections"][model] = result["det_bboxes"] if isinstance(result, dict) else result
        del net
    return frames, tuple(dataset.CLASSES)
