"""Notebook 04: what the contrastive branch does to the features (paper Figure 3, t-SNE).

For a spread of validation frames, clean and degraded (one degradation at one severity, applied as the
robustness study does), it extracts

* ``backbone``: the last backbone stage, average-pooled over the image (Tensor[N, C]), for every model;
* ``cab``: the CAB embedding (``ContrastiveHead`` on the tapped stage, Tensor[N, D]), for the CLAB model;

then projects each feature set with t-SNE and scores how well it separates videos, classes and degradation
with silhouette scores (cosine distance on the features themselves, not on the 2-D projection).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .layout import RunLayout, cfg_options, model_checkpoint, model_config, parse_cfg_options

__all__ = ["select_frames", "frame_labels", "extract_features", "EmbeddingSet", "embed_frames", "tsne_2d",
           "tsne_frame", "silhouette", "silhouette_table"]

LABELS = ("video", "class", "degradation")


def select_frames(num_frames: int, n: int) -> list[int]:
    """``n`` dataset indices spread evenly over ``range(num_frames)`` (all of them when ``n >= num_frames``)."""
    if num_frames <= 0:
        raise ValueError("select_frames: the dataset has no frames")
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, min(n, num_frames))})


def frame_labels(dataset, indices: list[int]) -> pd.DataFrame:
    """Per frame: ``index``, ``video`` (name), ``frame_id`` and ``class`` (of its largest box; ``none`` when
    the frame has no box)."""
    coco = dataset.coco
    videos = {v["id"]: v["name"] for v in coco.dataset.get("videos", [])}
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    rows = []
    for idx in indices:
        info = dataset.data_infos[idx]
        anns = coco.imgToAnns.get(info["id"], [])
        largest = max(anns, key=lambda a: a["bbox"][2] * a["bbox"][3]) if anns else None
        rows.append({"index": idx, "video": videos.get(info.get("video_id"), str(info.get("video_id"))),
                     "frame_id": info.get("frame_id"),
                     "class": names.get(largest["category_id"], "?") if largest else "none"})
    return pd.DataFrame(rows)


def extract_features(model, dataset, indices: list[int], device: str = "cpu") -> dict[str, np.ndarray]:
    """``{'backbone': ndarray[N, C]}`` (+ ``'cab': ndarray[N, D]`` when the model has the branch) for the
    frames ``indices`` of a test-mode dataset, each frame on its own (no reference frames)."""
    import torch

    backbone = model.detector.backbone
    out_indices = list(getattr(backbone, "out_indices", [len(backbone.res_layers) - 1]))
    tap = out_indices.index(model.cab_stage) if getattr(model, "with_auxiliary", False) else None
    pooled, embedded = [], []
    device = next(model.parameters()).device    # the model's device, whatever ``device`` says
    with torch.no_grad():
        for idx in indices:
            img = dataset[idx]["img"]
            img = (img[0] if isinstance(img, list) else img.data).unsqueeze(0).to(device)  # (1, 3, H, W)
            outs = backbone(img)
            outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)
            pooled.append(outs[-1].mean(dim=(2, 3)).cpu())                            # (1, C)
            if tap is not None:
                embedded.append(model.auxiliary(outs[tap]).cpu())                       # (1, D)
    feats = {"backbone": torch.cat(pooled).numpy()}
    if embedded:
        feats["cab"] = torch.cat(embedded).numpy()
    return feats


@dataclass
class EmbeddingSet:
    """Features of the same frames under several models and conditions.

    ``labels``: one row per point (``video``, ``frame_id``, ``class``, ``degradation``); ``features``:
    ``{'<model> <kind>': ndarray[len(labels), dim]}`` (kind ``backbone`` or ``cab``).
    """

    labels: pd.DataFrame
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, folder) -> None:
        from pathlib import Path
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.labels.to_csv(folder / "points.csv", index=False)
        np.savez_compressed(folder / "features.npz", **{k.replace(" ", "__"): v for k, v in self.features.items()})


def embed_frames(params: dict[str, Any], layout: RunLayout) -> EmbeddingSet:
    """Features of ``TSNE_FRAMES`` validation frames, clean and with ``TSNE_DEGRADATION`` at ``TSNE_SEVERITY``,
    for every model of ``MODELS`` (saved under ``embeddings/``)."""
    from mmdet.datasets import build_dataset

    import clab  # noqa: F401
    from ..apis import init_model
    from ..engine.config import load_config
    from ..engine.launch import resolve_device
    from ..engine.test import insert_degradation

    device = resolve_device(params["DEVICE"])
    options = parse_cfg_options(cfg_options(params))
    checkpoints = {m: model_checkpoint(params, layout, m) for m in params["MODELS"]}
    first = load_config(model_config(params, params["MODELS"][0]), options)
    clean = build_dataset(first.data.test, dict(test_mode=True))
    degraded_cfg = insert_degradation(first, params["TSNE_DEGRADATION"], params["TSNE_SEVERITY"], params["SEED"])
    degraded = build_dataset(degraded_cfg.data.test, dict(test_mode=True))
    indices = select_frames(len(clean), params["TSNE_FRAMES"])
    base = frame_labels(clean, indices)
    condition = f"{params['TSNE_DEGRADATION']} {params['TSNE_SEVERITY']}"
    labels = pd.concat([base.assign(degradation="clean"), base.assign(degradation=condition)], ignore_index=True)
    result = EmbeddingSet(labels)
    for model in params["MODELS"]:
        cfg = load_config(model_config(params, model), options)
        net = init_model(cfg, checkpoints[model], device)
        feats_clean = extract_features(net, clean, indices, device)
        feats_degraded = extract_features(net, degraded, indices, device)
        for kind in feats_clean:
            result.features[f"{model} {kind}"] = np.concatenate([feats_clean[kind], feats_degraded[kind]])
        del net
    result.save(layout.embeddings_dir)
    return result


def tsne_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """t-SNE of ``features`` ndarray[N, D] -> ndarray[N, 2] (perplexity capped at ``(N - 1) / 3``)."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                metric="cosine").fit_transform(np.asarray(features, np.float64))


def tsne_frame(embeddings: EmbeddingSet, perplexity: float = 30.0, seed: int = 0) -> pd.DataFrame:
    """Long table of 2-D points: the labels plus ``features`` (which feature set), ``x`` and ``y``."""
    parts = []
    for name, feats in embeddings.features.items():
        xy = tsne_2d(feats, perplexity, seed)
        parts.append(embeddings.labels.assign(features=name, x=xy[:, 0], y=xy[:, 1]))
    return pd.concat(parts, ignore_index=True)


def silhouette(features: np.ndarray, labels: list | np.ndarray | pd.Series) -> float:
    """Silhouette score with cosine distance, in [-1, 1] (higher: the labels' groups are better separated);
    NaN when there are fewer than 2 groups or every point is its own group."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    groups = len(set(labels.tolist()))
    if groups < 2 or groups >= len(labels):
        return float("nan")
    return float(silhouette_score(np.asarray(features, np.float64), labels, metric="cosine"))


def silhouette_table(embeddings: EmbeddingSet) -> pd.DataFrame:
    """Rows: feature sets (``<model> <kind>``); columns: silhouette by video, by class, by degradation."""
    rows = {}
    for name, feats in embeddings.features.items():
        rows[name] = {f"by {label}": silhouette(feats, embeddings.labels[label]) for label in LABELS}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "features"
    return frame
