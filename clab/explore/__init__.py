"""Interactive exploration of a run in JupyterLab (notebook ``06_explore``; DESIGN.md "How data flows": a run
folder -> the explorer). All the logic lives here; the notebook only calls it.

* :mod:`.run_data`: what the run saved (frames and ground truth, each model's detections, metrics, t-SNE).
* :mod:`.compare`: per-frame matching (matched / missed / false), per-video and per-class AP@50, the frames
  where the models differ most.
* :mod:`.on_demand`: degraded frames and both models' detections on them, computed when asked and cached.
* :mod:`.render`: the side-by-side frame picture.
* :mod:`.app`: the widgets (:class:`Explorer`) and the static summary a headless run shows.
"""
from __future__ import annotations

from typing import Any

from .app import CSS, Explorer, SortableTable, TsnePanel, frame_picture, show_summary, summary
from .compare import match_frame, per_class_ap, per_video_ap, video_table, worst_frames
from .on_demand import CLEAN, OnDemandDetector
from .run_data import Frame, RunData, load_run, run_parameters

__all__ = ["open_run", "CSS", "Explorer", "SortableTable", "TsnePanel", "frame_picture", "show_summary", "summary",
           "match_frame", "per_class_ap", "per_video_ap", "video_table", "worst_frames", "CLEAN",
           "OnDemandDetector", "Frame", "RunData", "load_run", "run_parameters"]


def open_run(params: dict[str, Any]) -> RunData:
    """The run a notebook's parameters point at: ``RUN_DIR`` when set, else ``RESULTS_DIR/RUN_NAME``, with the
    parameters that run recorded (see :func:`run_parameters`) and the notebook's own on top."""
    given = {k: v for k, v in params.items() if k != "RUN_DIR"}
    return load_run(run_parameters(params.get("RUN_DIR") or None, **given))
