"""ILSVRC2015 VID/DET annotations -> CocoVID json (SPEC.md 3.1-3.3).

Reads the ILSVRC2015 layout under ``--root``::

    Annotations/VID/{train,val}/<video>/%06d.xml     Data/VID/{train,val}/<video>/%06d.JPEG
    Annotations/DET/<path>.xml                       Data/DET/<path>.JPEG
    Lists/VID_train_15frames.txt  Lists/VID_val_videos.txt  Lists/DET_train_30classes.txt   (FGFA ImageSets)

and writes, with the content and key order of mmtracking's ``imagenet2coco_vid.py`` /
``imagenet2coco_det.py``:

* ``imagenet_vid_train.json`` / ``imagenet_vid_val.json``: ``categories`` (ids 1..30 in
  ``IMAGENET_VID_CLASSES`` order, ``encode_name`` = WordNet id), ``videos [{id, name, vid_train_frames}]``
  in list order, ``images`` for **every** frame 0..n-1 of every listed video (frames without objects
  included) with ``is_vid_train_frame`` True only for the frames of the 15-frames list (train; always False
  in val), and ``annotations [{id, video_id, image_id, category_id, instance_id, bbox [x, y, w, h], area,
  iscrowd, occluded, generated}]`` where ``instance_id`` is a globally unique integer per (video, trackid).
  Ids start at 1.
* ``imagenet_det_30plus1cls.json``: categories 1..30 plus ``{id: 31, name: 'other_categeries',
  encode_name: None}``; first one image per line of ``DET_train_30classes.txt`` with
  ``is_vid_train_frame=True`` (a path listed twice gives two image entries with different ids), then every
  other DET train XML (``ILSVRC2013_train/*/*.xml``, ``ILSVRC2014_train_0000..0006/*.xml``, sorted) with
  ``is_vid_train_frame=False``; objects of a class outside the 30 get category 31. DET images have no
  ``frame_id``/``video_id``, DET annotations no ``instance_id``.

Boxes are the XML integers: ``bbox = [xmin, ymin, xmax - xmin, ymax - ymin]``, ``area = w * h``, no +1.
Degenerate boxes are kept exactly as the published converters keep them: a box with ``xmax <= xmin`` (or
``ymax <= ymin``) is written with ``w <= 0`` (or ``h <= 0``) and ``area <= 0``; the dataset drops such
boxes when it parses the annotations (``w < 1``, ``h < 1`` or ``area <= 0``, SPEC 3.4).

Differences from the published scripts, all stricter: the list files and every listed annotation folder
and frame XML are checked before any XML is parsed (errors name the list file, line and missing path); a
malformed XML or a missing field raises an error naming the file; an object of a class outside the 30 in
a VID XML raises (the published script silently skips it; ImageNet VID has none) unless
``skip_unknown=True``. ``occluded``/``generated`` missing from a VID object count as False.

Work is streamed: one XML is parsed at a time and image/annotation records go to temporary files, so the
memory used does not grow with the number of frames; each json is written atomically at the end.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from tqdm import tqdm

from clab.data.classes import IMAGENET_VID_CLASSES, IMAGENET_VID_WNIDS, OTHER_CATEGORY, WNID_TO_CATEGORY_ID
from clab.data.converters.streamed_json import StreamedJson

__all__ = [
    "ConversionError", "LIST_FILES", "OUTPUT_FILES", "DET_OTHER_SUBSETS", "VideoEntry", "read_vid_list",
    "read_det_list", "check_vid_videos", "parse_xml", "convert_vid", "convert_det", "convert",
    "add_arguments", "run",
]

SPLITS = ("vid_train", "vid_val", "det")
#: split -> list file (under ``Lists/``)
LIST_FILES = {"vid_train": "VID_train_15frames.txt", "vid_val": "VID_val_videos.txt",
              "det": "DET_train_30classes.txt"}
#: split -> output json (under ``--out``)
OUTPUT_FILES = {"vid_train": "imagenet_vid_train.json", "vid_val": "imagenet_vid_val.json",
                "det": "imagenet_det_30plus1cls.json"}
#: the DET train folders whose XMLs are added after the list (``ILSVRC2013_train`` has one level more)
DET_OTHER_SUBSETS = ("train/ILSVRC2013_train",) + tuple(f"train/ILSVRC2014_train_{i:04d}" for i in range(7))


class ConversionError(ValueError):
    """Bad ILSVRC input: the message names the file (and line) and what was expected."""


def vid_categories() -> list[dict]:
    """The 30 VID categories: ``[{id: 1..30, name, encode_name: wnid}]``."""
    return [{"id": i + 1, "name": n, "encode_name": w}
            for i, (n, w) in enumerate(zip(IMAGENET_VID_CLASSES, IMAGENET_VID_WNIDS))]


def det_categories() -> list[dict]:
    """The 30 VID categories plus ``other_categeries`` (id 31, ``encode_name`` None)."""
    return vid_categories() + [dict(OTHER_CATEGORY)]


# ----------------------------------------------------------------------------------------------- lists
@dataclass
class VideoEntry:
    """One video of a VID list: ``name`` like ``train/<...>/<video>`` or ``val/<video>``,
    ``train_frames`` the 0-based key frames (train list only), ``line`` the first line that names it."""

    name: str
    num_frames: int
    line: int
    train_frames: list[int] = field(default_factory=list)


def _list_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    if not path.is_file():
        raise ConversionError(f"list file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if fields:
                yield lineno, fields


def _int_field(path: Path, lineno: int, fields: list[str], i: int, what: str) -> int:
    try:
        return int(fields[i])
    except (IndexError, ValueError):
        raise ConversionError(f"{path} line {lineno}: expected an integer {what} in field {i}, got "
                              f"{' '.join(fields)!r}") from None


def read_vid_list(path: str | os.PathLike, split: str) -> dict[str, VideoEntry]:
    """Parse ``VID_train_15frames.txt`` (``split='vid_train'``) or ``VID_val_videos.txt`` (``'vid_val'``).

    Train lines are ``<video> <?> <1-based frame> <num_frames>``: field 0, field 2 minus 1 and the last
    field are kept. Val lines are ``<video> <start> 0 <num_frames>``: field 0 and the last field.
    Returns the videos in order of first appearance.
    """
    if split not in ("vid_train", "vid_val"):
        raise ValueError(f"split must be 'vid_train' or 'vid_val', got {split!r}")
    path = Path(path)
    videos: dict[str, VideoEntry] = {}
    for lineno, fields in _list_lines(path):
        if len(fields) != 4:
            raise ConversionError(f"{path} line {lineno}: expected 4 fields '<video> <a> <b> <num_frames>', "
                                  f"got {' '.join(fields)!r}")
        name = fields[0]
        num_frames = _int_field(path, lineno, fields, 3, "number of frames")
        if num_frames < 1:
            raise ConversionError(f"{path} line {lineno}: number of frames must be >= 1, got {num_frames}")
        entry = videos.get(name)
        if entry is None:
            entry = videos[name] = VideoEntry(name, num_frames, lineno)
        elif entry.num_frames != num_frames:
            raise ConversionError(f"{path} line {lineno}: video {name} has {num_frames} frames here but "
                                  f"{entry.num_frames} on line {entry.line}")
        elif split == "vid_val":
            raise ConversionError(f"{path} line {lineno}: video {name} is listed twice (first on line "
                                  f"{entry.line})")
        if split == "vid_train":
            frame = _int_field(path, lineno, fields, 2, "1-based frame number") - 1
            if not 0 <= frame < num_frames:
                raise ConversionError(f"{path} line {lineno}: frame {frame + 1} is outside 1..{num_frames}")
            entry.train_frames.append(frame)
    if not videos:
        raise ConversionError(f"list file {path} has no entries")
    return videos


def read_det_list(path: str | os.PathLike) -> list[tuple[int, str]]:
    """Parse ``DET_train_30classes.txt``: ``[(line number, '<path>')]`` with ``<path>`` like
    ``train/ILSVRC2014_train_0000/ILSVRC2014_train_00000663`` (duplicates kept)."""
    path = Path(path)
    entries = [(lineno, fields[0]) for lineno, fields in _list_lines(path)]
    if not entries:
        raise ConversionError(f"list file {path} has no entries")
    return entries


def check_vid_videos(videos: dict[str, VideoEntry], root: str | os.PathLike, list_path: str | os.PathLike,
                     warn: IO | None = sys.stderr) -> None:
    """Check that every listed video has ``Annotations/VID/<video>/%06d.xml`` for frames 0..n-1.

    Raises ``ConversionError`` naming the list file, its line and the missing path. Videos without an
    image folder under ``Data/VID`` only produce a warning on ``warn`` (the json does not need images).
    """
    root = Path(root)
    missing_images = []
    for v in videos.values():
        folder = root / "Annotations" / "VID" / v.name
        if not folder.is_dir():
            raise ConversionError(f"{list_path} line {v.line}: annotation folder {folder} of video {v.name} "
                                  "does not exist")
        present = set(os.listdir(folder))
        for f in range(v.num_frames):
            if f"{f:06d}.xml" not in present:
                raise ConversionError(f"{list_path} line {v.line}: video {v.name} has {v.num_frames} frames "
                                      f"but {folder / f'{f:06d}.xml'} does not exist")
        if not (root / "Data" / "VID" / v.name).is_dir():
            missing_images.append(v.name)
    if missing_images and warn is not None:
        print(f"warning: {len(missing_images)} of {len(videos)} videos in {list_path} have no image folder "
              f"under {root / 'Data' / 'VID'} (first: {missing_images[0]})", file=warn)


# ----------------------------------------------------------------------------------------------- xml
def _text(elem: ET.Element, tag: str, path: Path, where: str) -> str:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ConversionError(f"{path}: missing <{tag}> in {where}")
    return child.text.strip()


def _int(elem: ET.Element, tag: str, path: Path, where: str) -> int:
    text = _text(elem, tag, path, where)
    try:
        return int(text)
    except ValueError:
        raise ConversionError(f"{path}: <{tag}> in {where} must be an integer, got {text!r}") from None


def parse_xml(path: str | os.PathLike, video: bool) -> tuple[int, int, list[dict]]:
    """Parse one ILSVRC annotation XML.

    Returns ``(width, height, objects)``; each object is ``{name, box: (xmin, ymin, xmax, ymax)}`` plus,
    when ``video``, ``trackid`` (str), ``occluded`` and ``generated`` (bool), in XML order.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ConversionError(f"malformed XML {path}: {e}") from None
    except OSError as e:
        raise ConversionError(f"cannot read XML {path}: {e.strerror or e}") from None
    size = root.find("size")
    if size is None:
        raise ConversionError(f"{path}: missing <size>")
    width, height = _int(size, "width", path, "<size>"), _int(size, "height", path, "<size>")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"<object> #{k}"
        box_elem = obj.find("bndbox")
        if box_elem is None:
            raise ConversionError(f"{path}: missing <bndbox> in {where}")
        o = {"name": _text(obj, "name", path, where),
             "box": tuple(_int(box_elem, t, path, f"<bndbox> of {where}") for t in ("xmin", "ymin", "xmax", "ymax"))}
        if video:
            o["trackid"] = _text(obj, "trackid", path, where)
            o["occluded"] = (obj.findtext("occluded") or "0").strip() == "1"
            o["generated"] = (obj.findtext("generated") or "0").strip() == "1"
        objects.append(o)
    return width, height, objects


# ----------------------------------------------------------------------------------------------- VID
def convert_vid(root: str | os.PathLike, videos: dict[str, VideoEntry], out_file: str | os.PathLike, *,
                skip_unknown: bool = False, progress: bool = True) -> dict:
    """Convert the listed VID videos (already checked with ``check_vid_videos``) to ``out_file``.

    Returns a summary ``{videos, images, vid_train_frames, annotations, no_objects, seconds}``.
    """
    root, out_file = Path(root), Path(out_file)
    head = {"categories": vid_categories(),
            "videos": [{"id": i, "name": v.name, "vid_train_frames": list(v.train_frames)}
                       for i, v in enumerate(videos.values(), 1)]}
    writer = StreamedJson(out_file, head)
    img_id = ann_id = instance_id = 1
    no_objects = train_frames = 0
    t0 = time.perf_counter()
    bar = tqdm(total=sum(v.num_frames for v in videos.values()), desc=out_file.name, unit="frame",
               disable=not progress, mininterval=1.0)
    try:
        for video_id, v in enumerate(videos.values(), 1):
            instances: dict[str, int] = {}
            key_frames = set(v.train_frames)
            for frame_id in range(v.num_frames):
                prefix = f"{v.name}/{frame_id:06d}"
                xml_path = root / "Annotations" / "VID" / f"{prefix}.xml"
                width, height, objects = parse_xml(xml_path, video=True)
                is_train = frame_id in key_frames
                train_frames += is_train
                writer.add("images", {"file_name": f"{prefix}.JPEG", "height": height, "width": width,
                                      "id": img_id, "frame_id": frame_id, "video_id": video_id,
                                      "is_vid_train_frame": is_train})
                no_objects += not objects
                for o in objects:
                    category_id = WNID_TO_CATEGORY_ID.get(o["name"])
                    if category_id is None:
                        if skip_unknown:
                            continue
                        raise ConversionError(f"{xml_path}: unknown VID class {o['name']!r} (not one of the "
                                              "30 WordNet ids in clab.data.classes.IMAGENET_VID_WNIDS)")
                    if o["trackid"] not in instances:
                        instances[o["trackid"]] = instance_id
                        instance_id += 1
                    x1, y1, x2, y2 = o["box"]
                    w, h = x2 - x1, y2 - y1
                    writer.add("annotations", {
                        "id": ann_id, "video_id": video_id, "image_id": img_id, "category_id": category_id,
                        "instance_id": instances[o["trackid"]], "bbox": [x1, y1, w, h], "area": w * h,
                        "iscrowd": False, "occluded": o["occluded"], "generated": o["generated"]})
                    ann_id += 1
                img_id += 1
                bar.update(1)
        writer.close()
    except BaseException:
        writer.discard()
        raise
    finally:
        bar.close()
    return {"videos": len(videos), "images": img_id - 1, "vid_train_frames": train_frames,
            "annotations": ann_id - 1, "instances": instance_id - 1, "no_objects": no_objects,
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------- DET
def _det_other_xmls(root: Path, warn: IO | None) -> list[tuple[str, Path]]:
    """``[(image name '<subset>/<...>.JPEG', xml path)]`` for the DET train folders, sorted per folder."""
    base = root / "Annotations" / "DET"
    found = []
    for subset in DET_OTHER_SUBSETS:
        folder = base / subset
        if not folder.is_dir():
            if warn is not None:
                print(f"warning: DET folder {folder} does not exist; no XMLs taken from it", file=warn)
            continue
        pattern = os.path.join(glob.escape(str(folder)), *(["*"] if subset.endswith("2013_train") else []), "*.xml")
        for p in sorted(glob.glob(pattern)):
            rel = Path(p).relative_to(folder).as_posix()
            found.append((f"{subset}/{rel[:-len('.xml')]}.JPEG", Path(p)))
    return found


def check_det_list(entries: list[tuple[int, str]], root: str | os.PathLike, list_path: str | os.PathLike) -> None:
    """Check that every listed DET image has its ``Annotations/DET/<path>.xml`` (error names the line)."""
    base = Path(root) / "Annotations" / "DET"
    for lineno, name in entries:
        xml_path = base / f"{name}.xml"
        if not xml_path.is_file():
            raise ConversionError(f"{list_path} line {lineno}: annotation {xml_path} does not exist")


def convert_det(root: str | os.PathLike, entries: list[tuple[int, str]], out_file: str | os.PathLike, *,
                progress: bool = True, warn: IO | None = sys.stderr) -> dict:
    """Convert the DET list ``entries`` (``read_det_list``), then the other DET train XMLs, to ``out_file``.

    Returns a summary ``{images, vid_train_frames, annotations, other_category, no_objects, seconds}``.
    """
    root, out_file = Path(root), Path(out_file)
    listed = [(f"{name}.JPEG", root / "Annotations" / "DET" / f"{name}.xml") for _, name in entries]
    listed_names = {name for name, _ in listed}
    others = [(n, p) for n, p in _det_other_xmls(root, warn) if n not in listed_names]
    writer = StreamedJson(out_file, {"categories": det_categories()})
    img_id = ann_id = 1
    no_objects = other = 0
    t0 = time.perf_counter()
    jobs: Iterable = [(n, p, True) for n, p in listed] + [(n, p, False) for n, p in others]
    bar = tqdm(jobs, desc=out_file.name, unit="image", disable=not progress, mininterval=1.0)
    try:
        for img_name, xml_path, is_train in bar:
            width, height, objects = parse_xml(xml_path, video=False)
            writer.add("images", {"file_name": img_name, "height": height, "width": width, "id": img_id,
                                  "is_vid_train_frame": is_train})
            no_objects += not objects
            for o in objects:
                category_id = WNID_TO_CATEGORY_ID.get(o["name"], OTHER_CATEGORY["id"])
                other += category_id == OTHER_CATEGORY["id"]
                x1, y1, x2, y2 = o["box"]
                w, h = x2 - x1, y2 - y1
                writer.add("annotations", {"id": ann_id, "image_id": img_id, "category_id": category_id,
                                           "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": False})
                ann_id += 1
            img_id += 1
        writer.close()
    except BaseException:
        writer.discard()
        raise
    finally:
        bar.close()
    return {"images": img_id - 1, "vid_train_frames": len(listed), "annotations": ann_id - 1,
            "other_category": other, "no_objects": no_objects, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------- driver
def convert(root: str | os.PathLike, out: str | os.PathLike | None = None,
            splits: Iterable[str] = SPLITS, lists: str | os.PathLike | None = None, *,
            skip_unknown: bool = False, progress: bool = True, warn: IO | None = sys.stderr) -> dict[str, dict]:
    """Validate, then convert the requested ``splits`` (``vid_train``, ``vid_val``, ``det``).

    Args:
        root: the ILSVRC2015 folder (with ``Annotations/``, ``Data/``).
        out: output folder (default ``<root>/annotations``).
        lists: folder of the FGFA list files (default ``<root>/Lists``).

    Every list and every listed annotation path is checked before the first XML is parsed.
    Returns ``{split: summary}``.
    """
    root = Path(root)
    out = Path(out) if out is not None else root / "annotations"
    lists = Path(lists) if lists is not None else root / "Lists"
    splits = list(dict.fromkeys(splits))
    for s in splits:
        if s not in SPLITS:
            raise ValueError(f"unknown split {s!r}; expected some of {list(SPLITS)}")
    if not root.is_dir():
        raise ConversionError(f"ILSVRC root {root} does not exist")
    jobs = {}
    for s in splits:  # validation pass: cheap (file listings only)
        list_path = lists / LIST_FILES[s]
        if s == "det":
            entries = read_det_list(list_path)
            check_det_list(entries, root, list_path)
            if not (root / "Annotations" / "DET" / "train").is_dir():
                raise ConversionError(f"DET train annotations {root / 'Annotations' / 'DET' / 'train'} do not exist")
            jobs[s] = entries
        else:
            videos = read_vid_list(list_path, s)
            check_vid_videos(videos, root, list_path, warn)
            jobs[s] = videos
    summaries = {}
    for s, job in jobs.items():
        out_file = out / OUTPUT_FILES[s]
        if s == "det":
            summaries[s] = convert_det(root, job, out_file, progress=progress, warn=warn)
        else:
            summaries[s] = convert_vid(root, job, out_file, skip_unknown=skip_unknown, progress=progress)
        summaries[s]["file"] = str(out_file)
    return summaries


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="ILSVRC2015 folder (Annotations/, Data/, Lists/)")
    parser.add_argument("--out", default=None, help="output folder (default: <root>/annotations)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                        help="what to convert (default: all three)")
    parser.add_argument("--lists", default=None,
                        help="folder of VID_train_15frames.txt, VID_val_videos.txt, DET_train_30classes.txt "
                             "(default: <root>/Lists)")
    parser.add_argument("--skip-unknown-classes", action="store_true",
                        help="skip VID objects of a class outside the 30 (as the published script) "
                             "instead of stopping with an error")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        summaries = convert(args.root, args.out, args.splits, args.lists,
                            skip_unknown=args.skip_unknown_classes, progress=not args.no_progress)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for s, summary in summaries.items():
        rate = summary["images"] / max(summary["seconds"], 1e-9)
        details = ", ".join(f"{k}={v}" for k, v in summary.items() if k not in ("file", "seconds"))
        print(f"{s}: {summary['file']}: {details} ({summary['seconds']:.1f} s, {rate:.0f} images/s)")
    return 0
