"""``clab evaluate``: the same numbers as ``clab test`` for the same detections, and clear errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from clab.cli import main
from clab.evaluation.cli import evaluate_files
from clab.evaluation.evaluate import HEADLINE_KEYS

REPO = Path(__file__).resolve().parents[1]
TINY_CLAB = str(REPO / "configs" / "clab_selsa-troi_faster-rcnn_tiny_synthetic.py")
# keys of clab test's metrics.json that describe the run, not the detections
RUN_KEYS = {"num_frames", "fps", "world_size", "device", "checkpoint", "ann_file", "results_file"}


def _clab(capsys, *args):
    """``clab ARGS`` in this process (the command-line entry point, without a new interpreter's start-up):
    (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def _same(a, b, path="metrics"):
    """Recursive equality that treats NaN as equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, (path, a, b)


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory):
    """``clab test`` of an untrained tiny model (its detections are poor but real) on 2 synthetic videos."""
    from clab.data.synthetic import make_synthetic
    from clab.engine.config import load_config
    from clab.engine.test import run_test
    root = make_synthetic(tmp_path_factory.mktemp("synthetic"), seed=2, train_videos=1, val_videos=2, frames=6)
    out = tmp_path_factory.mktemp("test_run")
    cfg = load_config(TINY_CLAB, {"data_root": f"{root}/", "data.workers_per_gpu": 0})
    run_test(cfg, None, str(out), device="cpu", progress=False)
    return root, out, cfg


def test_evaluate_equals_what_clab_test_wrote(tested_run, tmp_path, capsys):
    root, out, cfg = tested_run
    written = json.loads((out / "metrics.json").read_text())
    entries = json.loads((out / "coco_results.json").read_text())
    assert len(entries) > 0 and (out / "matches.npz").is_file()
    for key in HEADLINE_KEYS:
        assert isinstance(written[key], float)
    ann = cfg.data.test.ann_file
    status, stdout, stderr = _clab(capsys, "evaluate", ann, str(out / "coco_results.json"), "--out",
                                   str(tmp_path / "ev"))
    assert status == 0, stderr
    assert "bbox_mAP_50 = " in stdout and "vid_mAP_50 = " in stdout
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    _same({k: v for k, v in evaluated.items() if k not in RUN_KEYS},
          {k: v for k, v in written.items() if k not in RUN_KEYS})
    b = evaluated["bootstrap"]
    assert b["n_videos"] == 2 and b["n_boot"] == 1000 and "2 validation videos" in b["method"]
    assert b["ci_low"] <= evaluated["coco_stats"]["mAP_50"] <= b["ci_high"]
    # the two match tables are the same too
    with np.load(out / "matches.npz") as x, np.load(tmp_path / "ev" / "matches.npz") as y:
        assert all(np.array_equal(x[k], y[k]) for k in x.files)


@pytest.fixture
def small_set(tmp_path):
    """One 2-frame video with one object of category 1 per frame; categories 1 and 2."""
    images = [dict(id=i, file_name=f"v/{i}.JPEG", width=100, height=80, video_id=1, frame_id=i - 1) for i in (1, 2)]
    anns = [dict(id=i, image_id=i, category_id=1, bbox=[10.0, 10.0, 30.0, 20.0], area=600.0, iscrowd=0,
                 instance_id=1, video_id=1) for i in (1, 2)]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(dict(videos=[dict(id=1, name="v")], images=images, annotations=anns,
                                   categories=[dict(id=1, name="a"), dict(id=2, name="b")])))
    good = [dict(image_id=i, category_id=1, bbox=[10, 10, 30, 20], score=0.9) for i in (1, 2)]
    return ann, good


def test_evaluate_scores_a_results_file(small_set, tmp_path):
    ann, good = small_set
    res = tmp_path / "res.json"
    res.write_text(json.dumps(good))
    m = evaluate_files(ann, res, tmp_path / "out", n_boot=10)
    assert m["bbox_mAP_50"] == 1.0 and m["vid_mAP_50"] == 1.0 and m["vid_mAP_50_slow"] == 1.0
    assert math.isnan(m["vid_mAP_50_fast"]) and m["vid_num_gts_fast"] == 0     # a static object only
    assert m["AP50_per_class"]["a"] == 1.0 and math.isnan(m["AP50_per_class"]["b"])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["vid_mAP_50"] == 1.0


@pytest.mark.parametrize("content, words", [
    ("[{\"image_id\": 1,", "res.json is not valid json"),
    ({"image_id": 1}, "expected a COCO results list"),
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
      {"image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}],
     "res.json: entry 1: image_id 7 is not an image of the annotations"),
    ([{"image_id": 2, "category_id": 9, "bbox": [0, 0, 5, 5], "score": 0.5}],
     "res.json: entry 0: category_id 9 is not a category of the annotations"),
    ([{"image_id": 2, "category_id": 1, "bbox": [0, 0, 5], "score": 0.5}], "entry 0: bbox must be [x, y, w, h]"),
    ([{"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5]}], "entry 0: missing score"),
    ([{"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "score": "high"}], "entry 0: score must be"),
])
def test_bad_results_name_the_file_and_the_entry(small_set, tmp_path, content, words):
    ann, _ = small_set
    res = tmp_path / "res.json"
    res.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError) as err:
        evaluate_files(ann, res, tmp_path / "out", n_boot=0)
    assert words in str(err.value) and str(res) in str(err.value)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_bad_input_is_one_line_on_the_command_line(small_set, tmp_path, capsys):
    ann, good = small_set
    res = tmp_path / "res.json"
    res.write_text(json.dumps(good + [dict(image_id=5, category_id=1, bbox=[0, 0, 1, 1], score=0.1)]))
    status, _, err = _clab(capsys, "evaluate", str(ann), str(res), "--out", str(tmp_path / "out"))
    assert status == 1
    assert err == f"error: {res}: entry 2: image_id 5 is not an image of the annotations of {ann}\n"
    bad_ann = tmp_path / "bad.json"
    bad_ann.write_text("{\"images\": [")
    status, _, err = _clab(capsys, "evaluate", str(bad_ann), str(res), "--out", str(tmp_path / "out"))
    assert status == 1 and err.startswith("error: ") and "bad.json" in err and err.count("\n") == 1


def test_still_images_and_an_empty_results_file(tmp_path):
    images = [dict(id=i, file_name=f"{i}.jpg", width=100, height=80) for i in (1, 2, 3)]
    anns = [dict(id=i, image_id=i, category_id=1, bbox=[5.0, 5.0, 40.0, 30.0], area=1200.0, iscrowd=0)
            for i in (1, 2, 3)]
    ann = tmp_path / "coco.json"
    ann.write_text(json.dumps(dict(images=images, annotations=anns, categories=[dict(id=1, name="a")])))
    res = tmp_path / "res.json"
    res.write_text(json.dumps([dict(image_id=i, category_id=1, bbox=[5, 5, 40, 30], score=0.5) for i in (1, 2)]))
    m = evaluate_files(ann, res, tmp_path / "out", n_boot=50)
    # 2 of 3 objects found, precision 1: COCO 67/101 (recall points 0..0.66), devkit 2/3
    assert m["coco_stats"]["mAP_50"] == pytest.approx(67 / 101) and m["vid_mAP_50"] == pytest.approx(2 / 3)
    assert math.isnan(m["vid_mAP_50_slow"]) and math.isnan(m["speed"]["bbox_mAP_50_all"])
    assert any("no video_id" in n for n in m["notes"]) and m["bootstrap"]["n_videos"] == 3
    assert "3 validation frames" in m["bootstrap"]["method"]                  # frames are resampled
    res.write_text("[]")
    m = evaluate_files(ann, res, tmp_path / "out", n_boot=20)
    assert m["bbox_mAP_50"] == 0.0 and m["vid_mAP_50"] == 0.0 and m["bootstrap"]["ci_high"] == 0.0
