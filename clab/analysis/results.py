"""Testing the run's models (notebook 02) and the tables that compare them with each other and the paper.

Every model is tested once per training seed. One device: ``clab.engine.test.run_test`` in the calling
process; several seeds on a CPU: ``clab test`` in parallel processes (:func:`clab.analysis.training.
run_clab_jobs`); ``GPUS > 1``: ``clab test`` through torchrun, which splits whole videos across processes.
Each run's metrics go to ``eval/<model>/seed<s>/metrics.json``; the run's merged ``metrics.json`` gets

* ``models``: ``{model: {"config", "seeds": {seed: summary}, "over_seeds": {metric: seed statistics}}}``
  (:func:`model_summary` per seed; :func:`clab.evaluation.stats.seed_summary` over seeds: mean, std, n and
  the 95% Student-t interval);
* ``comparison``: the CLAB - baseline difference of mAP@50 paired by seed
  (:func:`clab.evaluation.stats.paired_seed_difference`) and, for every seed, the bootstrap over
  validation videos of each model and of their difference (:func:`clab.evaluation.bootstrap.video_bootstrap`,
  the interval of a single run).

:func:`gain_sentence` says in words what these numbers support.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .layout import RunLayout, cfg_options, model_checkpoint, model_config, parse_cfg_options, run_seeds
from .paper import BACKBONE_NAMES, PAPER_MAP50, backbone_tag
from .training import parallel_cpu, run_clab_jobs, torchrun

__all__ = ["test_model", "test_args", "evaluate_models", "model_summary", "seed_statistics", "compare_models",
           "main_table", "main_caption", "per_seed_table", "per_seed_caption", "per_class_table", "paper_table",
           "gain_sentence", "SPEEDS", "SUMMARY_KEYS", "N_BOOT", "DIFFERENCE_ROW"]

SPEEDS = ("slow", "medium", "fast")
#: the metrics of one test that get statistics over seeds
SUMMARY_KEYS = ("bbox_mAP_50", "bbox_mAP", "bbox_mAP_75", "bbox_mAP_50_slow", "bbox_mAP_50_medium",
                "bbox_mAP_50_fast", "vid_mAP_50", "vid_mAP_50_slow", "vid_mAP_50_medium", "vid_mAP_50_fast")
#: bootstrap replicates over videos for the interval of a single run
N_BOOT = 1000


def test_args(config: str, checkpoint: str, out_dir: str | Path, options: list[str], *, device: str = "auto",
              max_frames: int = 0) -> list[str]:
    """The ``clab test`` arguments of one test (as :func:`test_model` runs it in another process)."""
    args = ["test", config, checkpoint, "--out", str(out_dir), "--device", device]
    if options:
        args += ["--cfg-options", *options]
    if max_frames:
        args += ["--max-frames", str(max_frames)]
    return args


def test_model(config: str, checkpoint: str, out_dir: str | Path, options: list[str], *, gpus: int = 1,
               device: str = "auto", max_frames: int = 0, progress: bool = True) -> dict:
    """Test ``checkpoint`` and return its metrics (also in ``out_dir/metrics.json``)."""
    out_dir = Path(out_dir)
    if gpus > 1:
        args = test_args(config, checkpoint, out_dir, options, device=device, max_frames=max_frames)
        torchrun([*args, "--launcher", "pytorch"], gpus)
        return json.loads((out_dir / "metrics.json").read_text())
    from ..engine.config import load_config
    from ..engine.test import run_test
    cfg = load_config(config, parse_cfg_options(options))
    return run_test(cfg, checkpoint, str(out_dir), device, max_frames=max_frames or None, progress=progress)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def model_summary(metrics: dict, config: str | None = None, checkpoint: str | None = None) -> dict:
    """The named numbers of one test: ``bbox_mAP_50``, ``bbox_mAP``, ``bbox_mAP_75``,
    ``bbox_mAP_50_{slow,medium,fast}``, ``vid_mAP_50`` and ``vid_mAP_50_{slow,medium,fast}`` (None when the
    test did not compute them), ``AP50_per_class``, ``fps``, ``num_frames``, ``bootstrap`` (its interval
    over videos, when the test made one) (+ config, checkpoint)."""
    speed = metrics.get("speed", {})
    out = {"config": config, "checkpoint": checkpoint}
    for key in ("bbox_mAP_50", "bbox_mAP", "bbox_mAP_75"):
        out[key] = metrics.get(key)
    for s in SPEEDS:
        out[f"bbox_mAP_50_{s}"] = speed.get(f"bbox_mAP_50_{s}")
    for key in ("vid_mAP_50", *(f"vid_mAP_50_{s}" for s in SPEEDS)):
        out[key] = _number(metrics.get(key))
    out["AP50_per_class"] = dict(metrics.get("AP50_per_class", {}))
    out["fps"] = metrics.get("fps")
    out["num_frames"] = metrics.get("num_frames")
    if isinstance(metrics.get("bootstrap"), dict):
        out["bootstrap"] = {k: metrics["bootstrap"].get(k) for k in ("ci_low", "ci_high", "n_videos", "n_boot")}
    return out


def seed_statistics(per_seed: dict[int, dict], keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, dict]:
    """``{metric: seed_summary}`` over the seeds of one model (metrics missing or negative - no object of
    that kind - in some seed are left out of that metric)."""
    from ..evaluation.stats import seed_summary
    out = {}
    for key in keys:
        values = [_number(s.get(key)) for s in per_seed.values()]
        if values and all(v is not None and v >= 0 for v in values):
            out[key] = seed_summary(values)
    return out


def _match_table(params: dict[str, Any], model: str, eval_dir: Path):
    """The match table of one test (``eval_dir/matches.npz``; made from ``coco_results.json`` and saved there
    when the test did not write it)."""
    from ..evaluation.bootstrap import load_match_table, save_match_table, table_from_cocoeval, units_of_images
    from ..evaluation.coco_metrics import class_names, coco_entries_metrics, load_coco

    npz = eval_dir / "matches.npz"
    if npz.is_file():
        return load_match_table(npz)
    from mmdet.datasets import build_dataset

    import clab  # noqa: F401  (registries)
    from ..engine.config import load_config
    cfg = load_config(model_config(params, model), parse_cfg_options(cfg_options(params)))
    dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    img_ids = list(dataset.img_ids)[:params["MAX_TEST_FRAMES"] or None]
    coco = load_coco(cfg.data.test.ann_file)
    entries = json.loads((eval_dir / "coco_results.json").read_text())
    names = class_names(coco, dataset.cat_ids, dataset.CLASSES)
    _, cocoeval = coco_entries_metrics(coco, entries, sorted(img_ids), dataset.cat_ids, names)
    unit_of_image, unit_names = units_of_images(coco, sorted(img_ids))
    table = table_from_cocoeval(cocoeval, unit_of_image, unit_names, dataset.cat_ids, names, iou_thr=0.5)
    save_match_table(table, npz)
    return table


def compare_models(params: dict[str, Any], layout: RunLayout, summaries: dict[str, dict],
                   n_boot: int = N_BOOT) -> dict[str, Any]:
    """CLAB - baseline: the paired-by-seed difference of every :data:`SUMMARY_KEYS` metric (``paired``, the
    95% Student-t interval over seeds) and, per seed, the video bootstrap of mAP@50 of both models and of
    their difference on the same resampled videos (``bootstrap``). Empty unless both models were tested."""
    from ..evaluation.bootstrap import video_bootstrap
    from ..evaluation.stats import paired_seed_difference

    if "baseline" not in summaries or "clab" not in summaries:
        return {}
    base, clab = summaries["baseline"]["seeds"], summaries["clab"]["seeds"]
    paired = {}
    for key in SUMMARY_KEYS:
        a = {int(s): _number(v.get(key)) for s, v in base.items()}
        b = {int(s): _number(v.get(key)) for s, v in clab.items()}
        if a and all(x is not None and x >= 0 for x in (*a.values(), *b.values())):
            paired[key] = paired_seed_difference(a, b)
    boot = {}
    for seed in sorted(set(base) & set(clab), key=int):
        tables = {m: _match_table(params, m, layout.eval_dir(m, int(seed))) for m in ("baseline", "clab")}
        boot[str(seed)] = video_bootstrap(tables, n_boot=n_boot, seed=int(seed))
    return {"paired": paired, "bootstrap": boot,
            "method_seeds": "mean over training seeds; 95% interval: Student t over the seeds; the difference is "
                            "paired by seed (each seed trains both models)",
            "method_bootstrap": next(iter(boot.values()))["method"] if boot else ""}


def evaluate_models(params: dict[str, Any], layout: RunLayout, progress: bool = True) -> dict[str, dict]:
    """Test every model of ``MODELS`` and training seed on the validation set (notebook 02); returns
    ``{model: {"config", "seeds": {seed: summary}, "over_seeds": {...}}}`` and writes them, with the
    comparison of the two models (:func:`compare_models`), to the merged ``metrics.json``."""
    seeds = run_seeds(params)
    configs = {m: model_config(params, m) for m in params["MODELS"]}
    checkpoints = {(m, s): model_checkpoint(params, layout, m, seed=s) for m in configs for s in seeds}  # all first
    options = cfg_options(params)
    runs = list(checkpoints)
    if len(runs) > 1 and parallel_cpu(params):
        run_clab_jobs(params, [(f"{m} seed{s}", test_args(configs[m], checkpoints[m, s], layout.eval_dir(m, s),
                                                          options, device="cpu",
                                                          max_frames=params["MAX_TEST_FRAMES"]),
                                layout.eval_dir(m, s) / "test_job.log") for m, s in runs], progress)
        metrics = {r: json.loads((layout.eval_dir(*r) / "metrics.json").read_text()) for r in runs}
    else:
        metrics = {}
        for m, s in runs:
            print(f"== testing {m} seed {s}: {checkpoints[m, s]}", flush=True)
            metrics[m, s] = test_model(configs[m], checkpoints[m, s], layout.eval_dir(m, s), options,
                                       gpus=params["GPUS"], device=params["DEVICE"],
                                       max_frames=params["MAX_TEST_FRAMES"], progress=progress)
    summaries = {}
    for m in configs:
        per_seed = {s: model_summary(metrics[m, s], configs[m], checkpoints[m, s]) for s in seeds}
        summaries[m] = {"config": configs[m], "seeds": {str(s): v for s, v in per_seed.items()},
                        "over_seeds": seed_statistics(per_seed)}
    layout.update_metrics("models", summaries)
    layout.update_metrics("comparison", compare_models(params, layout, summaries))
    return summaries


def _mean(summary: dict, key: str) -> float | None:
    stats = summary.get("over_seeds", {}).get(key)
    return stats["mean"] if stats else None


DIFFERENCE_ROW = "CLAB - baseline (paired)"


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def main_table(summaries: dict[str, dict], comparison: dict | None = None) -> pd.DataFrame:
    """One row per model, the mean over seeds: ``seeds`` (n), mAP@50 with its std and 95% interval over seeds,
    mAP, mAP@75, mAP@50 of slow/medium/fast objects, the ILSVRC devkit's ``vid mAP@50``, frames/s, frames; and,
    with both models, a row :data:`DIFFERENCE_ROW`: CLAB - baseline paired by seed (same columns, the
    difference of each metric; its interval is the paired one)."""
    rows = []
    for model, s in summaries.items():
        stats = s["over_seeds"].get("bbox_mAP_50", {})
        per_seed = list(s["seeds"].values())
        row = {"model": model, "seeds": len(per_seed), "mAP@50": stats.get("mean"), "mAP@50 std": stats.get("std"),
               "95% CI low": stats.get("ci_low"), "95% CI high": stats.get("ci_high"),
               "mAP": _mean(s, "bbox_mAP"), "mAP@75": _mean(s, "bbox_mAP_75")}
        for speed in SPEEDS:
            row[f"mAP@50 {speed}"] = _mean(s, f"bbox_mAP_50_{speed}")
        row["vid mAP@50"] = _mean(s, "vid_mAP_50")
        fps = [_number(p.get("fps")) for p in per_seed]
        row["frames/s"] = sum(f for f in fps if f is not None) / len(fps) if fps and None not in fps else None
        row["frames"] = per_seed[0].get("num_frames") if per_seed else None
        rows.append(row)
    paired = (comparison or {}).get("paired", {})
    if "bbox_mAP_50" in paired:
        d = paired["bbox_mAP_50"]
        row = {"model": DIFFERENCE_ROW, "seeds": d["n"], "mAP@50": d["mean"], "mAP@50 std": d["std"],
               "95% CI low": d["ci_low"], "95% CI high": d["ci_high"],
               "mAP": paired.get("bbox_mAP", {}).get("mean"), "mAP@75": paired.get("bbox_mAP_75", {}).get("mean")}
        for speed in SPEEDS:
            row[f"mAP@50 {speed}"] = paired.get(f"bbox_mAP_50_{speed}", {}).get("mean")
        row["vid mAP@50"] = paired.get("vid_mAP_50", {}).get("mean")
        row["frames/s"], row["frames"] = None, None
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def main_caption(comparison: dict | None, seeds: int) -> str:
    """What the main table's numbers are, for its caption."""
    text = (f"mAP@50 and friends on the validation set: mean over {seeds} training seed(s); std is the sample "
            "standard deviation over seeds; 95% CI: Student t interval over seeds (none with one seed).")
    if comparison and comparison.get("paired"):
        text += (f" Row '{DIFFERENCE_ROW}': the per-seed difference CLAB - baseline (both trained with the same "
                 "seed), its mean, std and 95% Student t interval.")
    return text


def per_seed_table(summaries: dict[str, dict], comparison: dict | None = None) -> pd.DataFrame:
    """One row per model and seed: mAP@50 with the 95% bootstrap interval over validation videos (the
    interval of a single run), the devkit's vid mAP@50, and per seed the difference CLAB - baseline with its
    bootstrap interval on the same resampled videos and whether that interval excludes 0."""
    boot = (comparison or {}).get("bootstrap", {})
    rows = []
    for model, s in summaries.items():
        for seed, summary in s["seeds"].items():
            ci = boot.get(str(seed), {}).get("models", {}).get(model, {})
            rows.append({"model": model, "seed": int(seed), "mAP@50": summary.get("bbox_mAP_50"),
                         "bootstrap 95% CI low": ci.get("ci_low"), "bootstrap 95% CI high": ci.get("ci_high"),
                         "excludes 0": None, "vid mAP@50": summary.get("vid_mAP_50")})
    for seed, result in sorted(boot.items(), key=lambda kv: int(kv[0])):
        d = result.get("differences", {}).get("clab-baseline")
        if d:
            rows.append({"model": "CLAB - baseline", "seed": int(seed), "mAP@50": d["mean"],
                         "bootstrap 95% CI low": d["ci_low"], "bootstrap 95% CI high": d["ci_high"],
                         "excludes 0": "yes" if d["excludes_zero"] else "no", "vid mAP@50": None})
    return pd.DataFrame(rows).set_index(["model", "seed"])


def per_seed_caption(comparison: dict | None) -> str:
    """What the per-seed table's intervals are."""
    method = (comparison or {}).get("method_bootstrap") or "bootstrap over videos"
    return f"One row per training run (model x seed). Intervals: {method}"


def _points(value: float) -> str:
    return f"{100.0 * value:+.1f}"


def gain_sentence(comparison: dict | None, key: str = "bbox_mAP_50") -> str:
    """One or two sentences stating CLAB's gain over the baseline with its interval, and plainly whether the
    interval excludes zero. With several seeds the interval is the paired one over seeds; with one seed it
    is the bootstrap over videos of that single run (which says nothing about seed-to-seed variation)."""
    if not comparison or key not in comparison.get("paired", {}):
        return "There is no CLAB - baseline comparison in this run (both models must be tested)."
    d = comparison["paired"][key]
    name = {"bbox_mAP_50": "mAP@50"}.get(key, key)
    if d["n"] >= 2:
        text = (f"CLAB - baseline: {_points(d['mean'])} points of {name}, the mean of {d['n']} seeds paired by "
                f"seed (std {100 * d['std']:.1f}), 95% CI [{_points(d['ci_low'])}, {_points(d['ci_high'])}]. ")
        if d["excludes_zero"]:
            word = "gain" if d["mean"] > 0 else "loss"
            text += (f"The interval excludes zero: over these seeds, the {word} is larger than the seed-to-seed "
                     f"noise.")
        else:
            text += ("The interval includes zero: with these seeds, the difference cannot be told apart from "
                     "seed-to-seed noise.")
        return text
    boot = comparison.get("bootstrap", {})
    seed = str(d["seeds"][0]) if d.get("seeds") else next(iter(boot), None)
    b = boot.get(seed, {}).get("differences", {}).get("clab-baseline") if seed is not None else None
    text = f"CLAB - baseline: {_points(d['mean'])} points of {name} with a single training seed"
    if not b:
        return text + "; there is no interval, so nothing can be said about noise."
    text += (f" (95% bootstrap CI over validation videos [{_points(b['ci_low'])}, {_points(b['ci_high'])}]). ")
    text += ("The interval excludes zero for this run, " if b["excludes_zero"] else
             "The interval includes zero, ")
    text += "but one seed says nothing about seed-to-seed variation: train more seeds (SEEDS) to tell."
    return text


def per_class_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """AP@50 per class (rows) and model (columns), the mean over seeds; NaN for a class without ground truth."""
    columns = {}
    for m, s in summaries.items():
        per_seed = pd.DataFrame({seed: pd.Series(v["AP50_per_class"], dtype=float) for seed, v in s["seeds"].items()})
        columns[m] = per_seed.mean(axis=1)
    frame = pd.DataFrame(columns)
    frame.index.name = "class"
    return frame


def paper_table(summaries: dict[str, dict], params: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """This run's mAP@50 (mean over seeds) beside the paper's (both in %), and a caption saying how to read it.

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
        ours = _pct(_mean(s, "bbox_mAP_50"))
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
