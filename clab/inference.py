"""A video in, detections out: :func:`inference_video` (Python) and ``clab infer-video`` (an annotated video
plus a per-frame json).

``inference_video(model, path)`` yields ``(frame_id, result)`` for every frame of a video file or a folder of
frames, ``result`` being what :func:`clab.apis.inference_vid` returns for one frame
(``{'det_bboxes': [num_classes ndarrays (k, 5)]}``, x1, y1, x2, y2, score in frame pixels). Frames go
through the config's test pipeline (minus its loading step) exactly as ``clab test`` sends dataset frames,
so the same frames with the same references give the same detections. Reference modes:

- ``'video'`` (default): SELSA's test mode over the whole file, as the config's test set does it. With
  ``test_with_adaptive_stride`` (the TRoI/CLAB configs) the K references are spread evenly over the video
  (``clab.data.ref_sampling``), so the video's length must be known first: one decoding pass counts the
  frames (and catches a truncated file) while keeping only the K reference frames, then the frames are
  decoded again one at a time. Memory: K + 1 frames, whatever the video's length.
- ``'online'``: ``test_with_fix_stride`` for streams: a window of ``2r + 1`` frames (``r = |lo|`` of the
  config's ``frame_range``) centred on the current frame, one new frame every ``stride`` frames. No first
  pass; frames are read ahead by ``r * stride`` (the window's future half), so memory is bounded by the
  window and the output lags the input by that many frames. Equals ``clab test`` with a
  ``test_with_fix_stride`` sampler.
- ``'first'``: the K references are copies of frame 0 (what mmtracking's ``demo_vid.py`` and
  :func:`clab.apis.inference_vid` do): no pass, no lag, weaker references.

``clab infer-video INPUT --config CFG --checkpoint CKPT --out OUT.mp4 [--json OUT.json]`` writes the
annotated video (same size and frame rate as the input; one colour per class, class name and score in a
font scaled with the frame size) and a json: ``video`` (path, size, fps, frames), ``model`` (config,
checkpoint, classes, reference mode and frames), ``categories``, ``images`` (one per frame, ``id =
frame_id + 1``), ``detections`` (COCO results: ``image_id, frame_id, category_id, bbox [x, y, w, h],
score``; every detection the model returns, ``--score-thr`` only filters what is drawn), ``num_frames``,
``complete`` and ``error``. Both are written also when reading fails midway: the video is closed
properly and the json is written atomically, with ``complete: false``.
"""
from __future__ import annotations

import argparse
import colorsys
import os
import sys
import time
from typing import Iterator, Sequence

import numpy as np

from .data.video_io import VideoReadError, VideoSource, open_video

__all__ = ["inference_video", "iter_detections", "reference_plan", "draw_detections", "class_colors",
           "MODES", "add_arguments", "run"]

MODES = ("video", "online", "first")


# ---------------------------------------------------------------------------------------------- references
def reference_plan(model, mode: str = "video", stride: int | None = None) -> dict:
    """How references are chosen for ``mode`` with ``model.cfg``'s test sampler.

    Returns:
        ``{method: 'test_with_adaptive_stride' | 'test_with_fix_stride' | 'first', num_ref_imgs, frame_range
        [lo, hi], stride}``.
    """
    from .data import ref_sampling

    if mode not in MODES:
        raise ValueError(f"inference_video: mode must be one of {MODES}, got {mode!r}")
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ValueError("inference_video: model has no .cfg; build it with clab.apis.init_model")
    test = cfg.data.test
    sampler = dict(test.get("ref_img_sampler") or {})
    method = sampler.get("method", "test_with_adaptive_stride")
    if method not in ref_sampling.TEST_METHODS:
        raise ValueError(f"inference_video: data.test.ref_img_sampler.method of the config is {method!r}; "
                         f"expected one of {ref_sampling.TEST_METHODS}")
    lo, hi = ref_sampling.frame_range_bounds(sampler.get("frame_range", [-7, 7]))
    num_ref = ref_sampling.resolve_num_ref_imgs(method, [lo, hi], int(sampler.get("num_ref_imgs", hi - lo)))
    step = int(stride if stride is not None else sampler.get("stride", 1))
    if step < 1:
        raise ValueError(f"inference_video: stride must be >= 1, got {step}")
    if mode == "online" or (mode == "video" and method == "test_with_fix_stride"):
        if -lo != hi:
            raise ValueError(f"inference_video: the fixed-stride window needs a symmetric frame_range, got "
                             f"{[lo, hi]} (data.test.ref_img_sampler.frame_range)")
        return dict(method="test_with_fix_stride", num_ref_imgs=hi - lo, frame_range=[lo, hi], stride=step)
    if num_ref < 1:
        raise ValueError(f"inference_video: the config's test sampler gives {num_ref} references; expected >= 1")
    return dict(method="test_with_adaptive_stride" if mode == "video" else "first", num_ref_imgs=num_ref,
                frame_range=[lo, hi], stride=step)


class _Lookahead:
    """Frames of a source by id, read ahead on demand; frames before a given id can be dropped."""

    def __init__(self, source: VideoSource) -> None:
        self._it = source.frames()
        self._buffer: dict[int, np.ndarray] = {}
        self._next = 0
        self.length: int | None = None   # known once the source is exhausted

    def has(self, frame_id: int) -> bool:
        while self.length is None and self._next <= frame_id:
            try:
                fid, image = next(self._it)
            except StopIteration:
                self.length = self._next
                break
            self._buffer[fid] = image
            self._next = fid + 1
        return frame_id < self._next

    def get(self, frame_id: int) -> np.ndarray:
        if not self.has(frame_id):
            raise IndexError(frame_id)
        return self._buffer[frame_id]

    def drop_before(self, frame_id: int) -> None:
        for fid in [f for f in self._buffer if f < frame_id]:
            del self._buffer[fid]

    def close(self) -> None:
        self._it.close()


# ---------------------------------------------------------------------------------------------- model
def _loaded(image: np.ndarray, frame_id: int, name: str, extra: dict | None = None) -> dict:
    """The result dict of one frame after the loading step (what the dataset + loader produce); ``name`` (the
    input's path) is also the frame's ``video_id``, which the model's per-video cache checks."""
    info = dict(frame_id=frame_id, filename=name, file_name=name, height=image.shape[0], width=image.shape[1],
                video_id=name)
    info.update(extra or {})
    return dict(img_info=info, img_prefix=None, seg_prefix=None, proposal_file=None, bbox_fields=[],
                mask_fields=[], seg_fields=[], frame_id=frame_id, is_video_data=True, filename=name,
                ori_filename=name, img=image, img_shape=image.shape, ori_shape=image.shape, img_fields=["img"])


class _Runner:
    """The test pipeline (minus loading) and the model call of one frame."""

    def __init__(self, model) -> None:
        from mmdet.datasets.pipelines import Compose

        import clab  # noqa: F401  (pipeline registration)

        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise ValueError("inference_video: model has no .cfg; build it with clab.apis.init_model")
        steps = list(cfg.data.test.pipeline)
        first = steps[0]["type"] if steps else None
        if first != "LoadMultiImagesFromFile":
            raise ValueError(f"inference_video: data.test.pipeline must start with 'LoadMultiImagesFromFile', "
                             f"got {first!r}")
        self.pipeline = Compose(steps[1:])
        self.model = model

    def __call__(self, frames: list[dict]) -> dict:
        import torch
        from mmcv.parallel import collate

        from .engine.launch import to_model_device

        data = to_model_device(collate([self.pipeline(frames)], samples_per_gpu=1), self.model)
        with torch.no_grad():
            return self.model(return_loss=False, rescale=True, **data)


def iter_detections(model, source: VideoSource, plan: dict | None = None, progress: bool = False
                    ) -> Iterator[tuple[int, np.ndarray, dict]]:
    """``(frame_id, BGR frame, result)`` for every frame of ``source`` (see the module docstring).

    Args:
        model: from :func:`clab.apis.init_model` (has ``cfg``), in eval mode.
        source: from :func:`clab.data.video_io.open_video`.
        plan: from :func:`reference_plan` (default: mode ``'video'``).
        progress: show a progress bar with frames/s on stderr.

    Raises:
        VideoReadError: the input cannot be read (before the first frame, or when it breaks midway).
    """
    from tqdm.auto import tqdm

    from .data import ref_sampling

    plan = plan or reference_plan(model, "video")
    run_frames = _Runner(model)
    if hasattr(model, "reset_video_memo"):
        model.reset_video_memo()
    name = str(source.path)
    method, k = plan["method"], plan["num_ref_imgs"]
    refs: dict[int, np.ndarray] = {}
    ref_ids: list[int] = []
    if method == "test_with_adaptive_stride":
        guess = source.num_frames or source.declared_frames
        hinted = ref_sampling.test_with_adaptive_stride(guess, 0, k) if guess else []
        refs = source.scan(keep=hinted, progress=progress)
        if source.num_frames != guess:  # the container's count was off: read the right frames
            refs = source.scan(keep=ref_sampling.test_with_adaptive_stride(source.num_frames, 0, k), progress=progress)
        ref_ids = ref_sampling.test_with_adaptive_stride(source.num_frames, 0, k)
    total = source.num_frames or source.declared_frames
    bar = tqdm(total=total, desc=source.path.name, unit="frame", disable=not progress, mininterval=0.5,
               file=sys.stderr)
    ahead = _Lookahead(source)
    try:
        frame_id = 0
        while ahead.has(frame_id):
            image = ahead.get(frame_id)
            if method == "test_with_adaptive_stride":
                frames = [_loaded(image, frame_id, name)]
                if frame_id == 0:
                    frames += [_loaded(refs[i], i, name) for i in ref_ids]
                    refs.clear()
            elif method == "first":
                frames = [_loaded(image, frame_id, name)]
                if frame_id == 0:
                    frames += [_loaded(image, 0, name) for _ in range(k)]
            else:
                lo, hi = plan["frame_range"]
                stride = plan["stride"]
                extra = dict(num_left_ref_imgs=-lo, frame_stride=stride)
                frames = [_loaded(image, frame_id, name, extra)]
                if frame_id == 0:
                    wanted = [0] * (-lo + 1) + [round(i * stride) for i in range(1, hi + 1)]
                elif frame_id % stride == 0:
                    wanted = [round(frame_id + hi * stride)]
                else:
                    wanted = []
                for i in wanted:  # clamp to the last frame, as test_with_fix_stride does with the length
                    while not ahead.has(i):
                        i = ahead.length - 1
                    frames.append(_loaded(ahead.get(i), i, name))
                ahead.drop_before(frame_id + 1)
            if method != "test_with_fix_stride":
                ahead.drop_before(frame_id + 1)
            result = run_frames(frames)
            bar.update(1)
            yield frame_id, image, result
            frame_id += 1
    finally:
        ahead.close()
        bar.close()


def inference_video(model, path: str | os.PathLike, mode: str = "video", stride: int | None = None,
                    max_frames: int | None = None, fps: float | None = None, progress: bool = False
                    ) -> Iterator[tuple[int, dict]]:
    """Detect objects in every frame of a video: ``for frame_id, result in inference_video(model, path)``.

    Args:
        model: from :func:`clab.apis.init_model`.
        path: a video file (mp4, avi, mkv, webm, mov) or a folder of frames.
        mode: ``'video'`` (references over the whole file), ``'online'`` (fixed-stride window) or
            ``'first'`` (copies of frame 0); see the module docstring.
        stride: the online window's stride (default: the config's ``ref_img_sampler.stride``, else 1).
        max_frames: only the first ``max_frames`` frames (the video is treated as that long).
        fps: frame rate of a folder of frames (unused for a file).
        progress: progress bar with frames/s.

    Yields:
        ``(frame_id, {'det_bboxes': [num_classes ndarrays (k, 5)]})``, frame ids 0, 1, ... in order.

    Raises:
        VideoReadError: the input does not exist, is empty, truncated or damaged (names the input).
    """
    plan = reference_plan(model, mode, stride)
    with open_video(path, fps=fps, max_frames=max_frames) as source:
        for frame_id, _, result in iter_detections(model, source, plan, progress):
            yield frame_id, result


# ---------------------------------------------------------------------------------------------- drawing
def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One distinct BGR colour per class: hues a golden angle apart, bright and saturated."""
    colors = []
    for i in range(num_classes):
        hue = (0.05 + i * 0.381966) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95 if i % 2 == 0 else 0.8)
        colors.append((int(b * 255), int(g * 255), int(r * 255)))
    return colors


def draw_detections(image: np.ndarray, det_bboxes: Sequence[np.ndarray], classes: Sequence[str],
                    score_thr: float = 0.3, colors: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Boxes, class names and scores of the detections scoring at least ``score_thr``, on a copy of ``image``.

    Args:
        image: BGR uint8 ndarray (H, W, 3).
        det_bboxes: one ndarray (k, 5) per class, x1, y1, x2, y2, score in ``image`` pixels.
        classes: class names, one per entry of ``det_bboxes``.
        colors: BGR colour per class (default :func:`class_colors`).

    The text height is about 1/40 of the shorter side (at least 8 px), on a filled label of the class
    colour with black or white text, whichever contrasts more; higher scores are drawn last (on top).
    """
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    colors = list(colors) if colors is not None else class_colors(len(classes))
    text_px = max(8.0, min(h, w) / 40.0)
    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = text_px / 22.0          # FONT_HERSHEY_SIMPLEX is about 22 px tall at scale 1
    text_thick = max(1, int(round(text_px / 11)))
    box_thick = max(1, int(round(min(h, w) / 320)))
    dets = []
    for label, boxes in enumerate(det_bboxes):
        for row in np.asarray(boxes, dtype=np.float32).reshape(-1, 5):
            if row[4] >= score_thr:
                dets.append((float(row[4]), label, row[:4]))
    for score, label, box in sorted(dets, key=lambda d: d[0]):
        color = colors[label % len(colors)]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, box_thick, cv2.LINE_AA)
        name = classes[label] if label < len(classes) else str(label)
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, font, font_scale, text_thick)
        pad = max(1, int(round(th * 0.25)))
        top = y1 - th - base - 2 * pad
        if top < 0:                       # no room above the box: put the label inside it
            top = max(0, y1)
        left = min(max(0, x1), max(0, w - tw - 2 * pad))
        cv2.rectangle(out, (left, top), (left + tw + 2 * pad, top + th + base + 2 * pad), color, -1)
        luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(out, text, (left + pad, top + pad + th), font, font_scale, ink, text_thick, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .engine.config import DictAction

    parser.add_argument("input", help="video file (mp4, avi, mkv, webm, mov) or folder of frames")
    parser.add_argument("--config", required=True, help="mmcv config of the model")
    parser.add_argument("--checkpoint", default=None, help="checkpoint path or URL (default: random weights)")
    parser.add_argument("--out", required=True, help="annotated video to write (.mp4, .mkv, .webm, .avi)")
    parser.add_argument("--json", default=None, help="per-frame detections to write (COCO results + metadata)")
    parser.add_argument("--score-thr", type=float, default=0.3, help="draw detections scoring at least this")
    parser.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--mode", choices=MODES, default="video",
                        help="references: over the whole video (default), a fixed-stride window, or frame 0")
    parser.add_argument("--online", dest="mode", action="store_const", const="online",
                        help="same as --mode online: a fixed-stride window for streams")
    parser.add_argument("--stride", type=int, default=None, help="stride of the online window")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames (default 25)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _detection_records(frame_id: int, det_bboxes: Sequence[np.ndarray]) -> Iterator[dict]:
    for label, boxes in enumerate(det_bboxes):
        for x1, y1, x2, y2, score in np.asarray(boxes, dtype=np.float64).reshape(-1, 5).tolist():
            yield dict(image_id=frame_id + 1, frame_id=frame_id, category_id=label + 1,
                       bbox=[x1, y1, x2 - x1, y2 - y1], score=score)


def infer_video_file(model, input_path: str | os.PathLike, out: str | os.PathLike, json_path=None, *,
                     mode: str = "video", stride: int | None = None, score_thr: float = 0.3,
                     max_frames: int | None = None, fps: float | None = None, progress: bool = True,
                     meta: dict | None = None) -> dict:
    """Write the annotated video ``out`` (and the json ``json_path``) for ``input_path``.

    Returns a summary ``{frames, seconds, fps, decode_seconds, model_seconds, draw_seconds,
    encode_seconds, complete, error}``. Reading errors do not raise here: what was done is written and
    the summary says ``complete: False`` with the error (``run`` turns that into exit code 1).
    """
    from .data.converters.streamed_json import StreamedJson
    from .data.video_io import VideoWriter

    plan = reference_plan(model, mode, stride)
    classes = list(getattr(model, "CLASSES", None) or [])
    num_classes = getattr(getattr(getattr(model, "detector", None), "roi_head", None), "bbox_head", None)
    num_classes = getattr(num_classes, "num_classes", len(classes))
    if len(classes) != num_classes:
        classes = [f"class_{i}" for i in range(num_classes)]
    t_start = time.perf_counter()
    source = open_video(input_path, fps=fps, max_frames=max_frames)
    done, error, finished = 0, None, False
    wait_s = draw_s = 0.0
    writer = VideoWriter(out, source.width, source.height, source.fps)
    js = None
    try:
        if json_path is not None:
            head = {"video": dict(path=str(input_path), width=source.width, height=source.height,
                                  fps=float(source.fps), fps_fraction=str(source.fps),
                                  declared_frames=source.declared_frames),
                    "model": dict(meta or {}, classes=classes, reference_mode=mode, **plan,
                                  score_thr_drawn=score_thr),
                    "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
            js = StreamedJson(json_path, head, lists=("images", "detections"))
        t0 = time.perf_counter()
        for frame_id, image, result in iter_detections(model, source, plan, progress):
            t1 = time.perf_counter()
            wait_s += t1 - t0                               # decoding + pipeline + model
            annotated = draw_detections(image, result["det_bboxes"], classes, score_thr)
            draw_s += time.perf_counter() - t1
            writer.write(annotated)                         # encoding (timed by the writer)
            if js is not None:
                js.add("images", dict(id=frame_id + 1, frame_id=frame_id, width=source.width,
                                      height=source.height))
                for record in _detection_records(frame_id, result["det_bboxes"]):
                    js.add("detections", record)
            done = frame_id + 1
            t0 = time.perf_counter()
        finished = True
    except VideoReadError as e:
        error = str(e)
    except BaseException as e:  # e.g. KeyboardInterrupt: keep what was done, then re-raise
        error = f"interrupted: {type(e).__name__}: {e}"
        raise
    finally:
        source.close()
        if done == 0 and not finished:   # nothing to keep: leave no empty video or json behind
            writer.discard()
            if js is not None:
                js.discard()
        else:
            writer.close()
            if js is not None:
                ref_ids = None
                if plan["method"] == "test_with_adaptive_stride" and source.num_frames:
                    from .data import ref_sampling
                    ref_ids = ref_sampling.test_with_adaptive_stride(source.num_frames, 0, plan["num_ref_imgs"])
                js.head["model"]["reference_frames"] = ref_ids
                js.close(tail=dict(num_frames=done, complete=finished, error=error))
    seconds = time.perf_counter() - t_start
    return dict(frames=done, seconds=seconds, fps=done / max(seconds, 1e-9), decode_seconds=source.decode_seconds,
                model_seconds=max(0.0, wait_s - source.decode_seconds), draw_seconds=draw_s,
                encode_seconds=writer.encode_seconds, complete=finished, error=error, out=str(out),
                json=None if json_path is None else str(json_path))


def run(args: argparse.Namespace) -> int:
    from .apis import init_model
    from .engine.launch import resolve_device

    device = resolve_device(args.device)
    try:
        source_check = open_video(args.input, fps=args.fps, max_frames=args.max_frames)
        source_check.close()
        options = dict(args.cfg_options or {})
        if args.checkpoint is None:  # a smoke run: no ImageNet backbone download either
            print("warning: no --checkpoint given: the model has random weights", file=sys.stderr)
            options.setdefault("model.detector.backbone.init_cfg", None)
        model = init_model(args.config, args.checkpoint, device=device, cfg_options=options or None)
        summary = infer_video_file(model, args.input, args.out, args.json, mode=args.mode, stride=args.stride,
                                   score_thr=args.score_thr, max_frames=args.max_frames, fps=args.fps,
                                   progress=not args.no_progress,
                                   meta=dict(config=str(args.config), checkpoint=args.checkpoint, device=device))
    except (VideoReadError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not summary["complete"]:
        print(f"error: {summary['error']}", file=sys.stderr)
        if summary["frames"]:
            print(f"wrote the {summary['frames']} frames done to {args.out}"
                  + (f" and {args.json} (complete: false)" if args.json else ""), file=sys.stderr)
        return 1
    print(f"{summary['frames']} frames, {summary['fps']:.2f} frames/s -> {args.out}"
          + (f", {args.json}" if args.json else ""))
    return 0
