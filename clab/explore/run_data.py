"""What the explorer reads from a run folder, without widgets: the validation frames of the run's data set
with their ground truth, each model's saved detections (``eval/<model>/coco_results.json``), its metrics
and the t-SNE points (``embeddings/tsne_points.csv``).

Paths come from :class:`clab.analysis.RunLayout` and the run's config (``data.test`` after
``data_root=DATA_ROOT``), never spelled out here. :func:`run_parameters` gives the parameters of a finished
run: those the runner recorded in ``run_state.json`` (merged over the defaults), overridden by the ones the
explorer is given.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.layout import RunLayout, cfg_options, model_config, parse_cfg_options
from ..params import check_parameters

__all__ = ["Frame", "RunData", "run_parameters", "load_run", "detections_by_image", "test_config"]

#: parameters a run folder's ``run_state.json`` may give the explorer (what the run was made with)
RUN_KEYS = ("DATASET", "DATA_ROOT", "SEED", "SYNTHETIC_TRAIN_VIDEOS", "SYNTHETIC_VAL_VIDEOS", "SYNTHETIC_FRAMES",
            "MODELS", "CONFIG_BASELINE", "CONFIG_CLAB", "CFG_OPTIONS", "TRAIN", "CHECKPOINT_BASELINE",
            "CHECKPOINT_CLAB", "MAX_TEST_FRAMES")


@dataclass(frozen=True)
class Frame:
    """One validation frame.

    Attributes:
        index: position in the test dataset (``data_infos`` order: videos one after the other, in order).
        image_id: COCO image id.
        video: video name (``val/synthetic_val_0000``), from the frame's folder.
        frame_id: 0-based index of the frame in its video.
        path: the image file.
        gt_boxes: ndarray[k, 4] x1y1x2y2 in image pixels.
        gt_labels: ndarray[k] int, 0-based class indices.
    """

    index: int
    image_id: int
    video: str
    frame_id: int
    path: Path
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


@dataclass
class RunData:
    """Everything the explorer shows that was saved by the run.

    Attributes:
        params: the run's parameters (checked).
        layout: its folder.
        classes: class names, in label order; ``cat_ids``: their COCO category ids.
        frames: every validation frame, in dataset order.
        videos: ``{video: [dataset indices in frame order]}``.
        detections: ``{model: {image_id: per-class list of ndarray (m, 5)}}`` for the models whose
            ``coco_results.json`` exists.
        metrics: ``{model: metrics.json of eval/<model>}`` (empty dict when missing).
        tsne: the t-SNE points (columns ``index, video, frame_id, class, degradation, features, x, y``), or
            an empty frame.
        notes: human-readable lines about what is missing.
        tested_ids: image ids of the frames the run's test covered (the first MAX_TEST_FRAMES).
    """

    params: dict[str, Any]
    layout: RunLayout
    classes: tuple[str, ...]
    cat_ids: list[int]
    frames: list[Frame]
    videos: dict[str, list[int]]
    detections: dict[str, dict[int, list[np.ndarray]]] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    tsne: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    tested_ids: set[int] = field(default_factory=set)

    @property
    def models(self) -> list[str]:
        return list(self.params["MODELS"])

    def frame(self, video: str, frame_id: int) -> Frame:
        """The frame ``frame_id`` of ``video`` (raises ``KeyError``/``IndexError`` naming what is missing)."""
        if video not in self.videos:
            raise KeyError(f"video {video!r} is not in the run's validation set")
        indices = self.videos[video]
        if not 0 <= frame_id < len(indices):
            raise IndexError(f"video {video!r} has frames 0..{len(indices) - 1}, got {frame_id}")
        return self.frames[indices[frame_id]]

    def saved_detections(self, model: str, frame: Frame) -> list[np.ndarray] | None:
        """The saved (clean-frame) detections of ``model`` on ``frame``; None when the run has none for it (no
        saved results, or a frame past MAX_TEST_FRAMES)."""
        found = self.detections.get(model)
        if found is None or frame.image_id not in self.tested_ids:
            return None
        return found.get(frame.image_id, [np.zeros((0, 5), np.float32) for _ in self.classes])


def run_parameters(run_dir: str | Path | None = None, **given: Any) -> dict[str, Any]:
    """Parameters of the run in ``run_dir``: the defaults, then what its ``run_state.json`` recorded (the keys of
    :data:`RUN_KEYS`), then ``given`` (checked like notebook parameters). With no ``run_dir`` the folder is
    ``RESULTS_DIR/RUN_NAME`` of ``given``. ``RESULTS_DIR`` and ``RUN_NAME`` are set to name ``run_dir``."""
    params = check_parameters(given, "explorer")
    run_dir = Path(run_dir) if run_dir else Path(params["RESULTS_DIR"]) / params["RUN_NAME"]
    state_file = run_dir / "run_state.json"
    recorded: dict[str, Any] = {}
    if state_file.is_file():
        try:
            recorded = json.loads(state_file.read_text()).get("parameters", {})
        except json.JSONDecodeError as err:
            raise ValueError(f"{state_file}: not valid JSON ({err})") from err
    recorded = {k: v for k, v in recorded.items() if k in RUN_KEYS and k not in given}
    merged = check_parameters({**given, **recorded}, str(state_file))
    merged["RESULTS_DIR"], merged["RUN_NAME"] = str(run_dir.parent), run_dir.name
    return merged


def detections_by_image(coco_results: list[dict], cat_ids: list[int]) -> dict[int, list[np.ndarray]]:
    """COCO result records (``image_id, bbox [x, y, w, h], score, category_id``) -> ``{image_id: per-class
    list of ndarray (m, 5) x1y1x2y2 score}``, classes in the order of ``cat_ids``."""
    label_of = {c: i for i, c in enumerate(cat_ids)}
    grouped: dict[int, list[list]] = {}
    for rec in coco_results:
        label = label_of.get(rec["category_id"])
        if label is None:
            raise ValueError(f"detection of image {rec['image_id']}: unknown category_id {rec['category_id']} "
                             f"(expected one of {list(cat_ids)})")
        x, y, w, h = rec["bbox"]
        grouped.setdefault(int(rec["image_id"]), [[] for _ in cat_ids])[label].append(
            [x, y, x + w, y + h, rec["score"]])
    return {img: [np.array(d, np.float32).reshape(-1, 5) for d in per_class] for img, per_class in grouped.items()}


def test_config(params: dict[str, Any]):
    """The resolved config of the run's first model (``data_root=DATA_ROOT`` and CFG_OPTIONS applied)."""
    from ..engine.config import load_config
    return load_config(model_config(params, params["MODELS"][0]), parse_cfg_options(cfg_options(params)))


def load_run(params: dict[str, Any], prepare_data: bool = True) -> RunData:
    """Read the run of ``params`` (see :func:`run_parameters`).

    Frames come from the run's test dataset (``data.test`` built as the tests build it), so dataset indices
    here are the ones of ``embeddings/`` and of the detector. When the validation annotation file is missing
    and the run used the synthetic set, the set is generated again (the same seed and size give the same
    files, byte for byte) if ``prepare_data``; otherwise a ``FileNotFoundError`` names the file.
    """
    from mmdet.datasets import build_dataset

    import clab  # noqa: F401  (dataset registry)
    from ..analysis.data_prep import prepare_dataset

    layout = RunLayout.from_params(params)
    if not layout.root.is_dir():
        raise FileNotFoundError(f"run folder not found: {layout.root} (set RUN_DIR, or RESULTS_DIR and RUN_NAME)")
    cfg = test_config(params)
    ann_file = Path(cfg.data.test.ann_file)
    notes = []
    if not ann_file.is_file():
        if prepare_data and params["DATASET"] == "synthetic":
            prepare_dataset(params, progress=False)
            notes.append(f"the synthetic set was generated again under {params['DATA_ROOT']} "
                         f"(seed {params['SEED']})")
        else:
            raise FileNotFoundError(f"validation annotation file not found: {ann_file} (DATA_ROOT "
                                    f"{params['DATA_ROOT']}); run notebook 00_data_prep of the run first")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading times
        dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    cat_ids = list(dataset.cat_ids)
    frames, videos = [], {}
    for index, info in enumerate(dataset.data_infos):
        anns = [a for a in dataset.coco.imgToAnns.get(info["id"], []) if a["category_id"] in dataset.cat2label]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([dataset.cat2label[a["category_id"]] for a in anns], np.int64)
        video = str(Path(info["filename"]).parent)
        videos.setdefault(video, []).append(index)
        frames.append(Frame(index, int(info["id"]), video, int(info.get("frame_id", len(videos[video]) - 1)),
                            Path(dataset.img_prefix or "") / info["filename"], boxes, labels))
    run = RunData(params, layout, tuple(dataset.CLASSES), cat_ids, frames, videos, notes=notes)
    tested = params["MAX_TEST_FRAMES"] or len(frames)   # 02 tests the first MAX_TEST_FRAMES frames
    run.tested_ids = {f.image_id for f in frames[:tested]}
    for model in params["MODELS"]:
        # the first seed's test; a run folder written before training seeds existed kept it one level up
        folder = next((d for d in (layout.eval_dir(model), layout.eval_dir(model).parent)
                       if (d / "coco_results.json").is_file()), layout.eval_dir(model))
        results_file, metrics_file = folder / "coco_results.json", folder / "metrics.json"
        if results_file.is_file():
            run.detections[model] = detections_by_image(json.loads(results_file.read_text()), cat_ids)
        else:
            notes.append(f"{model}: no saved detections ({results_file} is missing; run notebook 02_evaluate)")
        run.metrics[model] = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    tsne_file = layout.embeddings_dir / "tsne_points.csv"
    if tsne_file.is_file():
        run.tsne = pd.read_csv(tsne_file)
    else:
        notes.append(f"no t-SNE points ({tsne_file} is missing; run notebook 04_embeddings_tsne)")
    return run
