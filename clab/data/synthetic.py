"""The embedded default data set: a synthetic video set generated from a seed (DESIGN.md, "The embedded
default: a synthetic video set").

It is written in exactly the layout of the ImageNet VID converter (``clab.data.imagenet_vid``)::

    <out>/Data/VID/{train,val}/synthetic_{train,val}_%04d/%06d.JPEG
    <out>/annotations/synthetic_vid_{train,val}.json      CocoVID json (SPEC 3.2)
    <out>/synthetic_manifest.json                         seed + config; written last

Each video shows 1-3 objects of ``SYNTHETIC_CLASSES`` (a shape drawn in its class colour, with colour
jitter and texture) on a textured background. Every video has a motion label (``slow``, ``medium``,
``fast``, balanced over the videos) that sets the objects' speed relative to their size, chosen so that
FGFA's motion IoU (``clab.data.stats``) puts most of their boxes in the matching class. Objects bounce off
the image borders, rotate a little, change scale smoothly, hide each other, and in half of the videos pass
behind a static occluder bar. About a quarter of the frames are degraded with ``clab.data.degradations``:
motion blur along the direction of the fastest object with length = its speed x exposure, defocus blur
or Gaussian noise.

Json fields beyond SPEC 3.2 (readers ignore them): ``videos[].motion`` and ``videos[].occluder``;
``images[].degradation`` (name or null) and ``images[].degradation_severity`` (1..5 or null);
``annotations[].speed`` (pixels/frame of the object's centre, from the previous frame; the first frame
uses the next one). Boxes ``[x, y, w, h]`` are integer pixels, the tight box of the object's *visible*
pixels (after occlusion), so they lie inside the image; an object with fewer than
``SyntheticConfig.min_visible_pixels`` visible pixels gets no annotation in that frame, and ``occluded``
is True when less than 90% of it is visible. ``is_vid_train_frame`` marks every ``key_frame_step``-th frame
of train videos (the analogue of ImageNet's 15 frames per video) and is always False in val.

Deterministic: one seeded ``numpy.random.Generator`` per (seed, split, video), fixed JPEG quality, json
with sorted keys, so the same seed and config give the same bytes.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from clab.data.degradations import DEGRADATIONS
from clab.io import atomic_write_json, load_json

__all__ = [
    "SYNTHETIC_CLASSES", "CLASS_COLORS", "MOTION_CLASSES", "FRAME_DEGRADATIONS", "SyntheticConfig",
    "make_synthetic", "is_current", "annotation_file", "MANIFEST", "add_arguments", "run",
]

#: class names; category ids are 1..6 in this order
SYNTHETIC_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "ring", "star")
#: class colour, BGR
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "disc": (40, 40, 215), "square": (45, 185, 45), "triangle": (215, 95, 35),
    "cross": (35, 205, 225), "ring": (190, 50, 195), "star": (215, 210, 45),
}
#: per-video motion labels, with the object speed range in object sizes per frame
MOTION_CLASSES: tuple[str, ...] = ("slow", "medium", "fast")
_RELATIVE_SPEED = {"slow": (0.0, 0.006), "medium": (0.016, 0.027), "fast": (0.09, 0.16)}
_MAX_SPIN = {"slow": 0.0, "medium": 1.0, "fast": 2.5}  # largest rotation, degrees/frame
#: degradations applied to some frames
FRAME_DEGRADATIONS: tuple[str, ...] = ("motion_blur", "defocus_blur", "gaussian_noise")
SPLITS = ("train", "val")
MANIFEST = "synthetic_manifest.json"
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and content of the synthetic set (defaults: 24 train + 8 val videos of 12 frames, 160x96).

    Attributes:
        train_videos, val_videos: number of videos per split (>= 0, at least one in total).
        frames: frames per video (>= 2).
        width, height: frame size in pixels (>= 32, the dataset's minimum side).
        min_objects, max_objects: objects per video (1 <= min <= max).
        min_size, max_size: object size (side of its bounding square at scale 1) in pixels.
        scale_change: largest relative size change over a video (sizes move linearly from s to s * (1 +/- x)).
        key_frame_step: every ``key_frame_step``-th train frame (from ``key_frame_step // 2``) is a key frame.
        degraded_fraction: fraction of the frames of each video that get a degradation.
        max_severity: degradation severities are drawn from 1..max_severity.
        occluder_fraction: fraction of the videos with an occluder bar.
        min_visible_pixels: an object with fewer visible pixels is not annotated in that frame.
        jpeg_quality: JPEG quality of the frames.
    """

    train_videos: int = 24
    val_videos: int = 8
    frames: int = 12
    width: int = 160
    height: int = 96
    min_objects: int = 1
    max_objects: int = 3
    min_size: float = 18.0
    max_size: float = 34.0
    scale_change: float = 0.25
    key_frame_step: int = 3
    degraded_fraction: float = 0.25
    max_severity: int = 3
    occluder_fraction: float = 0.5
    min_visible_pixels: int = 16
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"SyntheticConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        for name in ("train_videos", "val_videos", "frames", "width", "height", "min_objects", "max_objects",
                     "key_frame_step", "max_severity", "min_visible_pixels", "jpeg_quality"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool), name, "an integer")
        need(self.train_videos >= 0, "train_videos", ">= 0")
        need(self.val_videos >= 0, "val_videos", ">= 0")
        need(self.train_videos + self.val_videos >= 1, "train_videos", "> 0 or val_videos > 0")
        need(self.frames >= 2, "frames", ">= 2")
        need(self.width >= 32, "width", ">= 32")
        need(self.height >= 32, "height", ">= 32")
        need(1 <= self.min_objects, "min_objects", ">= 1")
        need(self.min_objects <= self.max_objects, "max_objects", f">= min_objects ({self.min_objects})")
        need(4 <= self.min_size <= self.max_size, "min_size", f"in [4, max_size={self.max_size}]")
        need(self.max_size * (1 + self.scale_change) < min(self.width, self.height), "max_size",
             f"such that max_size * (1 + scale_change) < min(width, height) = {min(self.width, self.height)}")
        need(0 <= self.scale_change < 1, "scale_change", "in [0, 1)")
        need(self.key_frame_step >= 1, "key_frame_step", ">= 1")
        need(0 <= self.degraded_fraction <= 1, "degraded_fraction", "in [0, 1]")
        need(1 <= self.max_severity <= 5, "max_severity", "in 1..5")
        need(0 <= self.occluder_fraction <= 1, "occluder_fraction", "in [0, 1]")
        need(self.min_visible_pixels >= 1, "min_visible_pixels", ">= 1")
        need(1 <= self.jpeg_quality <= 100, "jpeg_quality", "in 1..100")

    @classmethod
    def from_overrides(cls, **overrides: Any) -> "SyntheticConfig":
        """The default config with ``overrides``; an unknown name raises ``ValueError`` listing the fields."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"unknown SyntheticConfig field(s) {unknown}; expected some of {names}")
        return cls(**overrides)


def annotation_file(root: str | Path, split: str) -> Path:
    """``<root>/annotations/synthetic_vid_<split>.json``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(root) / "annotations" / f"synthetic_vid_{split}.json"


# ----------------------------------------------------------------------------------------------- drawing
def _shape_polygons(cls: str, cx: float, cy: float, size: float, angle: float) -> list[np.ndarray]:
    """Outline(s) of a polygonal class in image coordinates (float ``[k, 2]`` arrays)."""
    r = size / 2.0
    if cls == "square":
        t = np.deg2rad(angle + 45.0 + 90.0 * np.arange(4))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif cls == "triangle":
        t = np.deg2rad(angle - 90.0 + 120.0 * np.arange(3))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif cls == "star":
        t = np.deg2rad(angle - 90.0 + 36.0 * np.arange(10))
        rad = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    elif cls == "cross":
        a, b = r, 0.32 * r  # arm half-length, half-width
        pts = np.array([[b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b],
                        [-a, -b], [-b, -b], [-b, -a]], float)
        th = np.deg2rad(angle)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        pts = pts @ rot.T
    else:
        raise ValueError(f"{cls!r} is not a polygonal class")
    return [pts + np.array([cx, cy])]


_SHIFT = 4  # cv2 fractional bits: coordinates in 1/16 pixel


def _fixed(v: float) -> int:
    return int(round(v * (1 << _SHIFT)))


def _object_mask(cls: str, cx: float, cy: float, size: float, angle: float, shape: tuple[int, int]) -> np.ndarray:
    """``ndarray[H, W]`` bool: the pixels covered by the object."""
    mask = np.zeros(shape, np.uint8)
    if cls in ("disc", "ring"):
        cv2.circle(mask, (_fixed(cx), _fixed(cy)), _fixed(size / 2.0), 1, -1, cv2.LINE_8, _SHIFT)
        if cls == "ring":
            cv2.circle(mask, (_fixed(cx), _fixed(cy)), _fixed(size / 2.0 * 0.58), 0, -1, cv2.LINE_8, _SHIFT)
    else:
        polys = [np.round(p * (1 << _SHIFT)).astype(np.int32) for p in _shape_polygons(cls, cx, cy, size, angle)]
        cv2.fillPoly(mask, polys, 1, cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted textured background: low-frequency colour field + stripes + blotches + fine grain."""
    low = rng.uniform(0.0, 1.0, (int(rng.integers(3, 6)), int(rng.integers(4, 8)), 1))
    tint = rng.uniform(-18.0, 18.0, (1, 1, 3))
    base = 70.0 + 110.0 * cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] + tint
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6.0, 20.0)
    stripes = 10.0 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    img = base + stripes[..., None]
    for _ in range(int(rng.integers(3, 7))):  # grey blotches (no class colours in the background)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ax, ay = rng.uniform(4, w / 5), rng.uniform(4, h / 5)
        blotch = np.zeros((h, w), np.uint8)
        cv2.ellipse(blotch, (int(cx), int(cy)), (int(ax), int(ay)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        img[blotch.astype(bool)] += rng.uniform(-35, 35)
    img += rng.normal(0.0, 5.0, (h, w, 1))
    return np.clip(img, 0, 255).astype(np.float32)


# ----------------------------------------------------------------------------------------------- one video
@dataclass
class _Object:
    cls: str
    color: np.ndarray          # BGR float
    size0: float
    size1: float
    pos: np.ndarray            # centre (x, y), frame 0
    vel: np.ndarray            # pixels/frame
    angle0: float
    spin: float                # degrees/frame


def _trajectory(obj: _Object, frames: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres ``[T, 2]``, sizes ``[T]`` and angles ``[T]``; the centre bounces off the borders so the
    whole object stays inside the image."""
    sizes = obj.size0 + (obj.size1 - obj.size0) * np.arange(frames) / max(frames - 1, 1)
    angles = obj.angle0 + obj.spin * np.arange(frames)
    pos, vel = obj.pos.astype(float).copy(), obj.vel.astype(float).copy()
    centres = np.zeros((frames, 2))
    limits = np.array([w, h], float)
    for t in range(frames):
        half = sizes[t] / 2.0 + 1.0
        for d in range(2):
            lo, hi = half, limits[d] - half
            for _ in range(4):  # reflect at most a few times per frame
                if pos[d] < lo:
                    pos[d], vel[d] = 2 * lo - pos[d], abs(vel[d])
                elif pos[d] > hi:
                    pos[d], vel[d] = 2 * hi - pos[d], -abs(vel[d])
            pos[d] = min(max(pos[d], lo), hi)
        centres[t] = pos
        pos = pos + vel
    return centres, sizes, angles


def _make_video(cfg: SyntheticConfig, rng: np.random.Generator, motion: str, classes: list[str],
                occluder: bool) -> dict:
    """Render one video: frames (uint8 BGR) and per-frame object records."""
    w, h, T = cfg.width, cfg.height, cfg.frames
    bg = _background(rng, h, w)
    lo, hi = _RELATIVE_SPEED[motion]
    objects = []
    for cls in classes:
        size0 = float(rng.uniform(cfg.min_size, cfg.max_size))
        change = cfg.scale_change * (0.15 if motion == "slow" else 1.0)
        size1 = size0 * float(1.0 + rng.uniform(-change, change))
        speed = float(rng.uniform(lo, hi)) * size0
        direction = rng.uniform(0, 2 * np.pi)
        margin = max(size0, size1) / 2.0 + 1.0
        pos = np.array([rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)])
        jitter = rng.uniform(-22, 22, 3)
        objects.append(_Object(
            cls=cls, color=np.clip(np.array(CLASS_COLORS[cls], float) + jitter, 0, 255), size0=size0,
            size1=size1, pos=pos, vel=speed * np.array([np.cos(direction), np.sin(direction)]),
            angle0=float(rng.uniform(0, 360)), spin=_MAX_SPIN[motion] * float(rng.uniform(-1, 1))))
    tracks = [_trajectory(o, T, w, h) for o in objects]

    occ_mask = np.zeros((h, w), bool)
    occ_color = None
    if occluder:
        thick = int(rng.integers(max(4, w // 20), max(6, w // 11)))
        if rng.random() < 0.6:  # vertical bar
            x0 = int(rng.integers(w // 5, 4 * w // 5 - thick))
            occ_mask[:, x0:x0 + thick] = True
        else:
            y0 = int(rng.integers(h // 5, 4 * h // 5 - thick))
            occ_mask[y0:y0 + thick, :] = True
        occ_color = rng.uniform(25, 90, 3)
        occ_texture = rng.normal(0, 6, (h, w, 1))

    n_degraded = int(round(cfg.degraded_fraction * T))
    degraded_frames = set(rng.choice(T, size=n_degraded, replace=False).tolist()) if n_degraded else set()
    kind_offset = int(rng.integers(0, len(FRAME_DEGRADATIONS)))
    grain = [rng.normal(0, 7, (h, w, 1)) for _ in objects]  # per-object grain, fixed in image coordinates

    frames, records, degradations = [], [], []
    k = 0
    for t in range(T):
        img = bg.copy()
        masks = [_object_mask(o.cls, *tracks[i][0][t], tracks[i][1][t], tracks[i][2][t], (h, w))
                 for i, o in enumerate(objects)]
        visible = [m.copy() for m in masks]
        for i, m in enumerate(masks):  # later objects are in front
            for j in range(i):
                visible[j] &= ~m
            img[m] = (objects[i].color[None, :] + grain[i][m])
        if occluder:
            for v in visible:
                v &= ~occ_mask
            img[occ_mask] = occ_color[None, :] + occ_texture[occ_mask]
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)

        frame_records = []
        for i, o in enumerate(objects):
            n_vis = int(visible[i].sum())
            if n_vis < cfg.min_visible_pixels:
                continue
            ys, xs = np.nonzero(visible[i])
            x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            centres = tracks[i][0]
            step = centres[t] - centres[t - 1] if t > 0 else centres[1] - centres[0]
            frame_records.append({"object": i, "category_id": SYNTHETIC_CLASSES.index(o.cls) + 1,
                                  "bbox": [x1, y1, x2 - x1, y2 - y1],
                                  "occluded": n_vis < 0.9 * int(masks[i].sum()),
                                  "speed": round(float(np.hypot(*step)), 4)})

        degradation, severity = None, None
        if t in degraded_frames:
            degradation = FRAME_DEGRADATIONS[(kind_offset + k) % len(FRAME_DEGRADATIONS)]
            severity = int(rng.integers(1, cfg.max_severity + 1))
            k += 1
            params = {}
            if degradation == "motion_blur":
                steps = [tracks[i][0][min(t + 1, T - 1)] - tracks[i][0][max(t - 1, 0)] for i in range(len(objects))]
                fastest = max(steps, key=lambda s: float(np.hypot(*s)))
                speed = float(np.hypot(*fastest)) / (2.0 if 0 < t < T - 1 else 1.0)
                params = {"angle": math.degrees(math.atan2(-fastest[1], fastest[0])),
                          "length": max(2.0, speed * severity)}
            img = DEGRADATIONS[degradation](img, severity, rng, **params)
        frames.append(img)
        records.append(frame_records)
        degradations.append((degradation, severity))
    return {"frames": frames, "records": records, "degradations": degradations}


# ----------------------------------------------------------------------------------------------- a split
def _generate_split(out: Path, split: str, n_videos: int, seed: int, cfg: SyntheticConfig) -> dict:
    split_index = SPLITS.index(split)
    srng = np.random.default_rng([seed, split_index, 1_000_000])
    motions = [MOTION_CLASSES[i % len(MOTION_CLASSES)] for i in range(n_videos)]
    motions = [motions[i] for i in srng.permutation(n_videos)] if n_videos else []
    counts = srng.integers(cfg.min_objects, cfg.max_objects + 1, size=n_videos)
    class_cycle: list[str] = []
    while len(class_cycle) < int(counts.sum()):  # every class equally often, in a shuffled order
        class_cycle += [SYNTHETIC_CLASSES[i] for i in srng.permutation(len(SYNTHETIC_CLASSES))]
    n_occ = int(round(cfg.occluder_fraction * n_videos))
    occluders = set(srng.choice(n_videos, size=n_occ, replace=False).tolist()) if n_occ else set()

    categories = [{"id": i + 1, "name": n, "encode_name": n} for i, n in enumerate(SYNTHETIC_CLASSES)]
    videos, images, annotations = [], [], []
    img_id = ann_id = 1
    next_instance = 1
    pos = 0
    for v in range(n_videos):
        name = f"{split}/synthetic_{split}_{v:04d}"
        classes = class_cycle[pos:pos + int(counts[v])]
        pos += int(counts[v])
        rng = np.random.default_rng([seed, split_index, v])
        video = _make_video(cfg, rng, motions[v], classes, v in occluders)
        key_frames = (list(range(cfg.key_frame_step // 2, cfg.frames, cfg.key_frame_step))
                      if split == "train" else [])
        videos.append({"id": v + 1, "name": name, "vid_train_frames": key_frames, "motion": motions[v],
                       "occluder": v in occluders})
        instance_ids = [next_instance + i for i in range(len(classes))]
        next_instance += len(classes)
        folder = out / "Data" / "VID" / name
        folder.mkdir(parents=True, exist_ok=True)
        for t, (img, recs, (deg, sev)) in enumerate(zip(video["frames"], video["records"], video["degradations"])):
            ok, buf = cv2.imencode(".JPEG", img, [int(cv2.IMWRITE_JPEG_QUALITY), cfg.jpeg_quality])
            if not ok:  # pragma: no cover
                raise RuntimeError(f"could not encode frame {t} of {name}")
            (folder / f"{t:06d}.JPEG").write_bytes(buf.tobytes())
            images.append({"id": img_id, "file_name": f"{name}/{t:06d}.JPEG", "height": cfg.height,
                           "width": cfg.width, "frame_id": t, "video_id": v + 1,
                           "is_vid_train_frame": t in key_frames, "degradation": deg,
                           "degradation_severity": sev})
            for r in recs:
                x, y, bw, bh = r["bbox"]
                annotations.append({"id": ann_id, "video_id": v + 1, "image_id": img_id,
                                    "category_id": r["category_id"], "instance_id": instance_ids[r["object"]],
                                    "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": False,
                                    "occluded": r["occluded"], "generated": False, "speed": r["speed"]})
                ann_id += 1
            img_id += 1
    coco = {"categories": categories, "videos": videos, "images": images, "annotations": annotations}
    atomic_write_json(annotation_file(out, split), coco, sort_keys=True)
    return {"videos": len(videos), "images": len(images), "annotations": len(annotations)}


def _manifest(seed: int, cfg: SyntheticConfig) -> dict:
    return {"generator": "clab.data.synthetic", "version": GENERATOR_VERSION, "seed": int(seed),
            "config": dataclasses.asdict(cfg), "classes": list(SYNTHETIC_CLASSES)}


def is_current(out: str | Path, seed: int = 0, config: SyntheticConfig | None = None) -> bool:
    """True when ``out`` holds a complete synthetic set generated with ``seed`` and ``config``."""
    out = Path(out)
    manifest = out / MANIFEST
    if not manifest.is_file():
        return False
    try:
        found = load_json(manifest, "synthetic set manifest")
    except ValueError:
        return False
    cfg = config or SyntheticConfig()
    return (found == _manifest(seed, cfg)
            and all(annotation_file(out, s).is_file() for s in SPLITS))


def make_synthetic(out: str | Path, seed: int = 0, config: SyntheticConfig | None = None, *,
                   reuse: bool = False, **overrides: Any) -> Path:
    """Generate the synthetic set under ``out`` and return ``out`` as a ``Path``.

    Args:
        out: destination root (gets ``Data/VID/...``, ``annotations/...`` and the manifest).
        seed: the seed (int >= 0); the same seed and config give the same files, byte for byte.
        config: a ``SyntheticConfig``; ``overrides`` (field names of ``SyntheticConfig``) change it.
        reuse: return at once if ``out`` already holds the set for this seed and config.

    Regenerating into a folder removes the ``synthetic_*`` video folders of a previous set there.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    base = dataclasses.asdict(config) if config is not None else {}
    cfg = SyntheticConfig.from_overrides(**{**base, **overrides})
    out = Path(out)
    if reuse and is_current(out, seed, cfg):
        return out
    (out / MANIFEST).unlink(missing_ok=True)  # incomplete until the manifest is written again
    for split in SPLITS:
        split_dir = out / "Data" / "VID" / split
        if split_dir.is_dir():
            for stale in split_dir.glob(f"synthetic_{split}_*"):
                shutil.rmtree(stale)
    for split, n in (("train", cfg.train_videos), ("val", cfg.val_videos)):
        _generate_split(out, split, n, int(seed), cfg)
    atomic_write_json(out / MANIFEST, _manifest(seed, cfg), indent=2, sort_keys=True)
    return out


# ----------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SyntheticConfig()
    parser.add_argument("--out", default="data/synthetic", help="destination folder (default: data/synthetic)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--train-videos", type=int, default=d.train_videos)
    parser.add_argument("--val-videos", type=int, default=d.val_videos)
    parser.add_argument("--frames", type=int, default=d.frames, help="frames per video")
    parser.add_argument("--width", type=int, default=d.width)
    parser.add_argument("--height", type=int, default=d.height)
    parser.add_argument("--reuse", action="store_true",
                        help="do nothing if --out already holds the set for this seed and config")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        cfg = SyntheticConfig(train_videos=args.train_videos, val_videos=args.val_videos, frames=args.frames,
                              width=args.width, height=args.height)
        out = make_synthetic(args.out, args.seed, cfg, reuse=args.reuse)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"synthetic set (seed {args.seed}) in {out} ({time.perf_counter() - t0:.1f} s): "
          f"{annotation_file(out, 'train')}, {annotation_file(out, 'val')}")
    return 0
