"""Notebook 00: make the run's data set (generate the synthetic set, or convert ImageNet VID), check that the
detector's dataset class reads it through the real pipelines, and describe it.

The annotation files and image folders are the ones the run's config points at after ``data_root=DATA_ROOT``,
so what is described here is exactly what training and testing read.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from .layout import cfg_options, model_config, parse_cfg_options

__all__ = ["prepare_dataset", "split_files", "first_file", "validate_dataset", "split_statistics",
           "statistics_table", "annotation_frame", "box_tables"]


def _run_config(params: dict[str, Any]):
    from ..engine.config import load_config
    return load_config(model_config(params, params["MODELS"][0]), parse_cfg_options(cfg_options(params)))


def _leaf_datasets(node: Any) -> list[dict]:
    """The dataset configs inside ``node`` (lists and Concat/Repeat wrappers unpacked)."""
    if isinstance(node, (list, tuple)):
        return [d for item in node for d in _leaf_datasets(item)]
    if isinstance(node, dict):
        if "datasets" in node:
            return _leaf_datasets(node["datasets"])
        if "dataset" in node:
            return _leaf_datasets(node["dataset"])
        return [node]
    return []


def split_files(params: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{name: {'ann_file', 'img_prefix', 'split'}}`` of every training and test annotation file of the run's
    config, named by the file's stem (e.g. ``synthetic_vid_train``)."""
    cfg = _run_config(params)
    files: dict[str, dict[str, str]] = {}
    for split in ("train", "test"):
        for ds in _leaf_datasets(cfg.data[split]):
            name = Path(ds["ann_file"]).stem
            files.setdefault(name, {"ann_file": ds["ann_file"], "img_prefix": ds.get("img_prefix", ""),
                                    "split": split})
    return files


def first_file(params: dict[str, Any], split: str) -> dict[str, str]:
    """The first annotation file of ``split`` (``'train'`` or ``'test'``), see :func:`split_files`."""
    for f in split_files(params).values():
        if f["split"] == split:
            return f
    raise ValueError(f"the run's config has no data.{split} annotation file")


def prepare_dataset(params: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Generate the synthetic set (reused when the same seed and size are already there); for ImageNet VID with
    ``CONVERT_IMAGENET``, run the ``clab check-data`` preflight (problems other than counts that differ from the
    published ones stop here) and convert the annotations; for ``custom``, check the ``CUSTOM_*`` annotation
    files and put them where the custom configs read them (:func:`clab.data.custom.prepare_custom`); then check
    every annotation file exists."""
    t0 = time.perf_counter()
    root = Path(params["DATA_ROOT"])
    summary: dict[str, Any] = {"dataset": params["DATASET"], "data_root": str(root)}
    if params["DATASET"] == "synthetic":
        from ..data.synthetic import SyntheticConfig, is_current, make_synthetic
        config = SyntheticConfig(train_videos=params["SYNTHETIC_TRAIN_VIDEOS"],
                                 val_videos=params["SYNTHETIC_VAL_VIDEOS"], frames=params["SYNTHETIC_FRAMES"])
        summary["generated"] = not is_current(root, params["SEED"], config)
        make_synthetic(root, params["SEED"], config, reuse=True)
    elif params["DATASET"] == "custom":
        from ..data.custom import prepare_custom
        summary["custom"] = prepare_custom(root, params["CUSTOM_CLASSES"], params["CUSTOM_TRAIN_ANN"],
                                           params["CUSTOM_VAL_ANN"], _run_config(params).data.train.get("classes"),
                                           progress=progress)
    elif params["CONVERT_IMAGENET"]:
        from ..data.check import check
        from ..data.converters.imagenet_vid import convert
        report = check(root=root, progress=progress)  # the preflight of clab check-data, before converting
        summary["check_data"] = {"rows": report.rows, "problems": dict(report.problems)}
        if report.problems_except("counts"):
            raise ValueError(f"clab check-data found problems in {root}; fix them before converting:\n"
                             f"{report.format()}")
        if report.problems.get("counts"):
            print(f"warning: {root} differs from the published ILSVRC2015 counts (a partial copy?):\n"
                  + "\n".join(report.problems["counts"]))
        summary["converted"] = convert(root, progress=progress)
    missing = [f["ann_file"] for f in split_files(params).values() if not Path(f["ann_file"]).is_file()]
    if missing:
        hint = ("set CONVERT_IMAGENET: true to convert the ILSVRC2015 annotations" if params["DATASET"] ==
                "imagenet_vid" else "check DATA_ROOT")
        raise FileNotFoundError(f"annotation file(s) not found: {missing}; {hint}")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def validate_dataset(params: dict[str, Any]) -> pd.DataFrame:
    """Build the training and test datasets of the run's config (which checks the annotation json and the
    image folders) and load one item of each through its pipeline. One row per split."""
    from mmdet.datasets import build_dataset

    import clab  # noqa: F401  (registries)
    from ..engine.config import check_data_paths
    cfg = _run_config(params)
    check_data_paths(cfg, ("train", "test"))
    rows = []
    for split, extra in (("train", None), ("test", dict(test_mode=True))):
        dataset = build_dataset(cfg.data[split], extra)
        item = dataset[0]
        shape = tuple(item["img"][0].shape if isinstance(item["img"], list) else item["img"].data.shape)
        rows.append({"split": split, "type": type(dataset).__name__, "items": len(dataset),
                     "classes": len(dataset.CLASSES), "first item image tensor": str(shape)})
    return pd.DataFrame(rows).set_index("split")


def split_statistics(params: dict[str, Any]) -> dict[str, dict]:
    """``clab.data.stats.dataset_statistics`` of every annotation file of the run (see :func:`split_files`)."""
    from ..data.stats import dataset_statistics
    return {name: dataset_statistics(f["ann_file"]) for name, f in split_files(params).items()}


def statistics_table(stats: dict[str, dict]) -> pd.DataFrame:
    """Rows: counts (videos, frames, boxes, boxes per class, per motion speed, per degradation) and box size
    quantiles; columns: annotation files."""
    table: dict[str, dict[str, Any]] = {}
    for name, s in stats.items():
        col: dict[str, Any] = {}
        for key in ("videos", "frames", "key_frames", "annotations", "instances", "frames_without_objects",
                    "occluded"):
            col[key] = s.get(key)
        col["objects per frame (mean)"] = s["objects_per_frame"]["mean"]
        size = s["box_size"]["sqrt_area"] or {}
        for q in ("q10", "q50", "q90"):
            col[f"box size sqrt(w*h) {q}"] = size.get(q)
        for cls, n in s["boxes_per_class"].items():
            col[f"boxes: {cls}"] = n
        for speed in ("slow", "medium", "fast"):
            col[f"boxes moving {speed} (FGFA motion IoU)"] = (s.get("motion") or {}).get(speed)
        for deg, n in (s.get("degradations") or {}).items():
            col[f"frames: {deg}"] = n
        table[name] = col
    frame = pd.DataFrame(table)
    frame.index.name = "quantity"
    return frame


def annotation_frame(ann_file: str | Path) -> pd.DataFrame:
    """One row per box: ``class``, ``width``, ``height``, ``size`` (sqrt of the area), ``motion_iou`` (FGFA,
    NaN without videos), ``motion`` (slow/medium/fast), ``speed`` (pixels/frame, synthetic set only)."""
    import numpy as np

    from ..data.stats import load_coco, motion_class, motion_iou_per_annotation
    coco = load_coco(ann_file)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    miou = motion_iou_per_annotation(coco) if coco.get("videos") else {}
    rows = []
    for a in coco["annotations"]:
        w, h = float(a["bbox"][2]), float(a["bbox"][3])
        m = miou.get(a["id"], np.nan)
        rows.append({"class": names.get(a["category_id"], str(a["category_id"])), "width": w, "height": h,
                     "size": float(np.sqrt(max(w, 0.0) * max(h, 0.0))), "motion_iou": m,
                     "motion": motion_class(m) if m == m else None, "speed": a.get("speed", np.nan)})
    return pd.DataFrame(rows)


def box_tables(params: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """:func:`annotation_frame` of every annotation file of the run, by file name."""
    return {name: annotation_frame(f["ann_file"]) for name, f in split_files(params).items()}
