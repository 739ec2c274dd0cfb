"""CVAT "CVAT for video 1.1" XML exports -> CocoVID json (``clab convert-cvat``).

One XML file is one video (a CVAT task or job)::

    <annotations>
      <meta><task> <name>, <size>, <start_frame>, <stop_frame>, <labels><label><name>car</name>...,
                   <original_size><width>W</width><height>H</height></original_size> </task></meta>
      <track id="0" label="car">
        <box frame="0" keyframe="1" outside="0" occluded="0" xtl="10" ytl="20" xbr="50" ybr="60"/>
        <box frame="9" keyframe="1" outside="1" .../>
      </track>
    </annotations>

Tracks are expanded to every frame as CVAT shows them: a box listed at a frame is used as is; a frame
between two listed boxes of a track gets the box linearly interpolated between them (``occluded`` from
the earlier one), unless the earlier one is ``outside`` (the object has left: no box until the next listed
box); after the track's last listed box, a box that is not ``outside`` stays where it is until the video's
last frame (CVAT's rule). ``outside`` boxes give no annotation. Frames are numbered ``0 .. size-1`` from the
task's ``start_frame``. Frame images are expected at ``--image-pattern`` (default
``images/frame_{frame:06d}.PNG``, the layout of CVAT's export with images) relative to the XML's folder.

Output: ``<prefix>_train.json`` (and ``<prefix>_val.json``), as :mod:`clab.data.converters.mot` writes it,
``occluded`` from CVAT, ``visibility`` 0.5 for occluded boxes and 1 otherwise.

Bad input: errors that name the file and line for malformed XML, a missing size or frame count, a box
frame outside the video, a track id used twice with different labels, a label outside ``classes`` (unless
``skip_unknown``: then a counted warning); counted warnings for boxes clipped to the image or dropped
because nothing of them is inside it.
"""
from __future__ import annotations

import argparse
import os
import sys
import xml.parsers.expat
from collections import Counter
from pathlib import Path
from typing import IO, Sequence

from clab.data.converters.imagenet_vid import ConversionError
from clab.data.converters.mot import make_categories, write_splits

__all__ = ["ConversionError", "parse_cvat_xml", "expand_track", "convert", "add_arguments", "run"]

DEFAULT_IMAGE_PATTERN = "images/frame_{frame:06d}.PNG"
_BOX_KEYS = ("xtl", "ytl", "xbr", "ybr")


def parse_cvat_xml(path: str | os.PathLike) -> dict:
    """Read one CVAT-for-video XML.

    Returns ``{name, size, start_frame, width, height, labels: [names], tracks: [{id, label, line,
    boxes: [{frame, outside, occluded, keyframe, box (x1, y1, x2, y2), line}]}]}``; box frames are made
    relative to ``start_frame``. Raises ``ConversionError`` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"CVAT XML {path} does not exist")
    parser = xml.parsers.expat.ParserCreate()
    stack: list[str] = []
    text: dict[str, str] = {}
    labels: list[str] = []
    tracks: list[dict] = []
    meta_text = ("name", "size", "start_frame", "stop_frame", "width", "height")

    def where() -> str:
        return f"{path} line {parser.CurrentLineNumber}"

    def number(attrs: dict, key: str, kind=float):
        if key not in attrs:
            raise ConversionError(f"{where()}: <box> has no '{key}' attribute")
        try:
            return kind(attrs[key])
        except ValueError:
            raise ConversionError(f"{where()}: <box> attribute {key}={attrs[key]!r} is not a number") from None

    def start(tag: str, attrs: dict) -> None:
        stack.append(tag)
        if tag == "track":
            if "label" not in attrs or "id" not in attrs:
                raise ConversionError(f"{where()}: <track> needs 'id' and 'label' attributes")
            tracks.append(dict(id=attrs["id"], label=attrs["label"], line=parser.CurrentLineNumber, boxes=[]))
        elif tag == "box" and len(stack) >= 2 and stack[-2] == "track":
            box = tuple(number(attrs, k) for k in _BOX_KEYS)
            tracks[-1]["boxes"].append(dict(
                frame=number(attrs, "frame", int), outside=attrs.get("outside", "0") == "1",
                occluded=attrs.get("occluded", "0") == "1", keyframe=attrs.get("keyframe", "1") == "1",
                box=box, line=parser.CurrentLineNumber))
        elif tag in meta_text:
            text[tag + "@" + "/".join(stack[:-1])] = ""

    def end(tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack and stack[-1] in meta_text:
            key = stack[-1] + "@" + "/".join(stack[:-1])
            if key in text:
                text[key] += data

    def end_with_labels(tag: str) -> None:
        if tag == "name" and len(stack) >= 2 and stack[-2] == "label" and "meta" in stack:
            key = "name@" + "/".join(stack[:-1])
            labels.append(text.pop(key, "").strip())
        end(tag)

    parser.StartElementHandler = start
    parser.EndElementHandler = end_with_labels
    parser.CharacterDataHandler = chars
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except xml.parsers.expat.ExpatError as e:
        raise ConversionError(f"malformed XML {path} line {e.lineno}: {xml.parsers.expat.ErrorString(e.code)}") \
            from None

    def meta(field: str, kind=str, required: bool = True):
        for key, value in text.items():
            tag, _, parent = key.partition("@")
            if tag == field and parent.startswith("annotations/meta") and "labels" not in parent \
                    and "segments" not in parent and value.strip():
                try:
                    return kind(value.strip())
                except ValueError:
                    raise ConversionError(f"{path}: <{field}> in <meta> must be {kind.__name__}, got "
                                          f"{value.strip()!r}") from None
        if required:
            raise ConversionError(f"{path}: no <{field}> in <meta> (expected a 'CVAT for video 1.1' export)")
        return None

    width, height = meta("width", int), meta("height", int)
    start_frame = meta("start_frame", int, required=False) or 0
    size = meta("size", int, required=False)
    stop = meta("stop_frame", int, required=False)
    if size is None:
        if stop is None:
            raise ConversionError(f"{path}: no <size> or <stop_frame> in <meta>: the number of frames is unknown")
        size = stop - start_frame + 1
    if size <= 0 or width <= 0 or height <= 0:
        raise ConversionError(f"{path}: <meta> gives size {size} and frame size {width}x{height}; expected > 0")
    for track in tracks:
        for b in track["boxes"]:
            b["frame"] -= start_frame
            if not 0 <= b["frame"] < size:
                raise ConversionError(f"{path} line {b['line']}: box frame {b['frame'] + start_frame} is outside "
                                      f"the video's frames {start_frame}..{start_frame + size - 1}")
    return dict(name=meta("name", str, required=False) or path.stem, size=size, start_frame=start_frame,
                width=width, height=height, labels=labels, tracks=tracks)


def expand_track(boxes: list[dict], size: int) -> list[dict]:
    """Every frame of one track (see the module docstring): ``[{frame, box, occluded, line}]``, frame order.

    Raises ``ValueError`` if two listed boxes share a frame (the caller names the file and line).
    """
    boxes = sorted(boxes, key=lambda b: b["frame"])
    for a, b in zip(boxes, boxes[1:]):
        if a["frame"] == b["frame"]:
            raise ValueError(f"line {b['line']}: a second box at frame {b['frame']} (first on line {a['line']})")
    out = []
    for i, a in enumerate(boxes):
        if a["outside"]:
            continue
        nxt = boxes[i + 1] if i + 1 < len(boxes) else None
        end = nxt["frame"] if nxt is not None else size
        for f in range(a["frame"], end):
            if nxt is None or f == a["frame"]:
                box = a["box"]
            else:
                t = (f - a["frame"]) / (nxt["frame"] - a["frame"])
                box = tuple(p + t * (q - p) for p, q in zip(a["box"], nxt["box"]))
            out.append(dict(frame=f, box=box, occluded=a["occluded"], line=a["line"]))
    return out


def convert(xml_files: Sequence[str | os.PathLike], classes: Sequence[str] | None = None,
            out: str | os.PathLike | None = None, prefix: str = "cvat", img_root: str | os.PathLike | None = None,
            image_pattern: str = DEFAULT_IMAGE_PATTERN, val_fraction: float = 0.0, val_videos: Sequence[str] = (),
            seed: int = 0, skip_unknown: bool = False, warn: IO | None = sys.stderr) -> dict:
    """Convert CVAT-for-video XML files (one video each) to ``<out>/<prefix>_train.json`` (and ``_val``).

    Args:
        xml_files: the exports.
        classes: class names in label order (default: the labels of the first file's ``<meta>``).
        img_root: folder ``file_name`` is relative to (default: the parent of the first XML's folder).
        image_pattern: frame image path relative to each XML's folder, with ``{frame}`` (0-based).
        skip_unknown: drop (and count) tracks whose label is not in ``classes`` instead of stopping.

    Returns ``{'train': summary, 'val': summary?, 'warnings': {what: count}}``.
    """
    if not xml_files:
        raise ConversionError("no CVAT XML file given")
    parsed = [(Path(p), parse_cvat_xml(p)) for p in xml_files]
    classes = list(classes) if classes else list(parsed[0][1]["labels"])
    if not classes:
        raise ConversionError(f"{parsed[0][0]}: no labels in <meta>; pass the class names with --classes")
    categories = make_categories(classes)
    img_root = Path(img_root) if img_root is not None else parsed[0][0].resolve().parent.parent
    out = Path(out) if out is not None else img_root / "annotations"
    warnings: Counter = Counter()
    videos, names = [], Counter()
    for path, doc in parsed:
        name = doc["name"]
        names[name] += 1
        if names[name] > 1:
            name = f"{name}_{names[name]}"
        seen: dict[str, tuple[str, int]] = {}
        rows = []
        for track in doc["tracks"]:
            first = seen.setdefault(track["id"], (track["label"], track["line"]))
            if first[0] != track["label"]:
                raise ConversionError(f"{path} line {track['line']}: track id {track['id']} has label "
                                      f"{track['label']!r} here but {first[0]!r} on line {first[1]}")
            if track["label"] not in classes:
                if skip_unknown:
                    warnings["tracks with a label outside the classes"] += 1
                    continue
                raise ConversionError(f"{path} line {track['line']}: label {track['label']!r} is not one of the "
                                      f"classes {classes}")
            try:
                expanded = expand_track(track["boxes"], doc["size"])
            except ValueError as e:
                raise ConversionError(f"{path} {e}") from None
            for b in expanded:
                x1, y1, x2, y2 = b["box"]
                cx1, cy1 = max(0.0, x1), max(0.0, y1)
                cx2, cy2 = min(float(doc["width"]), x2), min(float(doc["height"]), y2)
                if cx2 <= cx1 or cy2 <= cy1:
                    warnings["boxes outside the image or without area"] += 1
                    continue
                if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
                    warnings["boxes clipped to the image"] += 1
                rows.append(dict(frame=b["frame"], track=f"{track['id']}", box=(cx1, cy1, cx2, cy2),
                                 cls_name=track["label"], occluded=b["occluded"],
                                 visibility=0.5 if b["occluded"] else 1.0, line=b["line"]))
        base = path.resolve().parent
        frames = []
        for f in range(doc["size"]):
            rel = os.path.relpath(base / image_pattern.format(frame=f), img_root.resolve())
            frames.append(rel.replace(os.sep, "/"))
        if not (img_root / frames[0]).is_file():
            warnings["videos whose first frame image is missing"] += 1
        videos.append(dict(name=name, fps=None, width=doc["width"], height=doc["height"], frames=frames, rows=rows))
    return write_splits(out, prefix, categories, videos, val_fraction, val_videos, seed, warnings, warn)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("xml", nargs="+", help="CVAT 'for video 1.1' XML exports, one per video")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="class names (commas also separate); default: the labels of the first file")
    parser.add_argument("--out", default=None, help="output folder (default: <img-root>/annotations)")
    parser.add_argument("--prefix", default="cvat", help="output names <prefix>_train.json, <prefix>_val.json")
    parser.add_argument("--img-root", default=None,
                        help="folder the image paths are relative to (default: parent of the first XML's folder)")
    parser.add_argument("--image-pattern", default=DEFAULT_IMAGE_PATTERN,
                        help=f"frame image path relative to the XML's folder (default {DEFAULT_IMAGE_PATTERN})")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of the videos for validation")
    parser.add_argument("--val-videos", nargs="+", default=(), help="these videos for validation (by name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split")
    parser.add_argument("--skip-unknown-labels", action="store_true",
                        help="drop tracks whose label is not a class (counted) instead of stopping")


def run(args: argparse.Namespace) -> int:
    from clab.data.converters.mot import _classes_arg

    classes = _classes_arg(args.classes) if args.classes else None
    try:
        summary = convert(args.xml, classes, args.out, args.prefix, args.img_root, args.image_pattern,
                          args.val_fraction, args.val_videos, args.seed, args.skip_unknown_labels,
                          warn=sys.stderr)
    except (ConversionError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split in ("train", "val"):
        if split in summary:
            s = summary[split]
            print(f"{split}: {s['file']}: {s['videos']} videos, {s['images']} frames, {s['annotations']} boxes, "
                  f"{s['instances']} tracks")
    return 0
