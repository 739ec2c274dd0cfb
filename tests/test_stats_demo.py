"""Dataset statistics and FGFA motion IoU on hand-made annotations, the atomic file helpers, and the demo."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clab.cli import main as cli_main
from clab.data.stats import dataset_statistics, format_statistics, motion_class, motion_iou_per_annotation
from clab.data.synthetic import MANIFEST, annotation_file
from clab.io import atomic_open, atomic_write_json, atomic_write_text, load_json


def hand_made() -> dict:
    """One video of 12 frames (ids 1..12) with three instances, plus one DET-style image (id 13).

    - instance 1 (cat 1): the same box in frames 0..11 -> miou 1.0 -> slow
    - instance 2 (cat 2): jumps 50 px every frame in frames 0..4 -> no overlap -> miou 0.0 -> fast
    - instance 3 (cat 1): frames 5 and 6 only, shifted by 1 px -> IoU 90/110 -> medium
    - instance 4 (cat 2): frames 0 and 11 only, 11 frames apart (outside +-10) -> isolated
    """
    images = [{"id": f + 1, "file_name": f"val/v/{f:06d}.JPEG", "height": 100, "width": 400, "frame_id": f,
               "video_id": 1, "is_vid_train_frame": f in (1, 4)} for f in range(12)]
    images.append({"id": 13, "file_name": "det.JPEG", "height": 50, "width": 50, "is_vid_train_frame": True})
    anns = []

    def add(frame, inst, cat, box, video=1, image=None):
        anns.append({"id": len(anns) + 1, "video_id": video, "image_id": image or frame + 1, "category_id": cat,
                     "instance_id": inst, "bbox": box, "area": box[2] * box[3], "iscrowd": False,
                     "occluded": inst == 2, "generated": False})

    for f in range(12):
        add(f, 1, 1, [10, 10, 20, 20])
    for f in range(5):
        add(f, 2, 2, [50 * f, 60, 30, 30])
    add(5, 3, 1, [100, 0, 10, 10])
    add(6, 3, 1, [101, 0, 10, 10])
    add(0, 4, 2, [300, 50, 10, 10])
    add(11, 4, 2, [300, 50, 10, 10])
    anns.append({"id": len(anns) + 1, "image_id": 13, "category_id": 2, "bbox": [0, 0, 5, 0], "area": 0,
                 "iscrowd": False})
    return {"categories": [{"id": 1, "name": "a", "encode_name": None}, {"id": 2, "name": "b", "encode_name": None}],
            "videos": [{"id": 1, "name": "val/v", "vid_train_frames": [1, 4]}],
            "images": images, "annotations": anns}


def test_motion_iou_on_known_motion() -> None:
    coco = hand_made()
    miou = motion_iou_per_annotation(coco)
    by_inst = {}
    for a in coco["annotations"]:
        if "instance_id" in a:
            by_inst.setdefault(a["instance_id"], []).append(miou[a["id"]])
    assert by_inst[1] == [1.0] * 12 and {motion_class(m) for m in by_inst[1]} == {"slow"}
    assert by_inst[2] == [0.0] * 5 and motion_class(0.0) == "fast"
    assert np.allclose(by_inst[3], 90 / 110) and motion_class(90 / 110) == "medium"
    assert by_inst[4] == [0.0, 0.0]
    assert coco["annotations"][-1]["id"] not in miou  # DET image: no video, no motion IoU
    iso = motion_iou_per_annotation(coco, isolated=0.5)
    assert [iso[a["id"]] for a in coco["annotations"] if a.get("instance_id") == 4] == [0.5, 0.5]
    wide = motion_iou_per_annotation(coco, window=11)  # now the two boxes of instance 4 see each other
    assert [wide[a["id"]] for a in coco["annotations"] if a.get("instance_id") == 4] == [1.0, 1.0]


def test_motion_iou_averages_over_the_window() -> None:
    # a 10x10 box moving 2 px per frame over 4 frames: frame 0 sees shifts 2, 4, 6
    coco = {"images": [{"id": f, "video_id": 7, "frame_id": f} for f in range(4)],
            "annotations": [{"id": 10 + f, "image_id": f, "instance_id": 1, "bbox": [2 * f, 0, 10, 10]}
                            for f in range(4)]}
    iou = {d: (10 - d) * 10 / (200 - (10 - d) * 10) for d in (2, 4, 6)}
    miou = motion_iou_per_annotation(coco)
    assert miou[10] == pytest.approx((iou[2] + iou[4] + iou[6]) / 3)
    assert miou[11] == pytest.approx((iou[2] + iou[2] + iou[4]) / 3)
    assert motion_class(0.9) == "medium" and motion_class(0.7) == "medium" and motion_class(0.9001) == "slow"


def test_dataset_statistics_counts(tmp_path: Path) -> None:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(hand_made()))
    s = dataset_statistics(path)
    assert s["videos"] == 1 and s["frames"] == 13 and s["key_frames"] == 3 and s["annotations"] == 22
    assert s["instances"] == 4
    assert s["boxes_per_class"] == {"a": 14, "b": 8}
    assert s["motion"]["slow"] == 12 and s["motion"]["medium"] == 2 and s["motion"]["fast"] == 5 + 2
    assert s["degenerate_boxes"] == 1 and s["occluded"] == 5
    assert s["objects_per_frame"]["max"] == 3 and s["objects_per_frame"]["histogram"] == {"1": 5, "2": 7, "3": 1}
    assert s["frames_without_objects"] == 0
    assert s["box_size"]["width"]["q0"] == 5 and s["box_size"]["width"]["q100"] == 30
    table = format_statistics(s)
    assert "slow (> 0.9)" in table and "fast (< 0.7)" in table and str(path) in table


def test_dataset_stats_cli(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(hand_made()))
    out = tmp_path / "deep" / "stats.json"
    assert cli_main(["dataset-stats", str(path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "medium (0.7-0.9)" in printed
    assert json.loads(out.read_text()) == json.loads(json.dumps(dataset_statistics(path)))

    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [],\n "annotations": [}')
    assert cli_main(["dataset-stats", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "line 2" in err
    bad.write_text('{"images": [], "categories": []}')
    with pytest.raises(ValueError, match="missing list field 'annotations'"):
        dataset_statistics(bad)
    bad.write_text('{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1}], "categories": []}')
    with pytest.raises(ValueError, match=r"annotations\[0\] lacks field\(s\) \['category_id', 'bbox'\]"):
        dataset_statistics(bad)


# ----------------------------------------------------------------------------------------------- clab.io
def test_atomic_writes_and_load_json_errors(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "m.json"
    atomic_write_json(target, {"a": np.float32(1.5), "b": np.arange(3), "p": tmp_path}, indent=2)
    assert load_json(target) == {"a": 1.5, "b": [0, 1, 2], "p": str(tmp_path)}
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    with pytest.raises(RuntimeError):  # a failure inside the block keeps the old file and leaves no temp file
        with atomic_open(target) as f:
            f.write("partial")
            raise RuntimeError("interrupted")
    assert load_json(target)["a"] == 1.5
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert load_json(target)["a"] == 1.5
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]

    with pytest.raises(FileNotFoundError, match=r"results json .*nothing.json does not exist"):
        load_json(tmp_path / "nothing.json", what="results json")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_json(tmp_path, what="results json")
    atomic_write_text(tmp_path / "broken.json", '{\n  "a": 1,\n  "b": \n}')
    with pytest.raises(ValueError, match=r"broken.json is not valid json: .* line 4, column 1"):
        load_json(tmp_path / "broken.json")


# ----------------------------------------------------------------------------------------------- demo
def test_demo_data_notebook_generates_once_and_writes_stats(tmp_path: Path) -> None:
    """``clab demo --only 00_data_prep``: the synthetic set, its statistics and figures, reused on a rerun."""
    data, out = tmp_path / "data", tmp_path / "results" / "demo"
    args = ["demo", "--out", str(out), "--seed", "0", "--data", str(data), "--only", "00_data_prep"]
    assert cli_main(args) == 0
    stats = json.loads((out / "dataset_stats.json").read_text())
    assert stats["seed"] == 0 and sorted(stats["files"]) == ["synthetic_vid_train", "synthetic_vid_val"]
    train = stats["files"]["synthetic_vid_train"]
    assert train["videos"] == 24 and stats["files"]["synthetic_vid_val"]["videos"] == 8
    assert train == json.loads(json.dumps(dataset_statistics(annotation_file(data, "train"))))
    assert (out / "figures" / "dataset_overview.png").stat().st_size > 0
    assert json.loads((data / MANIFEST).read_text())["seed"] == 0

    stamp = annotation_file(data, "train").stat().st_mtime_ns
    assert cli_main(args) == 0                      # same parameters: nothing regenerated
    assert annotation_file(data, "train").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------------------------- CLI errors
def test_cli_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path, capsys) -> None:
    """A missing config given to ``clab test``: one line on stderr and exit status 1; with ``--debug`` (anywhere on
    the command line) the exception propagates with its traceback; a bad parameter file names the file and the
    parameter."""
    missing = tmp_path / "nope.py"
    args = ["test", str(missing), "ckpt.pth", "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(missing) in err and "Traceback" not in err
    from clab.engine.config import ConfigError
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.py"):
        cli_main([*args, "--debug"])
    bad = tmp_path / "run.yaml"
    bad.write_text("RUN_NAME: x\nSEEDS: 3\n")
    capsys.readouterr()
    assert cli_main(["reproduce", str(bad)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {bad}: parameter SEEDS must be list, got 3 (int)"


def test_cli_error_line_names_programming_errors_by_type() -> None:
    from clab.cli import error_line
    assert error_line(FileNotFoundError("config file not found: a.py")) == "error: config file not found: a.py"
    assert error_line(KeyError("parameter X is not declared")) == "error: KeyError: parameter X is not declared"
    assert error_line(AttributeError("'NoneType' object has no attribute 'shape'")) == \
        "error: AttributeError: 'NoneType' object has no attribute 'shape'"
    assert error_line(ValueError()) == "error: ValueError"
