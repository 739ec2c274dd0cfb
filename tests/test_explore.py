"""The explorer's logic (clab.explore) on a small real run: matching, per-video AP against pycocotools,
on-demand detections against the saved test results, degradations, the widgets' reactions, and a missing
checkpoint. :func:`build_small_run` is also used by the browser test."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clab import explore
from clab.explore.compare import box_iou

VAL_VIDEOS = 2
FRAMES = 4


def build_small_run(root: Path) -> dict:
    """A run folder under ``root`` made with the kit's own functions in seconds: a synthetic set of 2
    validation videos of 4 frames, the two tiny models with seeded random weights saved as checkpoints where
    the run layout puts them, their test (coco_results.json, metrics.json), the t-SNE points of notebook 04
    and a run_state.json. Random weights give low but real, input-dependent scores. Returns its parameters."""
    import torch

    from clab.analysis import embeddings
    from clab.analysis.layout import RunLayout, cfg_options, model_checkpoint, model_config, parse_cfg_options
    from clab.apis import init_model
    from clab.data.synthetic import SyntheticConfig, make_synthetic
    from clab.engine.config import load_config
    from clab.engine.test import run_test
    from clab.params import check_parameters

    params = check_parameters({
        "RESULTS_DIR": str(root / "results"), "RUN_NAME": "small", "DEVICE": "cpu", "SEED": 0,
        "DATA_ROOT": str(root / "data"), "SYNTHETIC_TRAIN_VIDEOS": 1, "SYNTHETIC_VAL_VIDEOS": VAL_VIDEOS,
        "SYNTHETIC_FRAMES": FRAMES, "CFG_OPTIONS": ["data.workers_per_gpu=0"], "TSNE_FRAMES": 4,
        "TSNE_PERPLEXITY": 2.0})
    make_synthetic(params["DATA_ROOT"], 0, SyntheticConfig(train_videos=1, val_videos=VAL_VIDEOS, frames=FRAMES))
    layout = RunLayout.from_params(params)
    options = parse_cfg_options(cfg_options(params))
    for seed, model in enumerate(params["MODELS"]):
        cfg = load_config(model_config(params, model), options)
        torch.manual_seed(seed)
        net = init_model(cfg, None, "cpu")
        path = Path(model_checkpoint(params, layout, model, must_exist=False))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"meta": {"CLASSES": list(net.CLASSES)}, "state_dict": net.state_dict()}, path)
        run_test(load_config(model_config(params, model), options), str(path), str(layout.eval_dir(model)),
                 device="cpu", progress=False)
    emb = embeddings.embed_frames(params, layout)
    embeddings.tsne_frame(emb, params["TSNE_PERPLEXITY"], 0).to_csv(layout.embeddings_dir / "tsne_points.csv",
                                                                   index=False)
    recorded = {k: params[k] for k in ("DATA_ROOT", "SEED", "SYNTHETIC_TRAIN_VIDEOS", "SYNTHETIC_VAL_VIDEOS",
                                       "SYNTHETIC_FRAMES", "CFG_OPTIONS", "MODELS")}
    (layout.root / "run_state.json").write_text(json.dumps({"notebooks": {}, "parameters": recorded}))
    return params


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    params = build_small_run(root)
    # as the notebook opens it: only the folder is given, the rest comes from its run_state.json
    run = explore.open_run({"RUN_DIR": str(Path(params["RESULTS_DIR"]) / params["RUN_NAME"]), "DEVICE": "cpu"})
    return run, explore.OnDemandDetector(run)


# ------------------------------------------------------------------------------------------ pure functions
def _dets(*rows_per_class):
    return [np.array(rows, np.float32).reshape(-1, 5) for rows in rows_per_class]


def test_match_frame_marks_matched_missed_and_false():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    labels = np.array([0, 0, 1])
    dets = _dets([[0, 0, 10, 9, 0.9],        # class 0, IoU 0.9 with gt 0: matched
                  [1, 0, 10, 10, 0.8],       # class 0, gt 0 already taken, IoU 0 with gt 1: false
                  [20, 20, 30, 30, 0.2]],    # below the threshold: not counted
                 [[20, 20, 30, 30, 0.7],     # class 1 on a class-0 box: false (wrong class)
                  [40, 40, 46, 50, 0.6]])    # class 1, IoU 0.6 with gt 2: matched
    m = explore.match_frame(dets, gt, labels, score_thr=0.5)
    assert list(m.scores) == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert list(m.matched) == [True, False, False, True]
    assert list(m.gt_matched) == [True, False, True]
    assert (m.num_matched, m.num_missed, m.num_false) == (2, 1, 2)
    # at IoU 0.5 exactly a box still matches; just below, it does not
    half = _dets([[0, 0, 10, 5, 0.9]], [])
    assert explore.match_frame(half, gt[:1], labels[:1], 0.0).num_matched == 1
    assert explore.match_frame(_dets([[0, 0, 10, 4.9, 0.9]], []), gt[:1], labels[:1], 0.0).num_matched == 0
    with pytest.raises(ValueError, match="score_thr"):
        explore.match_frame(dets, gt, labels, 1.5)


def test_box_iou_against_hand_values():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]))
    assert iou[0] == pytest.approx([50 / 150, 0.0, 1.0])


def test_detections_by_image_inverts_results_to_coco_json():
    from clab.evaluation.coco_metrics import results_to_coco_json
    per_image = [_dets([[1, 2, 11, 22, 0.5]], [[3, 4, 5, 6, 0.25], [0, 0, 8, 8, 0.125]]), _dets([], [])]
    records = results_to_coco_json(per_image, [7, 9], [3, 5])
    back = explore.run_data.detections_by_image(records, [3, 5])
    assert set(back) == {7}
    for got, want in zip(back[7], per_image[0]):
        np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="unknown category_id 4"):
        explore.run_data.detections_by_image([{**records[0], "category_id": 4}], [3, 5])


# ------------------------------------------------------------------------------------------ on a small run
def test_run_is_read_with_the_parameters_it_recorded(small_run):
    run, _ = small_run
    assert len(run.videos) == VAL_VIDEOS and len(run.frames) == VAL_VIDEOS * FRAMES
    assert sorted(run.detections) == ["baseline", "clab"] and not run.notes
    assert set(run.tsne["index"]) <= {f.index for f in run.frames}
    assert run.params["SYNTHETIC_FRAMES"] == FRAMES          # from run_state.json, not the default


def test_per_video_ap_equals_cocoeval_on_that_video(small_run):
    from clab.evaluation.coco_metrics import coco_entries_metrics, load_coco
    run, _ = small_run
    table = explore.per_video_ap(run)
    gt = load_coco(str(Path(explore.run_data.test_config(run.params).data.test.ann_file)))
    for model in ("baseline", "clab"):
        entries = json.loads((run.layout.eval_dir(model) / "coco_results.json").read_text())
        for video, indices in run.videos.items():
            ids = [run.frames[i].image_id for i in indices]
            _, want = coco_entries_metrics(gt, [e for e in entries if e["image_id"] in ids], ids, run.cat_ids)
            assert table.loc[video, model] == pytest.approx(want.stats[1], abs=1e-6), (model, video)
            assert 0.0 <= want.stats[1] <= 1.0


def test_on_demand_clean_detections_equal_the_saved_test_in_any_order(small_run):
    run, detector = small_run
    video = list(run.videos)[1]
    for frame_id in (3, 1, 2):          # backwards, then forwards: the reference cache is restarted as needed
        frame = run.frame(video, frame_id)
        got = detector.detect("clab", frame)
        saved = run.saved_detections("clab", frame)
        assert sum(len(d) for d in got) > 0
        for g, s in zip(got, saved):
            np.testing.assert_allclose(g, s, atol=1e-3)
    assert detector.last_seconds > 0
    detector.detect("clab", run.frame(video, 2))
    assert detector.last_seconds == 0.0            # second time: from the cache


def test_degraded_frame_and_its_detections_differ_from_clean(small_run):
    from clab.data.degradations import apply_degradation
    run, detector = small_run
    frame = run.frame(list(run.videos)[0], 2)
    clean = detector.image(frame)
    blurred = detector.image(frame, "gaussian_noise", 5)
    assert blurred.shape == clean.shape and np.abs(blurred.astype(int) - clean.astype(int)).mean() > 5
    assert not np.array_equal(blurred, apply_degradation(clean, "gaussian_noise", 1, 0))
    a = detector.detect("baseline", frame, "gaussian_noise", 5)
    b = detector.detect("baseline", frame)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))


def test_explorer_widgets_react(small_run):
    run, detector = small_run
    ex = explore.Explorer(run, detector, score_thr=0.0)
    first = ex.image.value
    ex.frame.value = 2
    assert ex.image.value != first and ex.history[-1]["frame_id"] == 2
    assert all(s["source"] == "saved" for s in ex.history[-1]["status"])
    clean_status = ex.status.value
    ex.kind.value = "motion_blur"
    assert ex.status.value != clean_status
    assert all(s["source"].startswith("computed") for s in ex.history[-1]["status"])
    # sorting the per-video table by a column orders its rows by it
    ex.video_table.sort("clab")
    order = list(ex.video_table.rows().index)
    assert order == list(ex.video_table.df["clab"].sort_values(kind="stable").index)
    # a row click jumps to that video's frame of largest gap
    video = list(run.videos)[1]
    ex.show_worst(video)
    worst = explore.worst_frames(run, video, ex.score.value, 1)
    assert (ex.video.value, ex.frame.value) == (video, int(worst["frame_id"].iloc[0]))
    # a t-SNE point shows its frame and the viewer jumps there
    point = run.tsne.iloc[-1]
    picked = ex.tsne.show_point(int(point["index"]), point["degradation"], point["features"])
    assert picked[:2] == (run.frames[int(point["index"])].video, run.frames[int(point["index"])].frame_id)
    assert ex.tsne.preview.value[:4] == b"\x89PNG"
    assert len(ex.tsne.figure.data) == len(set(ex.tsne.shown_points()["video"]))


def test_missing_checkpoint_is_said_and_saved_results_still_shown(small_run, tmp_path):
    run, _ = small_run
    params = {**run.params, "TRAIN": False, "CHECKPOINT_BASELINE": str(tmp_path / "nowhere.pth"),
              "CHECKPOINT_CLAB": ""}
    detector = explore.OnDemandDetector(explore.load_run(params))
    assert not detector.available("baseline") and not detector.available("clab")
    assert "nowhere.pth" in detector.missing["baseline"] and "01_train" in detector.missing["baseline"]
    assert "CHECKPOINT_CLAB" in detector.missing["clab"]
    with pytest.raises(RuntimeError, match="cannot compute detections of baseline"):
        detector.detect("baseline", run.frames[0], "motion_blur", 2)
    view = explore.summary(detector.run, detector, 0.0)
    assert any("nowhere.pth" in line for line in view["notes"]) and len(view["videos"]) == VAL_VIDEOS
    picture, status = explore.frame_picture(detector.run, detector, list(run.videos)[0], 1, 0.0, "occlusion", 2)
    assert picture.ndim == 3 and all(s["detections"] is None for s in status)
