"""Your own videos in: the MOT-challenge and CVAT-for-video converters on small trees written to disk, their
bad inputs, and a tiny model trained for a few iterations on a converted MOT tree."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from clab.cli import main as cli_main
from clab.data.converters import cvat, mot
from clab.data.converters.imagenet_vid import ConversionError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a CPU shared with other work, two spinning threads are many times slower."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- MOT
def write_sequence(root: Path, name: str, rows: list[str], length: int = 6, size=(64, 48), images: bool = True,
                   seqinfo: str | None = None) -> Path:
    seq = root / name
    (seq / "gt").mkdir(parents=True)
    (seq / "gt" / "gt.txt").write_text("".join(r + "\n" for r in rows))
    w, h = size
    (seq / "seqinfo.ini").write_text(seqinfo if seqinfo is not None else
                                     f"[Sequence]\nname={name}\nimDir=img1\nframeRate=25\nseqLength={length}\n"
                                     f"imWidth={w}\nimHeight={h}\nimExt=.jpg\n")
    if images:
        (seq / "img1").mkdir()
        for f in range(1, length + 1):
            img = np.full((h, w, 3), 30 * f % 255, np.uint8)
            cv2.imwrite(str(seq / "img1" / f"{f:06d}.jpg"), img)
    return seq


ROWS_A = [
    "1,1,10,12,20,16,1,1,1.0",       # pedestrian, track 1
    "2,1,12,12,20,16,1,1,0.3",       # occluded (visibility < 0.5)
    "1,2,50,30,30,30,1,3,1.0",       # car, partly outside (x to 80 > 64, y to 60 > 48): clipped
    "3,3,5,5,10,10,0,1,1.0",         # conf 0: an ignore region
    "4,4,100,100,10,10,1,1,1.0",     # wholly outside the 64x48 image: dropped, counted
    "5,5,5,5,10,10,1,2,1.0",         # class 2 is skipped ('-')
]
CLASSES = ["pedestrian", "-", "car"]


def test_mot_conversion_content(tmp_path):
    write_sequence(tmp_path, "seqA", ROWS_A)
    summary = mot.convert([tmp_path / "seqA"], CLASSES, warn=None)
    assert summary["warnings"] == {"boxes clipped to the image": 1, "boxes outside the image or without area": 1,
                                   "rows of a skipped class": 1}
    data = json.loads((tmp_path / "annotations" / "mot_train.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "pedestrian"}, {"id": 2, "name": "car"}]
    assert data["videos"] == [{"id": 1, "name": "seqA", "fps": 25.0, "width": 64, "height": 48}]
    assert [im["file_name"] for im in data["images"]] == [f"seqA/img1/{f:06d}.jpg" for f in range(1, 7)]
    assert [im["frame_id"] for im in data["images"]] == list(range(6))
    anns = [{k: a[k] for k in ("image_id", "category_id", "instance_id", "bbox", "area", "iscrowd", "occluded")}
            for a in data["annotations"]]
    assert anns == [
        dict(image_id=1, category_id=1, instance_id=1, bbox=[10.0, 12.0, 20.0, 16.0], area=320.0, iscrowd=False,
             occluded=False),
        dict(image_id=1, category_id=2, instance_id=2, bbox=[50.0, 30.0, 14.0, 18.0], area=252.0, iscrowd=False,
             occluded=False),
        dict(image_id=2, category_id=1, instance_id=1, bbox=[12.0, 12.0, 20.0, 16.0], area=320.0, iscrowd=False,
             occluded=True),
        dict(image_id=3, category_id=1, instance_id=3, bbox=[5.0, 5.0, 10.0, 10.0], area=100.0, iscrowd=True,
             occluded=False),
    ]
    # the dataset reads it: the ignore region goes to bboxes_ignore
    from clab.data.coco_video import CocoVideoDataset
    ds = CocoVideoDataset(ann_file=str(tmp_path / "annotations" / "mot_train.json"), img_prefix=str(tmp_path),
                          pipeline=[], test_mode=True, ref_img_sampler=None)
    assert ds.CLASSES == ("pedestrian", "car") and len(ds) == 6
    assert ds.get_ann_info(2)["bboxes_ignore"].tolist() == [[5.0, 5.0, 15.0, 15.0]]


@pytest.mark.parametrize("row, message", [
    ("7,1,10,12,20,16,1,1,1.0", "gt.txt line 2: frame 7 is outside the sequence's frames 1..6"),
    ("2,1,10,12,20,16,1,3,1.0", "gt.txt line 2: track id 1 has class 3 here but class 1 on line 1"),
    ("2,9,10,12,20,16,1,4,1.0", "gt.txt line 2: class id 4 is not in the class list (3 names"),
    ("2,9,ten,12,20,16,1,1,1.0", "gt.txt line 2: expected numbers"),
    ("2,9,10", "gt.txt line 2: expected at least 6 comma-separated fields"),
])
def test_mot_bad_rows_name_file_and_line(tmp_path, row, message):
    seq = write_sequence(tmp_path, "seqB", ["1,1,10,12,20,16,1,1,1.0", row], images=False)
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace(".", r"\.")) as err:
        mot.convert([seq], CLASSES, warn=None)
    assert str(seq / "gt" / "gt.txt") in str(err.value)
    assert not (tmp_path / "annotations").exists()


def test_mot_bad_seqinfo_and_split(tmp_path, capsys):
    seq = write_sequence(tmp_path / "bad", "s", [], seqinfo="[Sequence]\nname=s\nframeRate=25\nimWidth=64\n")
    with pytest.raises(ConversionError, match=r"seqinfo.ini: missing field seqLength"):
        mot.convert([seq], CLASSES, warn=None)
    for i in range(4):
        write_sequence(tmp_path / "mot", f"s{i}", [f"1,1,1,1,5,5,1,1,1"], length=2, images=False)
    assert cli_main(["convert-mot", str(tmp_path / "mot"), "--classes", "pedestrian,-,car", "--val-fraction",
                     "0.25", "--seed", "1"]) == 0
    assert "train:" in capsys.readouterr().out
    train = json.loads((tmp_path / "mot" / "annotations" / "mot_train.json").read_text())
    val = json.loads((tmp_path / "mot" / "annotations" / "mot_val.json").read_text())
    names = [v["name"] for v in train["videos"]] + [v["name"] for v in val["videos"]]
    assert len(val["videos"]) == 1 and sorted(names) == ["s0", "s1", "s2", "s3"]
    assert cli_main(["convert-mot", str(tmp_path / "mot"), "--val-videos", "nope"]) == 1
    assert "not among the videos" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- CVAT
def cvat_xml(tracks: str, size: int = 10, width: int = 100, height: int = 80, labels=("car", "person")) -> str:
    label_xml = "".join(f"<label><name>{n}</name><attributes><attribute><name>color</name></attribute>"
                        f"</attributes></label>" for n in labels)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n<meta>\n<task>\n'
            f"<id>7</id>\n<name>clip one</name>\n<size>{size}</size>\n<mode>interpolation</mode>\n"
            f"<start_frame>0</start_frame>\n<stop_frame>{size - 1}</stop_frame>\n<labels>{label_xml}</labels>\n"
            f"<original_size><width>{width}</width><height>{height}</height></original_size>\n</task>\n"
            f"</meta>\n{tracks}</annotations>\n")


def box(frame, x1, y1, x2, y2, outside=0, occluded=0, keyframe=1) -> str:
    return (f'<box frame="{frame}" keyframe="{keyframe}" outside="{outside}" occluded="{occluded}" '
            f'xtl="{x1}" ytl="{y1}" xbr="{x2}" ybr="{y2}" z_order="0"></box>\n')


FIRST = cvat_xml("").count("\n")  # the line of the first track (the header's lines, then the tracks)
TRACK_CAR = ('<track id="0" label="car" source="manual">\n' + box(0, 0, 0, 10, 10) + box(4, 40, 20, 50, 30, occluded=1)
             + box(6, 40, 20, 50, 30, outside=1) + box(8, 90, 70, 110, 90) + "</track>\n")


def test_cvat_interpolation_outside_occlusion(tmp_path):
    xml = tmp_path / "task1" / "annotations.xml"
    xml.parent.mkdir()
    xml.write_text(cvat_xml(TRACK_CAR))
    summary = cvat.convert([xml], warn=None)
    assert summary["warnings"] == {"boxes clipped to the image": 2, "videos whose first frame image is missing": 1}
    data = json.loads((tmp_path / "annotations" / "cvat_train.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]
    assert data["videos"][0]["name"] == "clip one" and len(data["images"]) == 10
    assert data["images"][3]["file_name"] == "task1/images/frame_000003.PNG"
    by_frame = {data["images"][a["image_id"] - 1]["frame_id"]: a for a in data["annotations"]}
    assert sorted(by_frame) == [0, 1, 2, 3, 4, 5, 8, 9]          # outside from frame 6 until the box at 8
    assert by_frame[2]["bbox"] == [20.0, 10.0, 10.0, 10.0]         # halfway between frames 0 and 4
    assert by_frame[1]["bbox"] == [10.0, 5.0, 10.0, 10.0]
    assert [by_frame[f]["occluded"] for f in (0, 3, 4, 5)] == [False, False, True, True]
    assert by_frame[5]["bbox"] == [40.0, 20.0, 10.0, 10.0]         # held until the outside box
    assert by_frame[9]["bbox"] == [90.0, 70.0, 10.0, 10.0]         # the last box stays to the end, clipped
    assert len({a["instance_id"] for a in data["annotations"]}) == 1


@pytest.mark.parametrize("tracks, message", [
    (TRACK_CAR + '<track id="0" label="person">\n' + box(1, 0, 0, 5, 5) + "</track>\n",
     rf"line {FIRST + 6}: track id 0 has label 'person' here but 'car' on line {FIRST}"),
    ('<track id="1" label="truck">\n' + box(1, 0, 0, 5, 5) + "</track>\n",
     rf"line {FIRST}: label 'truck' is not one of the classes"),
    ('<track id="1" label="car">\n' + box(12, 0, 0, 5, 5) + "</track>\n",
     rf"line {FIRST + 1}: box frame 12 is outside the video's frames 0\.\.9"),
    ('<track id="1" label="car">\n<box frame="1" xtl="a"/></track>\n',
     rf"line {FIRST + 1}: <box> attribute xtl='a'"),
    ('<track id="1" label="car">\n' + box(1, 0, 0, 5, 5).replace("</box>\n", "") + "</track>\n",
     rf"malformed XML .* line {FIRST + 1}: mismatched tag"),
])
def test_cvat_bad_inputs_name_file_and_line(tmp_path, tracks, message):
    xml = tmp_path / "a.xml"
    xml.write_text(cvat_xml(tracks))
    with pytest.raises(ConversionError, match=message) as err:
        cvat.convert([xml], warn=None)
    assert str(xml) in str(err.value)


def test_cvat_unknown_label_skipped_and_cli(tmp_path, capsys):
    xml = tmp_path / "a.xml"
    xml.write_text(cvat_xml(TRACK_CAR + '<track id="1" label="truck">\n' + box(1, 0, 0, 5, 5) + "</track>\n"))
    assert cli_main(["convert-cvat", str(xml), "--classes", "car", "--skip-unknown-labels", "--out",
                     str(tmp_path / "o")]) == 0
    assert "1 tracks with a label outside the classes (dropped)" in capsys.readouterr().err
    data = json.loads((tmp_path / "o" / "cvat_train.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "car"}] and len(data["annotations"]) == 8


# ---------------------------------------------------------------------------------------------- training
def test_tiny_model_trains_on_a_converted_mot_tree(tmp_path):
    """Two 6-frame MOT sequences of moving squares -> CocoVID (one video each for train and val) -> three
    iterations of the tiny custom config (batches of 2 frames)."""
    import torch

    from clab.engine.train import train

    rng = np.random.default_rng(0)
    for s in range(2):
        rows, seq = [], tmp_path / "mine" / f"seq{s}"
        (seq / "img1").mkdir(parents=True)
        for f in range(1, 7):
            img = rng.integers(0, 60, (96, 160, 3), dtype=np.uint8)
            for t, (cls, x0) in enumerate(((1, 10), (2, 90))):
                x, y = x0 + 3 * f, 20 + 10 * t
                img[y:y + 24, x:x + 24] = (40, 200, 40) if cls == 1 else (200, 40, 200)
                rows.append(f"{f},{t + 1},{x},{y},24,24,1,{cls},1")
            cv2.imwrite(str(seq / "img1" / f"{f:06d}.jpg"), img)
        write_sequence(tmp_path / "mine", f"seq{s}", rows, length=6, size=(160, 96), images=False)
    mot.convert([tmp_path / "mine"], ["walker", "rider"], prefix="custom", val_fraction=0.5, warn=None)
    config = str(ROOT / "configs" / "selsa-troi_faster-rcnn_tiny_custom.py")
    classes = ["walker", "rider"]
    work = tmp_path / "work"
    train(config, str(work), {"data_root": str(tmp_path / "mine"), "data.train.classes": classes,
                              "data.val.classes": classes, "data.test.classes": classes,
                              "model.detector.roi_head.bbox_head.num_classes": 2, "runner.max_epochs": 1,
                              "log_config.interval": 1, "data.workers_per_gpu": 0},
          seed=0, device="cpu", progress=False)
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    ckpt = torch.load(work / "latest.pth", weights_only=True)
    assert ckpt["meta"]["CLASSES"] == classes


def test_notebook_data_prep_for_a_custom_dataset(tmp_path):
    """``DATASET: custom``: the converted files are checked against CUSTOM_CLASSES and the config, and put where
    the custom config reads them."""
    from clab.analysis import data_prep
    from clab.params import check_parameters

    root = tmp_path / "mine"
    for s in range(2):
        write_sequence(root, f"seq{s}", ["1,1,10,12,20,16,1,1,1", "2,2,30,12,20,16,1,3,1"], length=3)
    mot.convert([root], CLASSES, out=tmp_path / "converted", val_fraction=0.5, warn=None)
    classes = ["pedestrian", "car"]
    params = check_parameters({
        "DATASET": "custom", "DATA_ROOT": str(root), "CUSTOM_CLASSES": classes, "MODELS": ["baseline"],
        "CUSTOM_TRAIN_ANN": str(tmp_path / "converted" / "mot_train.json"),
        "CUSTOM_VAL_ANN": str(tmp_path / "converted" / "mot_val.json"),
        "CONFIG_BASELINE": str(ROOT / "configs" / "selsa-troi_faster-rcnn_tiny_custom.py")})
    summary = data_prep.prepare_dataset(params, progress=False)
    assert summary["custom"]["train"]["videos"] == 1 and summary["custom"]["val"]["images"] == 3
    files = data_prep.split_files(params)
    assert {n: f["split"] for n, f in files.items()} == {"custom_train": "train", "custom_val": "test"}
    assert json.loads((root / "annotations" / "custom_val.json").read_text()) == \
        json.loads((tmp_path / "converted" / "mot_val.json").read_text())
    with pytest.raises(ValueError, match=r"CUSTOM_CLASSES \['car', 'pedestrian'\] differ from the config's"):
        data_prep.prepare_dataset({**params, "CUSTOM_CLASSES": ["car", "pedestrian"]}, progress=False)
    (root / "seq1" / "img1" / "000002.jpg").unlink()
    with pytest.raises(ValueError, match="fails the data check") as err:
        data_prep.prepare_dataset(params, progress=False)
    assert "000002.jpg does not exist" in str(err.value)
