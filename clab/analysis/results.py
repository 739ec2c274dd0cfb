"""Testing the run's models (notebook 02) and the tables that compare them with each other and the paper.

One device: ``clab.engine.test.run_test`` in the calling process; ``GPUS > 1``: ``clab test`` through torchrun,
which splits whole videos across processes. Each model's metrics go to ``eval/<model>/metrics.json``; a
summary of every model goes to the run's merged ``metrics.json`` under ``"models"``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .layout import RunLayout, cfg_options, model_checkpoint, model_config, parse_cfg_options
from .paper import BACKBONE_NAMES, PAPER_MAP50, backbone_tag
from .training import torchrun

__all__ = ["test_model", "evaluate_models", "model_summary", "main_table", "per_class_table", "paper_table",
           "SPEEDS"]

SPEEDS = ("slow", "medium", "fast")


def test_model(config: str, checkpoint: str, out_dir: str | Path, options: list[str], *, gpus: int = 1,
               device: str = "auto", max_frames: int = 0, progress: bool = True) -> dict:
    """Test ``checkpoint`` and return its metrics (also in ``out_dir/metrics.json``)."""
    out_dir = Path(out_dir)
    if gpus > 1:
        args = ["test", config, checkpoint, "--out", str(out_dir), "--launcher", "pytorch", "--device", device]
        if options:
            args += ["--cfg-options", *options]
        if max_frames:
            args += ["--max-frames", str(max_frames)]
        torchrun(args, gpus)
        return json.loads((out_dir / "metrics.json").read_text())
    from ..engine.config import load_config
    from ..engine.test import run_test
    cfg = load_config(config, parse_cfg_options(options))
    return run_test(cfg, checkpoint, str(out_dir), device, max_frames=max_frames or None, progress=progress)


def model_summary(metrics: dict, config: str | None = None, checkpoint: str | None = None) -> dict:
    """The named numbers of one test: ``bbox_mAP_50``, ``bbox_mAP``, ``bbox_mAP_75``,
    ``bbox_mAP_50_{slow,medium,fast}``, ``AP50_per_class``, ``fps``, ``num_frames`` (+ config, checkpoint)."""
    speed = metrics.get("speed", {})
    out = {"config": config, "checkpoint": checkpoint}
    for key in ("bbox_mAP_50", "bbox_mAP", "bbox_mAP_75"):
        out[key] = metrics.get(key)
    for s in SPEEDS:
        out[f"bbox_mAP_50_{s}"] = speed.get(f"bbox_mAP_50_{s}")
    out["AP50_per_class"] = dict(metrics.get("AP50_per_class", {}))
    out["fps"] = metrics.get("fps")
    out["num_frames"] = metrics.get("num_frames")
    return out


def evaluate_models(params: dict[str, Any], layout: RunLayout, progress: bool = True) -> dict[str, dict]:
    """Test every model of ``MODELS`` on the validation set (notebook 02); returns ``{model: summary}``
    (:func:`model_summary`) and writes them to the merged ``metrics.json`` under ``"models"``."""
    configs = {m: model_config(params, m) for m in params["MODELS"]}
    checkpoints = {m: model_checkpoint(params, layout, m) for m in params["MODELS"]}  # all present first
    options = cfg_options(params)
    summaries = {}
    for model, config in configs.items():
        print(f"== testing {model}: {checkpoints[model]}", flush=True)
        metrics = test_model(config, checkpoints[model], layout.eval_dir(model), options, gpus=params["GPUS"],
                             device=params["DEVICE"], max_frames=params["MAX_TEST_FRAMES"], progress=progress)
        summaries[model] = model_summary(metrics, config, checkpoints[model])
    layout.update_metrics("models", summaries)
    return summaries


def main_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per model: mAP@50, mAP, mAP@75, mAP@50 of slow/medium/fast objects, frames/s, frames."""
    rows = []
    for model, s in summaries.items():
        row = {"model": model, "mAP@50": s["bbox_mAP_50"], "mAP": s["bbox_mAP"], "mAP@75": s["bbox_mAP_75"]}
        for speed in SPEEDS:
            row[f"mAP@50 {speed}"] = s[f"bbox_mAP_50_{speed}"]
        row["frames/s"] = s["fps"]
        row["frames"] = s["num_frames"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def per_class_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """AP@50 per class (rows) and model (columns); NaN for a class without ground truth."""
    frame = pd.DataFrame({m: pd.Series(s["AP50_per_class"], dtype=float) for m, s in summaries.items()})
    frame.index.name = "class"
    return frame


def paper_table(summaries: dict[str, dict], params: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """This run's mAP@50 beside the paper's (both in %), and a caption saying how to read it.

    On ImageNet VID the paper column is the published number for the config's backbone and the difference is
    this run minus the paper. On the synthetic set there is no published number: the R-101 numbers are shown
    for reference only (a different data set), and only the gain of CLAB over the baseline is comparable.
    """
    from ..engine.config import load_config

    imagenet = params["DATASET"] == "imagenet_vid"
    rows, tags = [], {}
    for model, s in summaries.items():
        tag = backbone_tag(load_config(s["config"])) if s.get("config") else None
        tags[model] = tag
        ref_tag = tag if imagenet else "r101"
        paper = PAPER_MAP50.get(model, {}).get(ref_tag) if ref_tag else None
        ours = 100.0 * s["bbox_mAP_50"] if s["bbox_mAP_50"] is not None else None
        backbone = BACKBONE_NAMES[tag] if tag else "other" if imagenet else "tiny"
        rows.append({"model": model, "backbone": backbone, "this run (%)": ours, "paper (%)": paper,
                     "difference (points)": (ours - paper) if imagenet and ours is not None and paper is not None
                     else None})
    if "baseline" in summaries and "clab" in summaries:
        ours = {r["model"]: r["this run (%)"] for r in rows}
        papers = {r["model"]: r["paper (%)"] for r in rows}
        gain = ours["clab"] - ours["baseline"] if None not in (ours["clab"], ours["baseline"]) else None
        paper_gain = (papers["clab"] - papers["baseline"]) if None not in (papers["clab"], papers["baseline"]) \
            else None
        rows.append({"model": "CLAB - baseline", "backbone": "", "this run (%)": gain, "paper (%)": paper_gain,
                     "difference (points)": (gain - paper_gain) if None not in (gain, paper_gain) else None})
    frame = pd.DataFrame(rows).set_index("model")
    if imagenet:
        caption = ("mAP@50 on ImageNet VID val, in %. Paper: CLAB paper Table 1 (TRoI numbers from mmtracking); "
                   "difference = this run - paper.")
    else:
        frame = frame.rename(columns={"this run (%)": "this run, synthetic set (%)",
                                      "paper (%)": "paper R-101, ImageNet VID (%) [reference only]"})
        frame = frame.drop(columns=["difference (points)"])
        caption = ("mAP@50 in %. This run uses the synthetic video set; the paper column is ImageNet VID "
                   "(R-101-DC5), a different data set, shown for reference only: the numbers are not comparable, "
                   "only the sign and size of the CLAB - baseline gain are.")
    return frame, caption
