"""``DATASET: custom`` in the notebooks: your own annotated videos, converted to CocoVID json by
``clab convert-mot`` / ``clab convert-cvat``, put where the custom configs read them.

The custom configs (``configs/*_custom.py``) read ``<data_root>/annotations/custom_train.json`` and
``custom_val.json`` with image paths relative to ``<data_root>``. :func:`prepare_custom` checks the two
annotation files given as run parameters (``clab check-data`` on each: files exist, boxes inside images,
frame ids contiguous, a sample of images decodes), checks that their categories are the run's class list
(and the config's), and copies them to those two names when they live elsewhere.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from clab.io import atomic_open, load_json

__all__ = ["CUSTOM_FILES", "prepare_custom"]

#: split -> file name under <data_root>/annotations
CUSTOM_FILES = {"train": "custom_train.json", "val": "custom_val.json"}


def prepare_custom(root: str | Path, classes: Sequence[str], train_ann: str | Path, val_ann: str | Path,
                   config_classes: Sequence[str] | None = None, sample: int = 200, progress: bool = True) -> dict:
    """Check the custom annotation files and install them under ``<root>/annotations`` (see the module).

    Args:
        root: the run's ``DATA_ROOT`` (the images' folder, ``img_prefix`` of the custom configs).
        classes: the run's class list (``CUSTOM_CLASSES``), in category order.
        train_ann, val_ann: CocoVID json files (``CUSTOM_TRAIN_ANN``, ``CUSTOM_VAL_ANN``).
        config_classes: the classes of the run's config, which must be the same list.
        sample: images decoded per file.

    Returns ``{'train': {'file', 'source', 'videos', 'images', 'annotations'}, 'val': {...}}``.

    Raises:
        ValueError: a parameter is empty, a check fails (the message holds the check's report), or the
            class lists differ (the message shows both).
        FileNotFoundError: an annotation file does not exist.
    """
    from .check import check

    root = Path(root)
    classes = list(classes)
    if not classes:
        raise ValueError("DATASET is 'custom': set CUSTOM_CLASSES to your class names")
    if config_classes is not None and list(config_classes) != classes:
        raise ValueError(f"CUSTOM_CLASSES {classes} differ from the config's classes {list(config_classes)}: set "
                         f"classes = {tuple(classes)} in your copy of the custom config")
    summary = {}
    for split, ann, param in (("train", train_ann, "CUSTOM_TRAIN_ANN"), ("val", val_ann, "CUSTOM_VAL_ANN")):
        if not str(ann):
            raise ValueError(f"DATASET is 'custom': set {param} to the {split} annotation json "
                             f"(clab convert-mot / convert-cvat)")
        ann = Path(ann)
        data = load_json(ann, f"{param} annotation json")
        names = [c["name"] for c in sorted(data.get("categories", []), key=lambda c: c["id"])]
        if names != classes:
            raise ValueError(f"{param} {ann}: its categories are {names}, CUSTOM_CLASSES is {classes}")
        report = check(ann=ann, img_prefix=root, sample=sample, progress=progress)
        if not report.ok:
            raise ValueError(f"{param} {ann} (images under DATA_ROOT {root}) fails the data check:\n{report.format()}")
        dest = root / "annotations" / CUSTOM_FILES[split]
        if not dest.exists() or not dest.samefile(ann):
            with open(ann, "rb") as src, atomic_open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        summary[split] = {"file": str(dest), "source": str(ann), "videos": len(data.get("videos", [])),
                          "images": len(data["images"]), "annotations": len(data["annotations"])}
    return summary
