"""Plots of a run (DESIGN.md layout: ``viz/``), drawn with matplotlib/seaborn without pyplot and written as PNG:
training curves, data set statistics, per-class AP and speed bars, ablations, robustness curves, t-SNE
scatters and detections drawn on frames. Each function takes tables (pandas) and a file path and returns the
path; :func:`show` displays written files in a notebook."""
from __future__ import annotations

from .common import new_figure, save_figure, show
from .dataset import dataset_overview, sample_frames
from .detections import detection_boxes, detections_figure, draw_boxes
from .metrics import ablation_plot, per_class_ap, speed_map
from .robustness import robustness_curves
from .training import training_curves
from .tsne import tsne_grid

__all__ = ["new_figure", "save_figure", "show", "dataset_overview", "sample_frames", "draw_boxes",
           "detection_boxes", "detections_figure", "per_class_ap", "speed_map", "ablation_plot",
           "robustness_curves", "training_curves", "tsne_grid"]
