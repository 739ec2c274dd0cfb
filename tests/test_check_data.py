"""``clab check-data``: a miniature ILSVRC2015 tree with a missing list, a missing snippet and a corrupt JPEG,
and a CocoVID json with a missing image, a box outside its image and a gap in a video's frame ids."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from clab.cli import main as cli_main
from clab.data.check import PUBLISHED, check
from test_convert_imagenet_vid import DET_A, DET_B, TRAIN0, TRAIN1, VAL0, make_tree

FRAMES = {TRAIN0: (5, 200, 100), TRAIN1: (4, 64, 48), VAL0: (3, 128, 72)}


def full_tree(root: Path) -> Path:
    """The converter tests' tree plus its JPEG frames and DET images."""
    make_tree(root)
    for video, (n, w, h) in FRAMES.items():
        for f in range(n):
            cv2.imwrite(str(root / "Data" / "VID" / video / f"{f:06d}.JPEG"), np.full((h, w, 3), 20 * f, np.uint8))
    for name in (DET_A, DET_B):
        path = root / "Data" / "DET" / f"{name}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.zeros((40, 60, 3), np.uint8))
    return root


def test_complete_miniature_tree_passes_as_a_subset(tmp_path):
    root = full_tree(tmp_path / "ILSVRC")
    rep = check(root=root, subset=True, all_images=True, progress=False)
    assert rep.ok, rep.format()
    rows = {q: (e, f) for q, e, f in rep.rows}
    assert rows["VID train snippets (on disk)"] == (2, 2) and rows["VID train frames (on disk)"] == (9, 9)
    assert rows["VID val frames (on disk)"] == (3, 3) and rows["DET 30-class list lines"] == (None, 3)
    assert rows["images decoded"] == (14, 14)  # 12 VID frames + 2 DET images
    # against the published counts the same tree is far too small
    rep = check(root=root, sample=5, progress=False)
    assert not rep.ok and len(rep.problems["counts"]) >= 4
    assert f"published {PUBLISHED['VID train frames']:,}" in "\n".join(rep.problems["counts"])


def test_missing_list_missing_snippet_and_corrupt_jpeg_are_all_reported(tmp_path, capsys):
    root = full_tree(tmp_path / "ILSVRC")
    (root / "Lists" / "DET_train_30classes.txt").unlink()
    for f in (root / "Data" / "VID" / TRAIN1).iterdir():
        f.unlink()
    (root / "Data" / "VID" / TRAIN1).rmdir()
    bad = root / "Data" / "VID" / TRAIN0 / "000003.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])       # a download cut short
    rep = check(root=root, subset=True, all_images=True, progress=False)
    problems = {k: v for k, v in rep.problems.items() if v}
    assert sorted(problems) == ["images that do not decode", "lists", "missing snippets"]
    assert problems["lists"] == [f"list file {root / 'Lists' / 'DET_train_30classes.txt'} does not exist"]
    assert problems["missing snippets"] == [
        f"{root / 'Lists' / 'VID_train_15frames.txt'} line 3: snippet {TRAIN1} has no image folder "
        f"{root / 'Data' / 'VID' / TRAIN1}"]
    assert problems["images that do not decode"] == [f"{bad}: truncated JPEG (no end marker)"]

    assert cli_main(["check-data", "--root", str(root), "--subset", "--all", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "3 problem(s):" in out and "VID train snippets (on disk)" in out and "<-- differs" in out


def test_cocovid_json_checks(tmp_path, cocovid_set, capsys):
    ann = cocovid_set([dict(name="train/v0", num_frames=4), dict(name="train/v1", num_frames=3)])
    data = json.loads(ann.read_text())
    data["annotations"][1]["bbox"] = [50, 10, 30, 16]                     # 64 px wide image: x + w = 80
    data["images"] = [im for im in data["images"] if not (im["video_id"] == 2 and im["frame_id"] == 1)]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {im["id"] for im in data["images"]}]
    bad = tmp_path / "annotations" / "bad.json"
    bad.write_text(json.dumps(data))
    rep = check(ann=ann, img_prefix=tmp_path / "Data" / "VID", progress=False)
    assert rep.ok, rep.format()
    (tmp_path / "Data" / "VID" / "train" / "v0" / "000002.JPEG").unlink()
    rep = check(ann=bad, img_prefix=tmp_path / "Data" / "VID", progress=False)
    problems = {k: v for k, v in rep.problems.items() if v}
    assert sorted(problems) == ["boxes", "frame ids", "missing images"]
    assert "annotation id 2: box [50, 10, 30, 16] [x, y, w, h] is not inside its 64x48 image" in problems["boxes"][0]
    assert "video train/v1 (id 2): frame ids are not 0..1; missing [1]" in problems["frame ids"][0]
    assert problems["missing images"][0].endswith(f"{tmp_path / 'Data' / 'VID' / 'train/v0/000002.JPEG'} "
                                                  f"does not exist")
    assert cli_main(["check-data", "--ann", str(tmp_path / "nope.json"), "--no-progress"]) == 1
    assert "annotation file not found" in capsys.readouterr().out
    with pytest.raises(ValueError, match="either --root"):
        check(progress=False)
