"""MOT-challenge sequence folders -> CocoVID json (``clab convert-mot``).

Input: one or more sequence folders (or a folder of them), each in the MOT16/17/20 layout::

    <seq>/seqinfo.ini        [Sequence] name, imDir, frameRate, seqLength, imWidth, imHeight, imExt
    <seq>/img1/000001.jpg    frames 1..seqLength (imDir, imExt from seqinfo.ini)
    <seq>/gt/gt.txt          frame, id, bb_left, bb_top, bb_width, bb_height, conf, class, visibility

``gt.txt`` rows are comma-separated; frames are 1-based; columns after the box are optional (``conf``
default 1, ``class`` default 1, ``visibility`` default 1; MOT15's ``-1`` class means 1). ``classes`` maps
the MOT class ids to names: the i-th name is class id i (1-based, so MOT17's list starts ``pedestrian,
person_on_vehicle, car, ...``); a name ``-`` skips that id.

Output: ``<prefix>_train.json`` (and ``<prefix>_val.json`` when a split is asked for), split by video, in
the layout of the ImageNet VID converter: ``categories [{id, name}]`` (ids 1.. in ``classes`` order, skipped
ids left out), ``videos [{id, name, fps, width, height}]``, ``images`` for every frame ``[{id, file_name
'<seq>/img1/000001.jpg' (relative to the image root), height, width, frame_id (0-based), video_id}]``,
``annotations [{id, video_id, image_id, category_id, instance_id, bbox [x, y, w, h], area, iscrowd,
occluded, visibility}]``; ``instance_id`` is unique per (sequence, track id).

Bad input (README "Your own videos"): errors that name the file and line for a missing or malformed
``seqinfo.ini`` field, a malformed row, a frame outside ``1..seqLength``, a track id used with two classes,
a class id beyond the ``classes`` list; counted warnings (the row is dropped) for a box wholly outside the
image or with no area, and for rows of a skipped class; boxes partly outside the image are clipped to it.
Rows with ``conf == 0`` (MOT's "not considered" boxes) become ``iscrowd: true`` ignore regions.
"""
from __future__ import annotations

import argparse
import configparser
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from clab.data.converters.imagenet_vid import ConversionError
from clab.data.converters.streamed_json import StreamedJson

__all__ = ["ConversionError", "MotSequence", "read_seqinfo", "find_sequences", "read_gt", "split_videos",
           "convert", "add_arguments", "run"]

MOT17_CLASSES = ("pedestrian", "person_on_vehicle", "car", "bicycle", "motorbike", "non_mot_vehicle",
                 "static_person", "distractor", "occluder", "occluder_on_ground", "occluder_full", "reflection",
                 "crowd")
SKIP = "-"


@dataclass
class MotSequence:
    """One sequence folder: ``name``, ``folder``, ``im_dir``, ``fps``, ``length``, ``width``, ``height``, ``ext``."""

    name: str
    folder: Path
    im_dir: str
    fps: float
    length: int
    width: int
    height: int
    ext: str
    rows: list[dict] = field(default_factory=list)


def read_seqinfo(folder: str | os.PathLike) -> MotSequence:
    """Parse ``<folder>/seqinfo.ini``; errors name the file and the missing or malformed field."""
    folder = Path(folder)
    path = folder / "seqinfo.ini"
    if not path.is_file():
        raise ConversionError(f"{path} does not exist (expected a MOT sequence folder with seqinfo.ini)")
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as e:
        raise ConversionError(f"{path}: not a valid ini file: {e}") from None
    if not parser.has_section("Sequence"):
        raise ConversionError(f"{path}: missing the [Sequence] section")
    sec = parser["Sequence"]

    def get(key: str, kind=str, default=None):
        if key not in sec:
            if default is not None:
                return default
            raise ConversionError(f"{path}: missing field {key} in [Sequence]")
        try:
            value = kind(sec[key].strip())
        except ValueError:
            raise ConversionError(f"{path}: field {key} must be {kind.__name__}, got {sec[key]!r}") from None
        return value

    seq = MotSequence(name=get("name", str, folder.name), folder=folder, im_dir=get("imDir", str, "img1"),
                      fps=get("frameRate", float), length=get("seqLength", int), width=get("imWidth", int),
                      height=get("imHeight", int), ext=get("imExt", str, ".jpg"))
    for key, value in (("frameRate", seq.fps), ("seqLength", seq.length), ("imWidth", seq.width),
                       ("imHeight", seq.height)):
        if value <= 0:
            raise ConversionError(f"{path}: field {key} must be > 0, got {value}")
    if not seq.ext.startswith("."):
        seq.ext = "." + seq.ext
    return seq


def find_sequences(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Sequence folders among ``paths``: each path is a sequence (has ``seqinfo.ini``) or a folder of them."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "seqinfo.ini").is_file():
            found.append(p)
        elif p.is_dir():
            subs = sorted(q for q in p.iterdir() if (q / "seqinfo.ini").is_file())
            if not subs:
                raise ConversionError(f"{p} is neither a MOT sequence (no seqinfo.ini) nor a folder of sequences")
            found.extend(subs)
        else:
            raise ConversionError(f"{p} does not exist")
    names = Counter(p.name for p in found)
    twice = [n for n, c in names.items() if c > 1]
    if twice:
        raise ConversionError(f"sequence name(s) {twice} appear more than once among {list(map(str, paths))}")
    return found


def read_gt(seq: MotSequence, classes: Sequence[str], warnings: Counter) -> list[dict]:
    """Parse ``<seq>/gt/gt.txt`` into rows ``{frame (0-based), track, box (x1, y1, x2, y2) clipped, cls
    (0-based index into classes), ignore, visibility, line}``; counts dropped rows in ``warnings``."""
    path = seq.folder / "gt" / "gt.txt"
    if not path.is_file():
        raise ConversionError(f"{path} does not exist (every sequence needs its gt/gt.txt)")
    rows = []
    track_class: dict[int, tuple[int, int]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            fields = [v.strip() for v in line.split(",")]
            if len(fields) < 6:
                raise ConversionError(f"{path} line {lineno}: expected at least 6 comma-separated fields "
                                      f"'frame, id, left, top, width, height', got {line!r}")
            try:
                frame, track = int(float(fields[0])), int(float(fields[1]))
                left, top, width, height = (float(v) for v in fields[2:6])
                conf = float(fields[6]) if len(fields) > 6 else 1.0
                cls = int(float(fields[7])) if len(fields) > 7 else 1
                vis = float(fields[8]) if len(fields) > 8 else 1.0
            except ValueError:
                raise ConversionError(f"{path} line {lineno}: expected numbers, got {line!r}") from None
            if not 1 <= frame <= seq.length:
                raise ConversionError(f"{path} line {lineno}: frame {frame} is outside the sequence's frames "
                                      f"1..{seq.length} (seqLength in {seq.folder / 'seqinfo.ini'})")
            if cls == -1:
                cls = 1
            if not 1 <= cls <= len(classes):
                raise ConversionError(f"{path} line {lineno}: class id {cls} is not in the class list "
                                      f"({len(classes)} names: {', '.join(classes)})")
            first = track_class.setdefault(track, (cls, lineno))
            if first[0] != cls:
                raise ConversionError(f"{path} line {lineno}: track id {track} has class {cls} here but class "
                                      f"{first[0]} on line {first[1]}")
            if classes[cls - 1] == SKIP:
                warnings["rows of a skipped class"] += 1
                continue
            x1, y1 = max(0.0, left), max(0.0, top)
            x2, y2 = min(float(seq.width), left + width), min(float(seq.height), top + height)
            if x2 <= x1 or y2 <= y1:
                warnings["boxes outside the image or without area"] += 1
                continue
            if (x1, y1, x2, y2) != (left, top, left + width, top + height):
                warnings["boxes clipped to the image"] += 1
            rows.append(dict(frame=frame - 1, track=track, box=(x1, y1, x2, y2), cls=cls - 1, ignore=conf == 0,
                             visibility=max(0.0, min(1.0, vis)), line=lineno))
    return rows


def split_videos(names: Sequence[str], val_fraction: float = 0.0, val_videos: Sequence[str] = (),
                 seed: int = 0) -> tuple[list[str], list[str]]:
    """Split video names into (train, val): ``val_videos`` by name, else ``round(val_fraction * n)`` videos
    (at least 1 when the fraction is > 0 and there are 2 or more) drawn with ``random.Random(seed)``."""
    names = list(names)
    if val_videos:
        unknown = sorted(set(val_videos) - set(names))
        if unknown:
            raise ConversionError(f"--val-videos names {unknown}, which are not among the videos {names}")
        val = [n for n in names if n in set(val_videos)]
    elif val_fraction > 0:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        count = max(1, round(val_fraction * len(names))) if len(names) > 1 else 0
        val = sorted(random.Random(seed).sample(names, count))
    else:
        val = []
    return [n for n in names if n not in val], val


def write_splits(out: Path, prefix: str, categories: list[dict], videos: list[dict], val_fraction: float,
                 val_videos: Sequence[str], seed: int, warnings: Counter, warn: IO | None) -> dict:
    """Split ``videos`` by video (:func:`split_videos`), write ``<out>/<prefix>_{train,val}.json``
    (:func:`write_cocovid`) and print the counted warnings to ``warn``; returns
    ``{'train': summary, 'val': summary, 'warnings': {what: count}}`` (a split without videos is absent).

    A warning whose text says ``clipped`` or ``missing`` reports something kept; every other one counts
    dropped rows or boxes and says so."""
    train, val = split_videos([v["name"] for v in videos], val_fraction, val_videos, seed)
    summary: dict = {}
    for split, names in (("train", train), ("val", val)):
        if names:
            chosen = [v for v in videos if v["name"] in set(names)]
            summary[split] = write_cocovid(out / f"{prefix}_{split}.json", categories, chosen)
    summary["warnings"] = dict(warnings)
    if warn is not None:
        for what, count in warnings.items():
            kept = "clipped" in what or "missing" in what
            print(f"warning: {count} {what}" + ("" if kept else " (dropped)"), file=warn)
    return summary


def write_cocovid(out_file: Path, categories: list[dict], videos: list[dict]) -> dict:
    """Write videos (dicts with ``name, fps, width, height, frames: [file_name], tracks: rows``) as CocoVID."""
    head = {"categories": categories,
            "videos": [{"id": i, "name": v["name"], "fps": v["fps"], "width": v["width"], "height": v["height"]}
                       for i, v in enumerate(videos, 1)]}
    writer = StreamedJson(out_file, head)
    img_id = ann_id = instance_id = 1
    try:
        for video_id, v in enumerate(videos, 1):
            first_img = img_id
            for frame_id, name in enumerate(v["frames"]):
                writer.add("images", {"file_name": name, "height": v["height"], "width": v["width"], "id": img_id,
                                      "frame_id": frame_id, "video_id": video_id})
                img_id += 1
            instances: dict = {}
            for r in sorted(v["rows"], key=lambda r: (r["frame"], r["line"])):
                if r["track"] not in instances:
                    instances[r["track"]] = instance_id
                    instance_id += 1
                x1, y1, x2, y2 = r["box"]
                w, h = x2 - x1, y2 - y1
                writer.add("annotations", {
                    "id": ann_id, "video_id": video_id, "image_id": first_img + r["frame"],
                    "category_id": categories_index(categories, r["cls_name"]), "instance_id": instances[r["track"]],
                    "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": bool(r.get("ignore", False)),
                    "occluded": bool(r.get("occluded", False)), "visibility": r.get("visibility", 1.0)})
                ann_id += 1
        writer.close()
    except BaseException:
        writer.discard()
        raise
    return {"file": str(out_file), "videos": len(videos), "images": img_id - 1, "annotations": ann_id - 1,
            "instances": instance_id - 1}


def categories_index(categories: list[dict], name: str) -> int:
    for c in categories:
        if c["name"] == name:
            return c["id"]
    raise KeyError(name)


def make_categories(classes: Sequence[str]) -> list[dict]:
    """``[{id, name}]`` for the named classes (``-`` entries skipped), ids 1.. in order."""
    names = [c for c in classes if c != SKIP]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise ConversionError(f"class list names {repeated} more than once")
    if not names:
        raise ConversionError("the class list is empty")
    return [{"id": i, "name": n} for i, n in enumerate(names, 1)]


def convert(paths: Sequence[str | os.PathLike], classes: Sequence[str], out: str | os.PathLike | None = None,
            prefix: str = "mot", img_root: str | os.PathLike | None = None, val_fraction: float = 0.0,
            val_videos: Sequence[str] = (), seed: int = 0, warn: IO | None = sys.stderr) -> dict:
    """Convert MOT sequences to ``<out>/<prefix>_train.json`` (and ``_val.json``).

    Args:
        paths: sequence folders, or folders of sequence folders.
        classes: name of each MOT class id (1-based), ``-`` to skip an id.
        out: output folder (default ``<img_root>/annotations``).
        img_root: folder that ``file_name`` is relative to (the dataset's ``img_prefix``; default: the
            parent of the first sequence).
        val_fraction, val_videos, seed: the split by video (:func:`split_videos`).

    Returns ``{'train': summary, 'val': summary?, 'warnings': {what: count}}``.
    """
    seq_dirs = find_sequences(paths)
    img_root = Path(img_root) if img_root is not None else seq_dirs[0].parent
    out = Path(out) if out is not None else img_root / "annotations"
    categories = make_categories(classes)
    warnings: Counter = Counter()
    videos = []
    for folder in seq_dirs:
        seq = read_seqinfo(folder)
        rows = read_gt(seq, classes, warnings)
        for r in rows:
            r["cls_name"] = classes[r["cls"]]
            r["occluded"] = r["visibility"] < 0.5
        rel = os.path.relpath(folder / seq.im_dir, img_root).replace(os.sep, "/")
        frames = [f"{rel}/{i:06d}{seq.ext}" for i in range(1, seq.length + 1)]
        if not (folder / seq.im_dir / f"{1:06d}{seq.ext}").is_file():
            warnings["sequences whose first frame image is missing"] += 1
        videos.append(dict(name=folder.name, fps=seq.fps, width=seq.width, height=seq.height, frames=frames,
                           rows=rows))
    return write_splits(out, prefix, categories, videos, val_fraction, val_videos, seed, warnings, warn)


def _classes_arg(values: Sequence[str]) -> list[str]:
    names = []
    for v in values:
        names.extend(n.strip() for n in v.split(",") if n.strip())
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sequences", nargs="+", help="MOT sequence folders (with seqinfo.ini), or folders of them")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="name of each MOT class id 1, 2, ... ('-' skips an id; commas also separate); "
                             "default: MOT17's 13 classes")
    parser.add_argument("--out", default=None, help="output folder (default: <img-root>/annotations)")
    parser.add_argument("--prefix", default="mot", help="output names <prefix>_train.json, <prefix>_val.json")
    parser.add_argument("--img-root", default=None,
                        help="folder the image paths are relative to (default: parent of the first sequence)")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of the videos for validation")
    parser.add_argument("--val-videos", nargs="+", default=(), help="these videos for validation (by name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split")


def run(args: argparse.Namespace) -> int:
    classes = _classes_arg(args.classes) if args.classes else list(MOT17_CLASSES)
    try:
        summary = convert(args.sequences, classes, args.out, args.prefix, args.img_root, args.val_fraction,
                          args.val_videos, args.seed, warn=sys.stderr)
    except (ConversionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split in ("train", "val"):
        if split in summary:
            s = summary[split]
            print(f"{split}: {s['file']}: {s['videos']} videos, {s['images']} frames, {s['annotations']} boxes, "
                  f"{s['instances']} tracks")
    return 0
