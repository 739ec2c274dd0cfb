"""The explorer's widgets (ipywidgets; the t-SNE scatter is a plotly ``FigureWidget``, which JupyterLab 4
renders without a build step): a frame viewer with video, frame, score threshold, degradation and severity
controls; sortable per-video and per-class AP tables whose rows jump to a video's worst frames; and the t-SNE
embedding, where clicking (or hovering) a point shows its frame.

:func:`summary` is the static part (tables and one picture as ordinary outputs), which is all a headless run
through papermill needs to show; :class:`Explorer` builds the widgets over the same data. Every widget a test
or a user may look for carries a CSS class ``clab-...`` (see :data:`CSS`).
"""
from __future__ import annotations

import html
from typing import Any, Callable

import numpy as np
import pandas as pd

from .compare import match_frame, per_class_ap, video_table, worst_frames
from .on_demand import CLEAN, OnDemandDetector
from .render import frame_panels, png_bytes

__all__ = ["CSS", "SortableTable", "Explorer", "TsnePanel", "summary", "show_summary", "frame_picture"]

#: CSS classes of the widgets (stable names for tests and styling)
CSS = {"video": "clab-video", "frame": "clab-frame", "score": "clab-score", "kind": "clab-kind",
       "severity": "clab-severity", "image": "clab-frame-image", "status": "clab-status",
       "videos": "clab-video-table", "classes": "clab-class-table", "worst": "clab-worst-frames",
       "tsne": "clab-tsne", "preview": "clab-tsne-preview", "notes": "clab-notes", "explorer": "clab-explorer"}


def _detections_for(run, detector: OnDemandDetector, model: str, frame, kind: str, severity: int
                    ) -> tuple[list[np.ndarray] | None, str]:
    """``(detections or None, where they came from)`` for one model and frame: the saved ones on a clean
    frame, else computed on demand when the checkpoint is there."""
    if kind == CLEAN:
        saved = run.saved_detections(model, frame)
        if saved is not None:
            return saved, "saved"
    if detector.available(model):
        dets = detector.detect(model, frame, kind, severity)
        took = detector.last_seconds
        return dets, ("cached" if took == 0 else f"computed in {took:.2f} s")
    return None, detector.missing.get(model, "no detections")


def frame_picture(run, detector: OnDemandDetector, video: str, frame_id: int, score_thr: float,
                  kind: str = CLEAN, severity: int = 3) -> tuple[np.ndarray, list[dict]]:
    """The side-by-side picture of one frame (RGB ndarray) and one status dict per model: ``model``,
    ``source``, ``detections`` (all scores), ``shown`` (>= ``score_thr``), ``top_score``, ``matched``,
    ``missed``, ``false`` (None when the model's detections are not available)."""
    frame = run.frame(video, frame_id)
    image = detector.image(frame, kind, severity)
    matches: dict[str, Any] = {}
    status = []
    for model in run.models:
        dets, source = _detections_for(run, detector, model, frame, kind, severity)
        if dets is None:
            matches[model] = source
            status.append({"model": model, "source": source, "detections": None, "shown": None,
                           "top_score": None, "matched": None, "missed": None, "false": None})
            continue
        m = match_frame(dets, frame.gt_boxes, frame.gt_labels, score_thr)
        scores = np.concatenate([np.asarray(d).reshape(-1, 5)[:, 4] for d in dets]) if dets else np.zeros(0)
        matches[model] = m
        status.append({"model": model, "source": source, "detections": int(len(scores)), "shown": len(m.scores),
                       "top_score": float(scores.max()) if len(scores) else 0.0, "matched": m.num_matched,
                       "missed": m.num_missed, "false": m.num_false})
    label = f"{video} #{frame_id}" + ("" if kind == CLEAN else f" | {kind} {severity}")
    return frame_panels(image, frame.gt_boxes, frame.gt_labels, run.classes, matches, score_thr, label), status


def summary(run, detector: OnDemandDetector, score_thr: float) -> dict[str, Any]:
    """The static view of a run (what a headless run shows): ``notes`` (lines about what is missing),
    ``videos`` (per-video AP table with error counts), ``classes`` (per-class AP) and ``picture`` (the frame
    of the largest gap in the video where CLAB gains most, as RGB ndarray)."""
    notes = list(run.notes) + detector.message().splitlines()
    videos = video_table(run, score_thr) if run.detections else pd.DataFrame()
    classes = per_class_ap(run)
    video = next(iter(run.videos))
    frame_id = 0
    if "CLAB - baseline (points)" in videos and videos["CLAB - baseline (points)"].notna().any():
        video = videos["CLAB - baseline (points)"].idxmax()
        frame_id = int(worst_frames(run, video, score_thr, top=1)["frame_id"].iloc[0])
    picture, _ = frame_picture(run, detector, video, frame_id, score_thr)
    return {"notes": notes, "videos": videos, "classes": classes, "picture": picture, "video": video,
            "frame_id": frame_id}


def show_summary(view: dict[str, Any]) -> None:
    """Display :func:`summary`'s result as ordinary notebook outputs (text, tables, a PNG)."""
    from IPython.display import Image, Markdown, display

    for line in view["notes"]:
        print("note:", line)
    if len(view["videos"]):
        display(Markdown("**AP@50 per video** (with missed / false detections at the score threshold)"))
        display(view["videos"].round(3))
    display(Markdown("**AP@50 per class**"))
    display(view["classes"].round(3))
    display(Markdown(f"**{view['video']}, frame {view['frame_id']}**: the largest gap between the models in "
                     f"the video where CLAB gains most"))
    display(Image(data=png_bytes(view["picture"]), format="png"))


class SortableTable:
    """A table of ``df`` as widgets: click a column header to sort by it (again: reverse); with ``on_row``,
    the first cell of each row is a button that calls ``on_row(index value)``."""

    def __init__(self, df: pd.DataFrame, on_row: Callable[[Any], None] | None = None, css: str = "",
                 floatfmt: str = "{:.3f}"):
        import ipywidgets as w

        self.df = df
        self.on_row = on_row
        self.floatfmt = floatfmt
        self.sort_by: str | None = None
        self.ascending = True
        self.widget = w.GridBox(layout=w.Layout(grid_template_columns=f"repeat({len(df.columns) + 1}, auto)",
                                                grid_gap="1px 8px"))
        if css:
            self.widget.add_class(css)
        self.render()

    def _cell(self, value: Any) -> str:
        if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
            return "n/a"
        if isinstance(value, (float, np.floating)):
            return self.floatfmt.format(value)
        return str(value)

    def sort(self, column: str) -> None:
        """Sort by ``column`` (the index name sorts by the index); a second call on it reverses."""
        self.ascending = not self.ascending if self.sort_by == column else True
        self.sort_by = column
        self.render()

    def rows(self) -> pd.DataFrame:
        if self.sort_by is None:
            return self.df
        if self.sort_by == (self.df.index.name or "index"):
            return self.df.sort_index(ascending=self.ascending)
        return self.df.sort_values(self.sort_by, ascending=self.ascending, na_position="last", kind="stable")

    def render(self) -> None:
        import ipywidgets as w

        cells = []
        for column in [self.df.index.name or "index", *self.df.columns]:
            arrow = "" if self.sort_by != column else (" ▲" if self.ascending else " ▼")
            head = w.Button(description=f"{column}{arrow}", tooltip=f"sort by {column}",
                            layout=w.Layout(width="auto", min_width="max-content"))
            head.add_class("clab-sort")
            head.on_click(lambda _b, c=column: self.sort(c))
            cells.append(head)
        rows = self.rows()
        for key, row in zip(rows.index, rows.itertuples(index=False)):   # (itertuples keeps column dtypes)
            if self.on_row is not None:
                first = w.Button(description=str(key), tooltip=f"show {key}",
                                 layout=w.Layout(width="auto", min_width="max-content"))
                first.add_class("clab-row")
                first.on_click(lambda _b, k=key: self.on_row(k))
            else:
                first = w.Label(str(key))
            cells.append(first)
            cells += [w.Label(self._cell(v)) for v in row]
        self.widget.children = cells


class Explorer:
    """The explorer's widgets over ``run`` (:class:`~clab.explore.run_data.RunData`); ``widget`` is the
    whole view, to display in a notebook.

    Args:
        run: the run's data.
        detector: computes degraded frames and detections (built from ``run`` when None).
        score_thr: the initial score threshold.
        video: the video shown first (default: the first one).
    """

    def __init__(self, run, detector: OnDemandDetector | None = None, score_thr: float = 0.3,
                 video: str | None = None):
        import ipywidgets as w

        from ..data.degradations import DEGRADATIONS

        self.run = run
        self.detector = detector or OnDemandDetector(run)
        videos = list(run.videos)
        video = video or videos[0]
        if video not in run.videos:
            raise ValueError(f"explorer: video {video!r} is not in the run's validation set; known: {videos}")
        self.video = w.Dropdown(options=videos, value=video, description="video")
        self.frame = w.IntSlider(0, 0, len(run.videos[video]) - 1, description="frame", continuous_update=False)
        self.score = w.FloatSlider(score_thr, min=0.0, max=1.0, step=0.05, description="score ≥",
                                   continuous_update=False)
        self.kind = w.Dropdown(options=[CLEAN, *DEGRADATIONS], value=CLEAN, description="degradation")
        self.severity = w.IntSlider(3, 1, 5, description="severity", continuous_update=False)
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.status = w.HTML()
        self.notes = w.HTML(self._notes_html())
        for name in ("video", "frame", "score", "kind", "severity", "image", "status", "notes"):
            getattr(self, name).add_class(CSS[name])
        self.worst = w.HBox()
        self.worst.add_class(CSS["worst"])
        self.history: list[dict] = []            # one entry per refresh: what was shown (for tests and timing)
        self.video.observe(self._on_video, "value")
        for control in (self.frame, self.score, self.kind, self.severity):
            control.observe(lambda _change: self.refresh(), "value")
        self.video_table = SortableTable(video_table(run, score_thr) if run.detections else pd.DataFrame(
            index=pd.Index(videos, name="video")), on_row=self.show_worst, css=CSS["videos"])
        self.class_table = SortableTable(per_class_ap(run), css=CSS["classes"])
        self.tsne = TsnePanel(run, self.detector, on_pick=self.jump)
        self.widget = w.VBox([
            w.HTML("<h3>Frames</h3>"), self.notes,
            w.HBox([self.video, self.frame, self.score]), w.HBox([self.kind, self.severity]),
            self.image, self.status,
            w.HTML("<h3>AP@50 per video</h3><small>click a column to sort, a video to list the frames where the "
                   "two models differ most</small>"), self.video_table.widget, self.worst,
            w.HTML("<h3>AP@50 per class</h3>"), self.class_table.widget,
            w.HTML("<h3>t-SNE of the frame features</h3><small>click a point to see its frame</small>"),
            self.tsne.widget])
        self.widget.add_class(CSS["explorer"])
        self.refresh()

    def _notes_html(self) -> str:
        lines = list(self.run.notes) + self.detector.message().splitlines()
        if not lines:
            return ""
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        return f"<div style='color:#8a4b00'><b>Note</b><ul>{items}</ul></div>"

    def _on_video(self, change) -> None:
        with self.frame.hold_trait_notifications():
            self.frame.max = len(self.run.videos[change["new"]]) - 1
            self.frame.value = min(self.frame.value, self.frame.max)
        self.refresh()

    def jump(self, video: str, frame_id: int, kind: str = CLEAN, severity: int | None = None) -> None:
        """Show ``frame_id`` of ``video`` (degraded by ``kind`` at ``severity``) in the frame viewer."""
        self._hold = True
        try:
            self.video.value = video
            self.frame.max = len(self.run.videos[video]) - 1
            self.frame.value = int(frame_id)
            self.kind.value = kind
            if severity is not None:
                self.severity.value = int(severity)
        finally:
            self._hold = False
        self.refresh()

    def show_worst(self, video: str, top: int = 3) -> None:
        """Jump to ``video`` and list the frames where the two models' errors differ most, as buttons."""
        import ipywidgets as w

        buttons: list = [w.Label(f"{video}, largest gaps:")]
        if "baseline" in self.run.detections and "clab" in self.run.detections:
            table = worst_frames(self.run, video, self.score.value, top)
            for _, row in table.iterrows():
                b = w.Button(description=f"frame {int(row['frame_id'])} (gap {int(row['gap']):+d})",
                             tooltip="baseline errors minus CLAB errors", layout=w.Layout(width="auto"))
                b.on_click(lambda _b, f=int(row["frame_id"]): self.jump(video, f, self.kind.value))
                buttons.append(b)
            first = int(table["frame_id"].iloc[0]) if len(table) else 0
        else:
            buttons.append(w.Label("(needs saved detections of both models)"))
            first = 0
        self.worst.children = buttons
        self.jump(video, first, self.kind.value)

    def refresh(self) -> None:
        """Draw the current frame with the current settings (called by every control)."""
        if getattr(self, "_hold", False):
            return
        picture, status = frame_picture(self.run, self.detector, self.video.value, self.frame.value,
                                        self.score.value, self.kind.value, self.severity.value)
        self.image.value = png_bytes(picture)
        self.status.value = self._status_html(status)
        self.history.append({"video": self.video.value, "frame_id": self.frame.value, "kind": self.kind.value,
                             "severity": self.severity.value, "score_thr": self.score.value, "status": status})

    @staticmethod
    def _status_html(status: list[dict]) -> str:
        parts = []
        for s in status:
            if s["detections"] is None:
                parts.append(f"<b>{s['model']}</b>: <i>{html.escape(s['source'])}</i>")
            else:
                parts.append(f"<b>{s['model']}</b> ({s['source']}): <span class='clab-dets'>{s['shown']} shown "
                             f"of {s['detections']}, top score {s['top_score']:.3f}</span>; {s['matched']} "
                             f"matched, {s['missed']} missed, {s['false']} false")
        legend = ("<span style='color:#28c83c'>■ matched</span> <span style='color:#eb3232'>■ false</span> "
                  "<span style='color:#ff9600'>▭ missed</span> <span style='color:#3cc8ff'>■ ground truth</span>")
        return "<br>".join(parts + [legend])


class TsnePanel:
    """The t-SNE scatter (plotly ``FigureWidget``) with colour and feature-set choices, and a preview of the
    frame of the last clicked or hovered point; ``on_pick(video, frame_id, kind, severity)`` is called on a
    click."""

    COLOR_BY = ("video", "class", "degradation", "model")

    def __init__(self, run, detector: OnDemandDetector, on_pick: Callable | None = None):
        import ipywidgets as w

        self.run = run
        self.detector = detector
        self.on_pick = on_pick
        points = run.tsne
        self.feature_sets = list(dict.fromkeys(points["features"])) if len(points) else []
        self.color = w.Dropdown(options=list(self.COLOR_BY), value="video", description="colour by")
        self.features = w.Dropdown(options=self.feature_sets or ["(none)"], description="features")
        self.preview = w.Image(format="png", layout=w.Layout(max_width="320px"))
        self.preview.add_class(CSS["preview"])
        self.caption = w.HTML()
        if not self.feature_sets:
            self.figure = None
            self.widget = w.HTML("<i>no t-SNE points in this run (notebook 04_embeddings_tsne writes them)</i>")
            return
        self.figure = None
        self.color.observe(lambda _c: self.draw(), "value")
        self.features.observe(lambda _c: self.draw(), "value")
        self.controls = w.VBox([self.color, self.features, self.preview, self.caption])
        self.widget = w.HBox([w.HTML(), self.controls])
        self.widget.add_class(CSS["tsne"])
        self.draw()
        first = self.shown_points().iloc[0]
        self.show_point(int(first["index"]), str(first["degradation"]), str(first["features"]))

    def shown_points(self) -> pd.DataFrame:
        """The points of the current view: one feature set, or every set when colouring by model."""
        points = self.run.tsne
        if self.color.value == "model":
            return points
        return points[points["features"] == self.features.value]

    def draw(self) -> None:
        import plotly.graph_objects as go

        points = self.shown_points()
        key = {"model": "features"}.get(self.color.value, self.color.value)
        traces = []
        for name, part in points.groupby(key, sort=True):
            traces.append(go.Scatter(
                x=part["x"].to_numpy(float), y=part["y"].to_numpy(float), mode="markers", name=str(name), marker=dict(size=7, opacity=0.8),
                customdata=[[int(i), str(d), str(f), str(v), int(k)] for i, d, f, v, k in
                            zip(part["index"], part["degradation"], part["features"], part["video"], part["frame_id"])],
                hovertemplate="%{customdata[2]}<br>%{customdata[3]} frame %{customdata[4]} (%{customdata[1]})"
                              "<extra></extra>"))
        # a new FigureWidget per view: replacing the traces of one already shown does not always reach the page
        self.figure = go.FigureWidget(data=traces, layout=dict(
            width=560, height=430, margin=dict(l=10, r=10, t=30, b=10), legend=dict(font=dict(size=9)),
            template="plotly_white", title=f"t-SNE, coloured by {self.color.value}"))
        for trace in self.figure.data:
            trace.on_click(self._clicked)
            trace.on_hover(self._hovered)
        self.widget.children = [self.figure, self.controls]

    def _point(self, trace, points) -> tuple | None:
        if not points.point_inds:
            return None
        index, degradation, features = trace.customdata[points.point_inds[0]][:3]
        return int(index), str(degradation), str(features)

    def show_point(self, index: int, degradation: str, features: str = "") -> tuple[str, int, str, int]:
        """Preview dataset frame ``index`` as it was embedded (``degradation`` ``'clean'`` or ``'<kind>
        <severity>'``); returns ``(video, frame_id, kind, severity)``."""
        frame = self.run.frames[index]
        kind, severity = CLEAN, 3
        if degradation != "clean":
            kind, _, sev = degradation.rpartition(" ")
            severity = int(sev)
        from .render import GT, panel
        gt = [(b, GT, self.run.classes[int(c)], False) for b, c in zip(frame.gt_boxes, frame.gt_labels)]
        self.preview.value = png_bytes(panel(self.detector.image(frame, kind, severity),
                                             f"{frame.video} #{frame.frame_id}", gt, scale=2))
        self.caption.value = html.escape(f"{features}: {frame.video} frame {frame.frame_id}, {degradation}")
        return frame.video, frame.frame_id, kind, severity

    def _hovered(self, trace, points, _state) -> None:
        picked = self._point(trace, points)
        if picked is not None:
            self.show_point(*picked)

    def _clicked(self, trace, points, _state) -> None:
        picked = self._point(trace, points)
        if picked is None:
            return
        video, frame_id, kind, severity = self.show_point(*picked)
        if self.on_pick is not None:
            self.on_pick(video, frame_id, kind, severity)
