"""The ImageNet VID/DET converter on a miniature ILSVRC2015 tree written to disk (SPEC 3.1-3.3)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clab.cli import main as cli_main
from clab.data.classes import IMAGENET_VID_CLASSES, IMAGENET_VID_WNIDS
from clab.data.converters.imagenet_vid import ConversionError, convert

AIRPLANE, DOG, ZEBRA, CAR, BIRD = "n02691156", "n02084071", "n02391049", "n02958343", "n01503061"
PERSON = "n00007846"  # a DET class outside the 30 VID classes
TRAIN0 = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
TRAIN1 = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000001"
VAL0 = "val/ILSVRC2015_val_00000000"
DET_A = "train/ILSVRC2014_train_0000/ILSVRC2014_train_00000001"      # listed twice
DET_B = "train/ILSVRC2013_train/n01503061/n01503061_2"               # listed, nested 2013 layout
DET_C = "train/ILSVRC2013_train/n01503061/n01503061_1"               # not listed
DET_D = "train/ILSVRC2014_train_0000/ILSVRC2014_train_00000002"      # not listed


def _xml(width: int, height: int, objects: list[dict]) -> str:
    """An ILSVRC-style annotation (VID objects have trackid/occluded/generated, DET objects do not)."""
    parts = [f"<annotation><folder>x</folder><filename>y</filename><source><database>ILSVRC_2015</database>"
             f"</source><size><width>{width}</width><height>{height}</height></size>"]
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        extra = ""
        if "trackid" in o:
            extra = (f"<occluded>{int(o.get('occluded', 0))}</occluded>"
                     f"<generated>{int(o.get('generated', 0))}</generated>")
            parts.append(f"<object><trackid>{o['trackid']}</trackid>")
        else:
            parts.append("<object>")
        parts.append(f"<name>{o['name']}</name><bndbox><xmax>{x2}</xmax><xmin>{x1}</xmin><ymax>{y2}</ymax>"
                     f"<ymin>{y1}</ymin></bndbox>{extra}</object>")
    parts.append("</annotation>")
    return "".join(parts)


# frame -> objects; boxes are (xmin, ymin, xmax, ymax)
TRAIN0_FRAMES = [
    [dict(trackid=0, name=AIRPLANE, box=(10, 20, 110, 90))],
    [],
    [dict(trackid=0, name=AIRPLANE, box=(12, 20, 112, 90)), dict(trackid=1, name=DOG, box=(50, 40, 80, 60))],
    [dict(trackid=0, name=AIRPLANE, box=(14, 21, 114, 91), occluded=1),
     dict(trackid=1, name=DOG, box=(52, 40, 82, 60))],
    [dict(trackid=1, name=DOG, box=(54, 40, 84, 60))],
]
TRAIN1_FRAMES = [
    [dict(trackid=0, name=ZEBRA, box=(5, 5, 45, 35))],
    [dict(trackid=0, name=ZEBRA, box=(6, 5, 46, 35))],
    [dict(trackid=0, name=ZEBRA, box=(7, 5, 47, 35))],
    [dict(trackid=0, name=ZEBRA, box=(30, 5, 30, 35), generated=1)],  # degenerate: xmax == xmin
]
VAL0_FRAMES = [
    [dict(trackid=3, name=CAR, box=(0, 0, 60, 40))],
    [dict(trackid=3, name=CAR, box=(2, 0, 62, 40), occluded=1)],
    [dict(trackid=3, name=CAR, box=(4, 1, 64, 41), generated=1)],
]
DET_XMLS = {
    DET_A: (300, 200, [dict(name=DOG, box=(1, 2, 101, 52)), dict(name=PERSON, box=(150, 10, 200, 190))]),
    DET_B: (120, 90, [dict(name=BIRD, box=(3, 4, 13, 24))]),
    DET_C: (64, 48, []),
    DET_D: (80, 60, [dict(name=PERSON, box=(0, 0, 10, 10))]),
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_tree(root: Path) -> Path:
    """A miniature ILSVRC2015 tree: 2 VID train videos, 1 val video, 4 DET images, FGFA lists."""
    for video, frames, (w, h) in ((TRAIN0, TRAIN0_FRAMES, (200, 100)), (TRAIN1, TRAIN1_FRAMES, (64, 48)),
                                  (VAL0, VAL0_FRAMES, (128, 72))):
        (root / "Data" / "VID" / video).mkdir(parents=True)
        for f, objects in enumerate(frames):
            _write(root / "Annotations" / "VID" / video / f"{f:06d}.xml", _xml(w, h, objects))
    for path, (w, h, objects) in DET_XMLS.items():
        _write(root / "Annotations" / "DET" / f"{path}.xml", _xml(w, h, objects))
    _write(root / "Lists" / "VID_train_15frames.txt",
           f"{TRAIN0} 1 2 5\n{TRAIN0} 1 4 5\n{TRAIN1} 1 1 4\n")
    _write(root / "Lists" / "VID_val_videos.txt", f"{VAL0} 1 0 3\n")
    _write(root / "Lists" / "DET_train_30classes.txt", f"{DET_A} 1\n{DET_B} 1\n{DET_A} 1\n")
    return root


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "ILSVRC")


def _categories() -> list[dict]:
    return [{"id": i + 1, "name": n, "encode_name": w}
            for i, (n, w) in enumerate(zip(IMAGENET_VID_CLASSES, IMAGENET_VID_WNIDS))]


def _cat(wnid: str) -> int:
    return IMAGENET_VID_WNIDS.index(wnid) + 1


def _vid_ann(ann_id, video_id, image_id, wnid, instance_id, box, occluded=False, generated=False):
    x1, y1, x2, y2 = box
    return {"id": ann_id, "video_id": video_id, "image_id": image_id, "category_id": _cat(wnid),
            "instance_id": instance_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
            "iscrowd": False, "occluded": occluded, "generated": generated}


def expected_train() -> dict:
    def img(i, video, f, vid, w, h, key):
        return {"file_name": f"{video}/{f:06d}.JPEG", "height": h, "width": w, "id": i, "frame_id": f,
                "video_id": vid, "is_vid_train_frame": key}

    images = [img(1 + f, TRAIN0, f, 1, 200, 100, f in (1, 3)) for f in range(5)] + \
             [img(6 + f, TRAIN1, f, 2, 64, 48, f == 0) for f in range(4)]
    anns = [
        _vid_ann(1, 1, 1, AIRPLANE, 1, (10, 20, 110, 90)),
        _vid_ann(2, 1, 3, AIRPLANE, 1, (12, 20, 112, 90)),
        _vid_ann(3, 1, 3, DOG, 2, (50, 40, 80, 60)),
        _vid_ann(4, 1, 4, AIRPLANE, 1, (14, 21, 114, 91), occluded=True),
        _vid_ann(5, 1, 4, DOG, 2, (52, 40, 82, 60)),
        _vid_ann(6, 1, 5, DOG, 2, (54, 40, 84, 60)),
        _vid_ann(7, 2, 6, ZEBRA, 3, (5, 5, 45, 35)),
        _vid_ann(8, 2, 7, ZEBRA, 3, (6, 5, 46, 35)),
        _vid_ann(9, 2, 8, ZEBRA, 3, (7, 5, 47, 35)),
        _vid_ann(10, 2, 9, ZEBRA, 3, (30, 5, 30, 35), generated=True),
    ]
    return {"categories": _categories(),
            "videos": [{"id": 1, "name": TRAIN0, "vid_train_frames": [1, 3]},
                       {"id": 2, "name": TRAIN1, "vid_train_frames": [0]}],
            "images": images, "annotations": anns}


def expected_val() -> dict:
    images = [{"file_name": f"{VAL0}/{f:06d}.JPEG", "height": 72, "width": 128, "id": f + 1, "frame_id": f,
               "video_id": 1, "is_vid_train_frame": False} for f in range(3)]
    anns = [_vid_ann(1, 1, 1, CAR, 1, (0, 0, 60, 40)),
            _vid_ann(2, 1, 2, CAR, 1, (2, 0, 62, 40), occluded=True),
            _vid_ann(3, 1, 3, CAR, 1, (4, 1, 64, 41), generated=True)]
    return {"categories": _categories(), "videos": [{"id": 1, "name": VAL0, "vid_train_frames": []}],
            "images": images, "annotations": anns}


def expected_det() -> dict:
    cats = _categories() + [{"id": 31, "name": "other_categeries", "encode_name": None}]
    images, anns = [], []
    # the list in order (DET_A twice, as two entries), then unlisted XMLs: 2013 folder first, then 2014_0000
    for path, is_train in ((DET_A, True), (DET_B, True), (DET_A, True), (DET_C, False), (DET_D, False)):
        w, h, objects = DET_XMLS[path]
        images.append({"file_name": f"{path}.JPEG", "height": h, "width": w, "id": len(images) + 1,
                       "is_vid_train_frame": is_train})
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            cat = _cat(o["name"]) if o["name"] in IMAGENET_VID_WNIDS else 31
            anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": cat,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": False})
    return {"categories": cats, "images": images, "annotations": anns}


def test_converts_vid_train_val_and_det_exactly(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotations"
    summaries = convert(tree, out, progress=False, warn=None)
    assert sorted(p.name for p in out.iterdir()) == [
        "imagenet_det_30plus1cls.json", "imagenet_vid_train.json", "imagenet_vid_val.json"]  # no temp files

    for name, expected in (("imagenet_vid_train.json", expected_train()),
                           ("imagenet_vid_val.json", expected_val()),
                           ("imagenet_det_30plus1cls.json", expected_det())):
        text = (out / name).read_text()
        assert json.loads(text) == expected, name
        # same key order and separators as json.dump of the published converter's dicts
        assert text == json.dumps(expected), name

    train = json.loads((out / "imagenet_vid_train.json").read_text())
    # the degenerate box is kept with w == 0 and area 0 (the dataset filters it later)
    assert train["annotations"][-1]["bbox"] == [30, 5, 0, 30] and train["annotations"][-1]["area"] == 0
    # instance ids are unique across videos although both videos use trackid 0
    per_instance = {(a["video_id"], a["instance_id"]) for a in train["annotations"]}
    assert len({i for _, i in per_instance}) == len(per_instance) == 3
    assert summaries["vid_train"]["images"] == 9 and summaries["vid_train"]["vid_train_frames"] == 3
    assert summaries["vid_train"]["no_objects"] == 1
    assert summaries["det"]["other_category"] == 3  # DET_A twice + DET_D and summaries["det"]["images"] == 5


def test_default_output_folder_and_split_selection(tree: Path) -> None:
    convert(tree, splits=["vid_val"], progress=False, warn=None)
    assert sorted(p.name for p in (tree / "annotations").iterdir()) == ["imagenet_vid_val.json"]


def test_cli_converts_and_reports_errors(tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli_out"
    rc = cli_main(["convert-imagenet-vid", "--root", str(tree), "--out", str(out), "--splits", "vid_train",
                   "det", "--no-progress"])
    assert rc == 0
    assert json.loads((out / "imagenet_vid_train.json").read_text()) == expected_train()
    assert json.loads((out / "imagenet_det_30plus1cls.json").read_text()) == expected_det()
    assert "images/s" in capsys.readouterr().out

    (tree / "Lists" / "VID_val_videos.txt").unlink()
    rc = cli_main(["convert-imagenet-vid", "--root", str(tree), "--out", str(out), "--splits", "vid_val",
                   "--no-progress"])
    assert rc == 1
    assert "VID_val_videos.txt does not exist" in capsys.readouterr().err


def test_lists_folder_option(tree: Path, tmp_path: Path) -> None:
    lists = tree / "Lists"
    moved = tmp_path / "ImageSets"
    lists.rename(moved)
    with pytest.raises(ConversionError, match="VID_val_videos.txt does not exist"):
        convert(tree, tmp_path / "a", splits=["vid_val"], progress=False, warn=None)
    convert(tree, tmp_path / "a", splits=["vid_val"], lists=moved, progress=False, warn=None)
    assert json.loads((tmp_path / "a" / "imagenet_vid_val.json").read_text()) == expected_val()


def test_missing_list_file_fails_before_any_conversion(tree: Path, tmp_path: Path) -> None:
    (tree / "Lists" / "DET_train_30classes.txt").unlink()
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as e:
        convert(tree, out, progress=False, warn=None)  # vid_train and vid_val are valid but come first
    assert "DET_train_30classes.txt" in str(e.value) and "does not exist" in str(e.value)
    assert not out.exists() or not any(out.iterdir())


def test_list_naming_a_missing_video(tree: Path, tmp_path: Path) -> None:
    missing = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000099"
    with open(tree / "Lists" / "VID_train_15frames.txt", "a") as f:
        f.write(f"{missing} 1 3 7\n")
    with pytest.raises(ConversionError) as e:
        convert(tree, tmp_path / "out", splits=["vid_train"], progress=False, warn=None)
    msg = str(e.value)
    assert "VID_train_15frames.txt line 4" in msg
    assert str(Path("Annotations") / "VID" / missing) in msg


def test_list_with_more_frames_than_xmls(tree: Path, tmp_path: Path) -> None:
    (tree / "Lists" / "VID_val_videos.txt").write_text(f"{VAL0} 1 0 4\n")
    with pytest.raises(ConversionError, match=r"VID_val_videos.txt line 1: .*000003.xml does not exist"):
        convert(tree, tmp_path / "out", splits=["vid_val"], progress=False, warn=None)


def test_list_line_with_bad_fields(tree: Path, tmp_path: Path) -> None:
    (tree / "Lists" / "VID_train_15frames.txt").write_text(f"{TRAIN0} 1 2 5\n{TRAIN0} 1 x 5\n")
    with pytest.raises(ConversionError, match="VID_train_15frames.txt line 2: expected an integer"):
        convert(tree, tmp_path / "out", splits=["vid_train"], progress=False, warn=None)


def test_det_list_naming_a_missing_xml(tree: Path, tmp_path: Path) -> None:
    with open(tree / "Lists" / "DET_train_30classes.txt", "a") as f:
        f.write("train/ILSVRC2014_train_0000/nothing_here 1\n")
    with pytest.raises(ConversionError, match=r"DET_train_30classes.txt line 4: .*nothing_here.xml does not exist"):
        convert(tree, tmp_path / "out", splits=["det"], progress=False, warn=None)


def test_malformed_xml_names_the_file_and_leaves_nothing(tree: Path, tmp_path: Path) -> None:
    bad = tree / "Annotations" / "VID" / VAL0 / "000001.xml"
    bad.write_text("<annotation><size><width>10</width>")
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as e:
        convert(tree, out, splits=["vid_val"], progress=False, warn=None)
    assert "malformed XML" in str(e.value) and str(bad) in str(e.value)
    assert not any(out.iterdir())  # no partial json, no temporary files


def test_missing_field_names_the_file(tree: Path, tmp_path: Path) -> None:
    bad = tree / "Annotations" / "VID" / VAL0 / "000002.xml"
    bad.write_text(bad.read_text().replace("<trackid>3</trackid>", ""))
    with pytest.raises(ConversionError, match=r"000002.xml: missing <trackid>"):
        convert(tree, tmp_path / "out", splits=["vid_val"], progress=False, warn=None)


def test_unknown_vid_class_names_file_and_wnid(tree: Path, tmp_path: Path) -> None:
    bad = tree / "Annotations" / "VID" / TRAIN1 / "000002.xml"
    bad.write_text(_xml(64, 48, [dict(trackid=0, name=ZEBRA, box=(7, 5, 47, 35)),
                                 dict(trackid=5, name="n99999999", box=(1, 1, 9, 9))]))
    with pytest.raises(ConversionError) as e:
        convert(tree, tmp_path / "out", splits=["vid_train"], progress=False, warn=None)
    assert str(bad) in str(e.value) and "n99999999" in str(e.value)

    # the published behaviour on request: the object is skipped and gets no instance id
    convert(tree, tmp_path / "out", splits=["vid_train"], skip_unknown=True, progress=False, warn=None)
    got = json.loads((tmp_path / "out" / "imagenet_vid_train.json").read_text())
    assert got == expected_train()


def test_missing_image_folders_only_warn(tree: Path, tmp_path: Path, capsys) -> None:
    (tree / "Data" / "VID" / VAL0).rmdir()
    import sys
    convert(tree, tmp_path / "out", splits=["vid_val"], progress=False, warn=sys.stderr)
    assert "1 of 1 videos" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "imagenet_vid_val.json").read_text()) == expected_val()
