"""What the notebooks compute, as functions (DESIGN.md: "nothing the notebooks compute lives only in the
notebook"): the run folder layout, data preparation, training and testing the run's models, ablations,
feature embeddings for t-SNE with silhouette scores, and robustness sweeps. Each notebook is a short sequence
of calls into one of these modules and ``clab.viz``."""
from __future__ import annotations

from . import ablation, data_prep, embeddings, results, robustness, training
from .ablation import ablation_config
from .layout import RunLayout, cfg_options, model_checkpoint, model_config, parse_cfg_options

__all__ = ["ablation", "data_prep", "embeddings", "results", "robustness", "training", "ablation_config",
           "RunLayout", "cfg_options", "model_checkpoint", "model_config", "parse_cfg_options"]
