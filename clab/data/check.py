"""``clab check-data``: a preflight of the data before a long run.

Two kinds of input:

- ``--root data/ILSVRC``: the ILSVRC2015 layout (``Data/``, ``Annotations/`` for VID and DET) and the FGFA
  lists in ``Lists/`` (or ``--lists``). Every listed VID snippet must have its image folder with
  ``num_frames`` JPEGs and its annotation folder with as many XMLs; every line of the DET list its JPEG and
  XML. The counts are compared with the published ones (:data:`PUBLISHED`: VID train 3,862 snippets /
  1,122,397 frames, val 555 / 176,126, the DET 30-class list 53,639 lines) in a table of expected vs found;
  ``--subset`` compares the disk with the lists only (a partial copy).
- ``--ann FILE.json --img-prefix DIR``: a CocoVID json (a converter's output): it loads with
  :func:`clab.data.coco_video.load_coco_json`, every image file exists, every box lies inside its image
  (1 px tolerance) with a positive size, and each video's frame ids are 0..n-1 without gaps.

Both then decode a sample of the images (``--sample N`` spread over the data, default 1,000; all of them
with ``--all``) in parallel threads with a progress bar: a file that does not decode, a JPEG without its
end marker (truncated) or an image whose size differs from its annotation is a problem. The command prints
the table and the problems (first 20 of each kind, with counts) and exits with 1 if there is any.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["PUBLISHED", "Report", "check_ilsvrc", "check_cocovid", "check_images", "add_arguments", "run"]

#: published sizes of the ILSVRC2015 VID/DET data and the FGFA lists (SPEC 3.1)
PUBLISHED = {
    "VID train snippets": 3862, "VID train frames": 1122397, "VID train key frames (15-frames list)": 57834,
    "VID val snippets": 555, "VID val frames": 176126, "DET 30-class list lines": 53639,
    "DET 30-class list images (unique)": 53237,
}
SHOW = 20


@dataclass
class Report:
    """``rows``: (quantity, expected, found); ``problems``: kind -> messages; ``images``: (path, width,
    height) to decode (width/height None when unknown)."""

    rows: list[tuple[str, object, object]] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    images: list[tuple[Path, int | None, int | None]] = field(default_factory=list)

    def problem(self, kind: str, message: str) -> None:
        self.problems[kind].append(message)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def problems_except(self, *kinds: str) -> dict[str, list[str]]:
        """The problems of every kind but ``kinds`` (e.g. ``'counts'``: a partial copy is still usable)."""
        return {k: v for k, v in self.problems.items() if v and k not in kinds}

    def row(self, quantity: str, expected, found) -> None:
        self.rows.append((quantity, expected, found))

    def format(self) -> str:
        lines = []
        if self.rows:
            width = max(len(r[0]) for r in self.rows)
            lines.append(f"{'quantity':<{width}}  {'expected':>12}  {'found':>12}")
            for q, e, f in self.rows:
                mark = "" if e is None or e == f else "   <-- differs"
                lines.append(f"{q:<{width}}  {_fmt(e):>12}  {_fmt(f):>12}{mark}")
        total = sum(len(v) for v in self.problems.values())
        if total:
            lines.append(f"\n{total} problem(s):")
            for kind, messages in self.problems.items():
                if not messages:
                    continue
                lines.append(f"- {kind}: {len(messages)}")
                lines.extend(f"    {m}" for m in messages[:SHOW])
                if len(messages) > SHOW:
                    lines.append(f"    ... and {len(messages) - SHOW} more")
        else:
            lines.append("\nno problems found")
        return "\n".join(lines)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def _count_files(folder: Path, suffix: str) -> int:
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.name.endswith(suffix))
    except FileNotFoundError:
        return -1


# ---------------------------------------------------------------------------------------------- ILSVRC
def check_ilsvrc(root: str | os.PathLike, lists: str | os.PathLike | None = None, subset: bool = False) -> Report:
    """Check the ILSVRC2015 layout and the FGFA lists under ``root`` (see the module docstring)."""
    from .converters.imagenet_vid import LIST_FILES, ConversionError, read_det_list, read_vid_list

    root = Path(root)
    lists = Path(lists) if lists is not None else root / "Lists"
    rep = Report()
    if not root.is_dir():
        rep.problem("layout", f"ILSVRC root {root} does not exist")
        return rep
    for sub in ("Data/VID/train", "Data/VID/val", "Annotations/VID/train", "Annotations/VID/val",
                "Data/DET/train", "Annotations/DET/train"):
        if not (root / sub).is_dir():
            rep.problem("layout", f"folder {root / sub} does not exist")
    for split, what in (("vid_train", "VID train"), ("vid_val", "VID val")):
        list_path = lists / LIST_FILES[split]
        try:
            videos = read_vid_list(list_path, split)
        except ConversionError as e:
            rep.problem("lists", str(e))
            rep.row(f"{what} snippets", PUBLISHED[f"{what} snippets"], None)
            rep.row(f"{what} frames", PUBLISHED[f"{what} frames"], None)
            continue
        listed_frames = sum(v.num_frames for v in videos.values())
        present = frames_on_disk = 0
        for v in videos.values():
            folder = root / "Data" / "VID" / v.name
            n = _count_files(folder, ".JPEG")
            if n < 0:
                rep.problem("missing snippets", f"{list_path} line {v.line}: snippet {v.name} has no image "
                                                f"folder {folder}")
                continue
            present += 1
            frames_on_disk += n
            if n < v.num_frames:
                rep.problem("missing frames", f"{folder}: {n} JPEG frames, the list says {v.num_frames}")
            xml_folder = root / "Annotations" / "VID" / v.name
            n_xml = _count_files(xml_folder, ".xml")
            if n_xml < 0:
                rep.problem("missing annotations", f"{list_path} line {v.line}: no annotation folder {xml_folder}")
            elif n_xml < v.num_frames:
                rep.problem("missing annotations", f"{xml_folder}: {n_xml} XMLs, the list says {v.num_frames}")
            for f in _sample_ids(v.num_frames, 3):
                rep.images.append((folder / f"{f:06d}.JPEG", None, None))
        expected_snippets = len(videos) if subset else PUBLISHED[f"{what} snippets"]
        expected_frames = listed_frames if subset else PUBLISHED[f"{what} frames"]
        rep.row(f"{what} snippets (list)", None if subset else PUBLISHED[f"{what} snippets"], len(videos))
        rep.row(f"{what} snippets (on disk)", expected_snippets, present)
        rep.row(f"{what} frames (list)", None if subset else PUBLISHED[f"{what} frames"], listed_frames)
        rep.row(f"{what} frames (on disk)", expected_frames, frames_on_disk)
        if split == "vid_train":
            keys = sum(len(v.train_frames) for v in videos.values())
            rep.row("VID train key frames (15-frames list)",
                    None if subset else PUBLISHED["VID train key frames (15-frames list)"], keys)
            if not subset and keys != PUBLISHED["VID train key frames (15-frames list)"]:
                rep.problem("counts", f"{list_path}: {keys:,} key frames, published "
                                      f"{PUBLISHED['VID train key frames (15-frames list)']:,}")
        if not subset:
            for label, exp, got in ((f"{what} snippets", PUBLISHED[f"{what} snippets"], len(videos)),
                                    (f"{what} frames", PUBLISHED[f"{what} frames"], listed_frames)):
                if exp != got:
                    rep.problem("counts", f"{list_path}: {label}: {got:,} listed, published {exp:,} (use "
                                          f"--subset for a partial copy)")
    det_list = lists / LIST_FILES["det"]
    try:
        entries = read_det_list(det_list)
    except ConversionError as e:
        rep.problem("lists", str(e))
        rep.row("DET 30-class list lines", PUBLISHED["DET 30-class list lines"], None)
    else:
        unique = list(dict.fromkeys(name for _, name in entries))
        found = 0
        for lineno, name in entries:
            img = root / "Data" / "DET" / f"{name}.JPEG"
            xml_path = root / "Annotations" / "DET" / f"{name}.xml"
            if not img.is_file():
                rep.problem("missing DET images", f"{det_list} line {lineno}: {img} does not exist")
            else:
                found += 1
            if not xml_path.is_file():
                rep.problem("missing annotations", f"{det_list} line {lineno}: {xml_path} does not exist")
        rep.row("DET 30-class list lines", None if subset else PUBLISHED["DET 30-class list lines"], len(entries))
        rep.row("DET 30-class list images (unique)", None if subset else PUBLISHED["DET 30-class list images (unique)"],
                len(unique))
        rep.row("DET listed images on disk", len(entries), found)
        if not subset and len(entries) != PUBLISHED["DET 30-class list lines"]:
            rep.problem("counts", f"{det_list}: {len(entries):,} lines, published "
                                  f"{PUBLISHED['DET 30-class list lines']:,} (use --subset for a partial copy)")
        step = max(1, len(unique) // 300)
        rep.images.extend((root / "Data" / "DET" / f"{n}.JPEG", None, None) for n in unique[::step])
    rep.images = [im for im in rep.images if im[0].is_file()]
    return rep


def _sample_ids(n: int, k: int) -> list[int]:
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)}) if n > 0 else []


# ---------------------------------------------------------------------------------------------- CocoVID
def check_cocovid(ann_file: str | os.PathLike, img_prefix: str | os.PathLike | None = None) -> Report:
    """Check a CocoVID json (see the module docstring); ``img_prefix`` defaults to the json's folder's
    parent (where the converters' ``annotations/`` folder lives)."""
    from .coco_video import load_coco_json

    ann_file = Path(ann_file)
    prefix = Path(img_prefix) if img_prefix is not None else ann_file.resolve().parent.parent
    rep = Report()
    try:
        data = load_coco_json(str(ann_file), require_video=True)
    except (FileNotFoundError, ValueError) as e:
        rep.problem("annotation file", str(e))
        return rep
    images = {img["id"]: img for img in data["images"]}
    missing = 0
    for img in data["images"]:
        path = prefix / img["file_name"]
        if not path.is_file():
            missing += 1
            rep.problem("missing images", f"{ann_file}: image id {img['id']}: {path} does not exist")
        else:
            rep.images.append((path, img.get("width"), img.get("height")))
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        if w <= 0 or h <= 0:
            rep.problem("boxes", f"{ann_file}: annotation id {ann['id']}: box {ann['bbox']} has no area")
        elif x < -1 or y < -1 or x + w > img["width"] + 1 or y + h > img["height"] + 1:
            rep.problem("boxes", f"{ann_file}: annotation id {ann['id']}: box {ann['bbox']} [x, y, w, h] is not "
                                 f"inside its {img['width']}x{img['height']} image (id {img['id']})")
    frames = defaultdict(list)
    for img in data["images"]:
        frames[img["video_id"]].append(img["frame_id"])
    names = {v["id"]: v.get("name", v["id"]) for v in data.get("videos", [])}
    for vid, ids in frames.items():
        ids = sorted(ids)
        if ids != list(range(len(ids))):
            gaps = sorted(set(range(max(ids) + 1)) - set(ids))[:5]
            dup = len(ids) != len(set(ids))
            rep.problem("frame ids", f"{ann_file}: video {names.get(vid, vid)} (id {vid}): frame ids are not "
                                     f"0..{len(ids) - 1}" + (f"; missing {gaps}" if gaps else "")
                                     + ("; some repeated" if dup else ""))
    rep.row("videos", None, len(data.get("videos", [])))
    rep.row("images", len(data["images"]), len(data["images"]) - missing)
    rep.row("annotations", None, len(data["annotations"]))
    rep.row("categories", None, len(data["categories"]))
    return rep


# ---------------------------------------------------------------------------------------------- decoding
def _decode(item: tuple[Path, int | None, int | None]) -> str | None:
    """None if the image decodes (and has the expected size), else the problem."""
    import cv2
    import numpy as np

    path, width, height = item
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"{path}: cannot read ({e.strerror})"
    if path.suffix.lower() in (".jpeg", ".jpg"):
        if not data.startswith(b"\xff\xd8"):
            return f"{path}: not a JPEG file (no start marker)"
        if b"\xff\xd9" not in data[-1024:]:
            return f"{path}: truncated JPEG (no end marker)"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return f"{path}: cannot be decoded as an image"
    if width is not None and height is not None and image.shape[:2] != (height, width):
        return f"{path}: is {image.shape[1]}x{image.shape[0]}, the annotation says {width}x{height}"
    return None


def check_images(items: Sequence[tuple[Path, int | None, int | None]], workers: int | None = None,
                 progress: bool = True) -> list[str]:
    """Decode ``items`` (path, expected width, expected height) in parallel threads; returns the problems."""
    from tqdm.auto import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    problems = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in tqdm(pool.map(_decode, items, chunksize=16), total=len(items), desc="decoding", unit="image",
                           disable=not progress, mininterval=0.5, file=sys.stderr):
            if result is not None:
                problems.append(result)
    return problems


def _spread(items: list, k: int) -> list:
    if k >= len(items):
        return list(items)
    return [items[round(i * (len(items) - 1) / max(1, k - 1))] for i in range(k)]


def check(root=None, ann=None, img_prefix=None, lists=None, subset=False, all_images=False, sample=1000,
          workers=None, progress=True) -> Report:
    """The whole preflight: layout/lists (``root``) or json (``ann``) checks, then the decoding check."""
    if (root is None) == (ann is None):
        raise ValueError("check-data: give either --root (ILSVRC2015) or --ann (a CocoVID json)")
    rep = check_ilsvrc(root, lists, subset) if root is not None else check_cocovid(ann, img_prefix)
    if all_images and root is not None:
        rep.images = list(_all_ilsvrc_images(Path(root), rep.images))
    items = rep.images if all_images else _spread(rep.images, sample)
    for message in check_images(items, workers, progress):
        rep.problem("images that do not decode", message)
    rep.row("images decoded", len(items), len(items) - len(rep.problems.get("images that do not decode", [])))
    return rep


def _all_ilsvrc_images(root: Path, sampled: Iterable) -> Iterable:
    """Every JPEG under ``Data/VID`` and ``Data/DET`` (for ``--all``)."""
    seen = set()
    for base in (root / "Data" / "VID", root / "Data" / "DET"):
        for dirpath, _, names in os.walk(base):
            for n in sorted(names):
                if n.endswith(".JPEG"):
                    p = Path(dirpath) / n
                    seen.add(p)
                    yield p, None, None
    for item in sampled:
        if item[0] not in seen:
            yield item


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, help="ILSVRC2015 folder (Data/, Annotations/, Lists/)")
    parser.add_argument("--lists", default=None, help="folder of the FGFA lists (default: <root>/Lists)")
    parser.add_argument("--subset", action="store_true",
                        help="a partial copy: compare the disk with the lists, not with the published counts")
    parser.add_argument("--ann", default=None, help="a CocoVID json to check instead of an ILSVRC tree")
    parser.add_argument("--img-prefix", default=None,
                        help="folder the json's file_name values are relative to (default: the json's "
                             "folder's parent)")
    parser.add_argument("--all", dest="all_images", action="store_true", help="decode every image, not a sample")
    parser.add_argument("--sample", type=int, default=1000, help="images to decode without --all (default 1000)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: CPU count, <= 8)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        rep = check(args.root, args.ann, args.img_prefix, args.lists, args.subset, args.all_images, args.sample,
                    args.workers, not args.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(rep.format())
    return 0 if rep.ok else 1
