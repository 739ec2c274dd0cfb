"""Notebook 05: mAP@50 against degradation severity for each model (``clab.engine.robustness``), and frames
degraded the same way with each model's detections drawn on them.

Each model's sweep is kept in ``robustness/<model>/robustness.json`` (``{"clean": m, kind: {severity: m}}``);
finished cells are not recomputed when the notebook runs again.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .layout import (RunLayout, cfg_options, checkpoint_stamp, config_digest, model_checkpoint, model_config,
                     parse_cfg_options, sync_inputs)

__all__ = ["degradation_kinds", "run_sweeps", "robustness_table", "wide_table", "degraded_detections"]


def degradation_kinds(params: dict[str, Any]) -> list[str]:
    """``ROBUSTNESS_KINDS``, or every degradation when it is empty."""
    from ..data.degradations import DEGRADATIONS
    return list(params["ROBUSTNESS_KINDS"]) or list(DEGRADATIONS)


def _frames(params: dict[str, Any]) -> int | None:
    return params["ROBUSTNESS_FRAMES"] or params["MAX_TEST_FRAMES"] or None


def run_sweeps(params: dict[str, Any], layout: RunLayout, progress: bool = True) -> dict[str, dict]:
    """``{model: robustness table}`` for every model of ``MODELS`` (also in the merged ``metrics.json`` under
    ``"robustness"``)."""
    from ..engine.config import load_config
    from ..engine.robustness import run_robustness

    items = cfg_options(params)
    options = parse_cfg_options(items)
    checkpoints = {m: model_checkpoint(params, layout, m) for m in params["MODELS"]}
    kinds = degradation_kinds(params)
    tables = {}
    for model in params["MODELS"]:
        print(f"== robustness of {model}: {len(kinds)} degradations x {len(params['ROBUSTNESS_SEVERITIES'])} "
              f"severities", flush=True)
        config = model_config(params, model)
        folder = layout.robustness_dir(model)
        # cells kept from an earlier sweep are reused only if they tested the same checkpoint the same way
        sync_inputs(folder, {"config": config_digest(config, items), "checkpoint": checkpoint_stamp(
            checkpoints[model]), "frames": _frames(params), "seed": params["SEED"]})
        cfg = load_config(config, options)
        tables[model] = run_robustness(cfg, checkpoints[model], str(folder), kinds, params["ROBUSTNESS_SEVERITIES"],
                                       params["SEED"], params["DEVICE"], _frames(params), progress)
    layout.update_metrics("robustness", tables)
    return tables


def robustness_table(tables: dict[str, dict], kinds: list[str], severities: list[int]) -> pd.DataFrame:
    """Long table: ``degradation``, ``severity`` (0 = clean, repeated for every degradation so each curve
    starts at the clean value), ``model``, ``mAP@50``."""
    rows = []
    for model, table in tables.items():
        for kind in kinds:
            rows.append({"degradation": kind, "severity": 0, "model": model, "mAP@50": table["clean"]})
            for s in severities:
                rows.append({"degradation": kind, "severity": int(s), "model": model,
                             "mAP@50": table.get(kind, {}).get(str(s), np.nan)})
    return pd.DataFrame(rows)


def wide_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rows (degradation, severity), columns models, and ``CLAB - baseline`` (points of mAP@50, %) when both
    models are there. The clean value appears once, as degradation ``none``, severity 0."""
    clean = table[table["severity"] == 0].drop_duplicates(subset=["model"]).assign(degradation="none")
    rows = pd.concat([clean, table[table["severity"] > 0]], ignore_index=True)
    wide = rows.pivot_table(index=["degradation", "severity"], columns="model", values="mAP@50", sort=False)
    wide.columns.name = None
    if "baseline" in wide and "clab" in wide:
        wide["CLAB - baseline (points)"] = 100.0 * (wide["clab"] - wide["baseline"])
    return wide


def degraded_detections(params: dict[str, Any], layout: RunLayout, kind: str, severity: int,
                        num_frames: int) -> tuple[list[dict], tuple[str, ...]]:
    """Detections of every model on the first ``num_frames`` frames of the first validation video that has
    boxes, degraded with ``kind`` at ``severity`` exactly as in the sweep.

    Returns ``(frames, class names)``, with one dict per frame: ``image`` (the degraded frame, BGR uint8
    ndarray[H, W, 3]), ``gt`` (ndarray[k, 4] x1y1x2y2), ``name`` (file name) and ``detections``
    ``{model: [per-class ndarray (m, 5)]}``.
    """
    import torch
    from mmdet.datasets import build_dataset
    from mmdet.datasets.pipelines import Compose

    import clab  # noqa: F401
    from ..apis import init_model
    from ..engine.config import load_config
    from ..engine.test import infer_frames, insert_degradation

    device = params["DEVICE"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    options = parse_cfg_options(cfg_options(params))
    checkpoints = {m: model_checkpoint(params, layout, m) for m in params["MODELS"]}
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
