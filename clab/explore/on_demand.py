"""Detections computed when the explorer asks for them: a frame of a validation video, clean or degraded with
one kind and severity exactly as the robustness sweep degrades it (``SeqDegrade`` with the run's seed, one
set of parameters per video), through each model of the run.

The SELSA detector takes its references at frame 0 of a video and keeps them for the whole video, so a frame
of a video (or degradation) other than the last one asked for costs frame 0 first, then the frame; later
frames of the same video and degradation cost one frame. Results are kept in a bounded cache keyed by
``(model, dataset index, kind, severity)``.

The models are the run's checkpoints (``clab.analysis.model_checkpoint``). When one is missing (the demo
run's checkpoints are not committed: they are rebuilt by notebook 01_train), :attr:`OnDemandDetector.missing`
says so and only the saved clean-frame detections can be shown.
"""
from __future__ import annotations

import contextlib
import io
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.layout import cfg_options, model_checkpoint, model_config, parse_cfg_options

__all__ = ["CLEAN", "OnDemandDetector"]

#: the degradation "kind" of an untouched frame
CLEAN = "none"


class OnDemandDetector:
    """Degraded frames and each model's detections on them, computed on demand and cached.

    Args:
        run: a :class:`clab.explore.run_data.RunData`.
        device: ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` (``None``: the run's DEVICE).
        cache_size: detections kept (one entry per model, frame and degradation).
    """

    def __init__(self, run, device: str | None = None, cache_size: int = 512):
        from ..engine.launch import resolve_device

        self.run = run
        self.device = resolve_device(device or run.params["DEVICE"])
        self.cache_size = int(cache_size)
        self.checkpoints: dict[str, str] = {}
        self.missing: dict[str, str] = {}
        for model in run.models:
            try:
                path = model_checkpoint(run.params, run.layout, model, must_exist=False)
            except ValueError as err:
                self.missing[model] = str(err)
                continue
            if path.startswith(("http://", "https://")) or Path(path).is_file():
                self.checkpoints[model] = path
                continue
            try:  # inside the run folder: named relative to it
                shown = f"{Path(path).resolve().relative_to(run.layout.root.resolve())} in the run folder"
            except ValueError:
                shown = path
            self.missing[model] = (f"checkpoint not found: {shown}. Checkpoints are not kept in the repository: "
                                   f"run notebook 01_train of this run (or set TRAIN: false and "
                                   f"CHECKPOINT_{model.upper()}) to see detections on degraded frames")
        self._nets: dict[str, Any] = {}
        self._datasets: dict[tuple[str, int], Any] = {}
        self._last_frame: dict[str, tuple] = {}      # model -> ((video, kind, severity), last frame id)
        self._detections: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
        self._images: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.last_seconds = 0.0

    # ------------------------------------------------------------------------------------------ state
    def available(self, model: str) -> bool:
        """True when ``model``'s checkpoint is there, so its detections can be computed."""
        return model in self.checkpoints

    def message(self) -> str:
        """One line per model whose detections cannot be computed (empty when all can)."""
        return "\n".join(f"{model}: {why}" for model, why in self.missing.items())

    # ------------------------------------------------------------------------------------------ pieces
    def _options(self) -> dict:
        return parse_cfg_options(cfg_options(self.run.params))

    def dataset(self, kind: str, severity: int):
        """The run's test dataset with frames degraded by ``kind`` at ``severity`` (``CLEAN``: untouched)."""
        from mmdet.datasets import build_dataset

        from ..engine.config import load_config
        from ..engine.test import insert_degradation

        key = (kind, int(severity) if kind != CLEAN else 0)
        if key not in self._datasets:
            cfg = load_config(model_config(self.run.params, self.run.models[0]), self._options())
            if kind != CLEAN:
                cfg = insert_degradation(cfg, kind, int(severity), self.run.params["SEED"])
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' loading messages
                self._datasets[key] = (build_dataset(cfg.data.test, dict(test_mode=True)), cfg)
        return self._datasets[key]

    def image(self, frame, kind: str = CLEAN, severity: int = 1) -> np.ndarray:
        """``frame`` (a :class:`~clab.explore.run_data.Frame`) as BGR uint8 ndarray[H, W, 3], degraded by
        ``kind`` at ``severity`` as the detector sees it before resizing."""
        from mmdet.datasets.pipelines import Compose

        key = (frame.index, kind, int(severity) if kind != CLEAN else 0)
        if key not in self._images:
            dataset, cfg = self.dataset(kind, severity)
            steps = cfg.data.test.pipeline[:2 if kind != CLEAN else 1]     # loading (+ SeqDegrade)
            results = Compose(steps)([dataset.prepare_results(dict(dataset.data_infos[frame.index]))])
            self._images[key] = results[0]["img"]
            while len(self._images) > self.cache_size:
                self._images.popitem(last=False)
        return self._images[key]

    def _net(self, model: str):
        if model not in self._nets:
            from ..apis import init_model
            from ..engine.config import load_config

            cfg = load_config(model_config(self.run.params, model), self._options())
            self._nets[model] = init_model(cfg, self.checkpoints[model], self.device)
        return self._nets[model]

    def _infer(self, model: str, dataset, index: int) -> list[np.ndarray]:
        import torch

        from ..engine.launch import to_model_device
        from ..engine.loaders import build_test_loader

        net = self._net(model)
        batch = next(iter(build_test_loader(dataset, [index], 0)))
        with torch.no_grad():
            result = net(return_loss=False, rescale=True, **to_model_device(batch, net))
        return result["det_bboxes"] if isinstance(result, dict) else result

    # ------------------------------------------------------------------------------------------ public
    def detect(self, model: str, frame, kind: str = CLEAN, severity: int = 1) -> list[np.ndarray]:
        """Detections of ``model`` on ``frame`` degraded by ``kind`` at ``severity``: per-class list of
        ndarray (m, 5) x1y1x2y2 score in image pixels. Raises ``RuntimeError`` when the checkpoint is missing.
        ``last_seconds`` holds the time the call took (0 when it came from the cache)."""
        if not self.available(model):
            raise RuntimeError(f"cannot compute detections of {model}: {self.missing.get(model, 'not in MODELS')}")
        severity = int(severity) if kind != CLEAN else 0
        key = (model, frame.index, kind, severity)
        if key in self._detections:
            self._detections.move_to_end(key)
            self.last_seconds = 0.0
            return self._detections[key]
        start = time.perf_counter()
        dataset, cfg = self.dataset(kind, severity or 1)
        fixed = (cfg.data.test.get("ref_img_sampler") or {}).get("method") == "test_with_fix_stride"
        video_key = (frame.video, kind, severity)
        last = self._last_frame.get(model)
        # the detector's reference cache accepts increasing frame ids of one video (consecutive ones with a
        # fixed stride) after its frame 0: continue the cached video when possible, else restart at frame 0
        begin = last[1] + 1 if last is not None and last[0] == video_key and frame.frame_id > last[1] else 0
        if fixed:
            frame_ids = list(range(begin, frame.frame_id + 1))
        else:
            frame_ids = sorted({begin, frame.frame_id}) if begin == 0 else [frame.frame_id]
        indices = self.run.videos[frame.video]
        found = []
        for frame_id in frame_ids:
            found = self._infer(model, dataset, indices[frame_id])
            self._store((model, indices[frame_id], kind, severity), found)
            self._last_frame[model] = (video_key, frame_id)
        self.last_seconds = time.perf_counter() - start
        return found

    def _store(self, key: tuple, value: list[np.ndarray]) -> None:
        self._detections[key] = value
        while len(self._detections) > self.cache_size:
            self._detections.popitem(last=False)
