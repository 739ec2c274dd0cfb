"""A video file in, an annotated video and per-frame detections out (``clab infer-video``,
``clab.inference.inference_video``): real mp4/mkv files written and decoded with PyAV, the tiny config.

The detections are compared frame by frame with the two existing paths: ``clab.apis.inference_vid`` fed the
decoded frames (mode ``first``, its reference policy), and the dataset path of ``clab test`` on the same
frames written as lossless PNGs (mode ``video``: references over the whole video; mode ``online``: the
fixed-stride window).
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from clab.cli import main as cli_main
from clab.data.video_io import VideoReadError, VideoWriter, open_video

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "selsa-troi_faster-rcnn_tiny_synthetic.py")
FPS = Fraction(8)
N = 6  # frames of the test clip
#: fewer proposals than the tiny config keeps: the tests are about frames in and out, not about the detector
SMALL = {"model.detector.test_cfg.rpn.max_per_img": 20, "model.detector.test_cfg.rcnn.max_per_img": 20}


def decode_with_pyav(path: Path) -> tuple[list[np.ndarray], Fraction, tuple[int, int]]:
    """Every frame of ``path`` as BGR, straight from PyAV (independent of clab's reader)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return frames, stream.average_rate, (stream.codec_context.width, stream.codec_context.height)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a CPU shared with other work, two spinning threads are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """One synthetic validation video (N frames, 160x96) written as an H.264 mp4 at 8 frames/s."""
    from clab.data.synthetic import make_synthetic

    root = make_synthetic(tmp_path_factory.mktemp("synthetic"), seed=3, train_videos=0, val_videos=1, frames=N)
    files = sorted((root / "Data" / "VID" / "val").glob("*/*.JPEG"))
    assert len(files) == N
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(path, 160, 96, FPS) as writer:
        for f in files:
            writer.write(cv2.imread(str(f)))
    frames, _, _ = decode_with_pyav(path)
    return path, frames


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory):
    from clab.apis import init_model
    from clab.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = init_model(TINY, device="cpu", cfg_options=SMALL)
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(model, str(ckpt), meta=dict(CLASSES=list(model.CLASSES)))
    return model, ckpt


def frame_records(records: list[dict], num_frames: int) -> list[list[tuple]]:
    out = [[] for _ in range(num_frames)]
    for r in records:
        out[r["frame_id"]].append((r["category_id"], tuple(r["bbox"]), r["score"]))
    return out


def result_records(result: dict) -> list[tuple]:
    rows = []
    for label, boxes in enumerate(result["det_bboxes"]):
        for x1, y1, x2, y2, s in np.asarray(boxes, np.float64).reshape(-1, 5).tolist():
            rows.append((label + 1, (x1, y1, x2 - x1, y2 - y1), s))
    return rows


def test_cli_writes_same_size_rate_and_frames_and_json_equals_inference_vid(clip, model_and_ckpt, tmp_path):
    from clab.apis import inference_vid

    path, frames = clip
    model, ckpt = model_and_ckpt
    out, js = tmp_path / "out" / "annotated.mp4", tmp_path / "out" / "detections.json"
    rc = cli_main(["infer-video", str(path), "--config", TINY, "--checkpoint", str(ckpt), "--out", str(out),
                   "--json", str(js), "--mode", "first", "--device", "cpu", "--no-progress", "--score-thr", "0.1",
                   "--cfg-options", *(f"{k}={v}" for k, v in SMALL.items())])
    assert rc == 0
    written, rate, size = decode_with_pyav(out)
    assert (len(written), rate, size) == (N, FPS, (160, 96))
    assert sorted(p.name for p in out.parent.iterdir()) == ["annotated.mp4", "detections.json"]  # no temp files

    data = json.loads(js.read_text())
    assert data["complete"] is True and data["error"] is None and data["num_frames"] == N
    assert data["video"]["width"] == 160 and data["video"]["height"] == 96 and data["video"]["fps"] == 8.0
    assert data["model"]["config"] == TINY and data["model"]["checkpoint"] == str(ckpt)
    assert [c["name"] for c in data["categories"]] == list(model.CLASSES)
    assert [im["frame_id"] for im in data["images"]] == list(range(N))
    got = frame_records(data["detections"], N)
    assert sum(map(len, got)) > 0
    k = data["model"]["num_ref_imgs"]
    for frame_id, frame in enumerate(frames):
        result = inference_vid(model, frame, frame_id, ref_img_sampler=dict(frame_stride=100, num_left_ref_imgs=k))
        assert got[frame_id] == result_records(result), f"frame {frame_id}"

    # the drawing changed the frames where confident boxes are, and nowhere else much
    diff = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(written, frames)]
    assert max(diff) > 1.0


def _dataset_detections(model, frames: list[np.ndarray], tmp_path: Path, sampler: dict) -> list[list[tuple]]:
    """The ``clab test`` path (CocoVideoDataset + test pipeline) on ``frames`` saved as PNGs."""
    import copy

    from mmcv.parallel import collate, scatter
    from mmdet.datasets import build_dataset

    root = tmp_path / "png"
    images = []
    for i, frame in enumerate(frames):
        (root / "v").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "v" / f"{i:06d}.png"), frame)
        images.append(dict(id=i + 1, file_name=f"v/{i:06d}.png", height=96, width=160, frame_id=i, video_id=1))
    ann = root / "ann.json"
    ann.write_text(json.dumps(dict(videos=[dict(id=1, name="v")], images=images, annotations=[],
                                   categories=[dict(id=i + 1, name=c) for i, c in enumerate(model.CLASSES)])))
    cfg = copy.deepcopy(model.cfg.data.test)
    cfg.update(ann_file=str(ann), img_prefix=str(root), ref_img_sampler=sampler)
    dataset = build_dataset(cfg, dict(test_mode=True))
    out = []
    for idx in range(len(dataset)):
        batch = scatter(collate([dataset[idx]], samples_per_gpu=1), [-1])[0]
        with torch.no_grad():
            out.append(result_records(model(return_loss=False, rescale=True, **batch)))
    return out


@pytest.mark.parametrize("mode, stride", [("video", None), ("online", 2)])
def test_inference_video_equals_the_dataset_path(clip, model_and_ckpt, tmp_path, mode, stride):
    from clab.inference import inference_video

    path, frames = clip
    model, _ = model_and_ckpt
    got = [(fid, result_records(res)) for fid, res in inference_video(model, path, mode=mode, stride=stride)]
    assert [fid for fid, _ in got] == list(range(N))
    if mode == "video":
        sampler = dict(num_ref_imgs=4, frame_range=[-2, 2], method="test_with_adaptive_stride")
    else:
        sampler = dict(num_ref_imgs=4, frame_range=[-2, 2], stride=stride, method="test_with_fix_stride")
    expected = _dataset_detections(model, frames, tmp_path, sampler)
    assert [rows for _, rows in got] == expected


def test_folder_of_frames_and_max_frames(clip, model_and_ckpt, tmp_path):
    from clab.inference import inference_video

    _, frames = clip
    model, _ = model_and_ckpt
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:4]):  # names sorted as numbers: 8 before 12
        cv2.imwrite(str(folder / f"f{i * 4}.png"), frame)
    source = open_video(folder, fps=12.5)
    assert (source.width, source.height, source.fps, source.num_frames) == (160, 96, Fraction(25, 2), 4)
    assert [p.name for p in source.files] == ["f0.png", "f4.png", "f8.png", "f12.png"]
    assert [i for i, _ in inference_video(model, folder, max_frames=2, mode="first")] == [0, 1]
    with VideoWriter(tmp_path / "odd.mp4", 161, 97, 30000 / 1001) as writer:   # odd size, NTSC rate
        for frame in frames[:3]:
            writer.write(cv2.resize(frame, (161, 97)))
    source = open_video(tmp_path / "odd.mp4")
    source.scan()
    assert (source.width, source.height, source.fps, source.num_frames) == (161, 97, Fraction(30000, 1001), 3)


def test_truncated_and_empty_inputs_give_clear_errors(clip, model_and_ckpt, tmp_path, capsys):
    from clab.inference import inference_video

    path, _ = clip
    model, ckpt = model_and_ckpt
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"            # the mp4 index comes last: cut in half, nothing can be read
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match=f"cannot read video {cut}"):
        list(inference_video(model, cut))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    with pytest.raises(VideoReadError, match=f"frame folder {empty} has no image files"):
        list(inference_video(model, empty))
    out = tmp_path / "o.mp4"
    assert cli_main(["infer-video", str(empty), "--config", TINY, "--checkpoint", str(ckpt), "--out", str(out),
                     "--no-progress", "--device", "cpu"]) == 1
    assert f"error: frame folder {empty} has no image files" in capsys.readouterr().err
    assert not out.exists()


def test_truncated_stream_keeps_what_was_written(clip, model_and_ckpt, tmp_path, capsys):
    """A Matroska file cut short announces its duration but ends early: the frames before the cut are
    annotated, the video is closed properly and the json says complete: false."""
    _, frames = clip
    _, ckpt = model_and_ckpt
    mkv = tmp_path / "long.mkv"
    with VideoWriter(mkv, 160, 96, FPS) as writer:
        for i in range(3):
            for frame in frames:
                writer.write(np.roll(frame, 7 * i, axis=1))
    data = mkv.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    with pytest.raises(VideoReadError, match=f"is truncated: it declares {3 * N} frames"):
        open_video(cut).scan()
    out, js = tmp_path / "o.mp4", tmp_path / "o.json"
    rc = cli_main(["infer-video", str(cut), "--config", TINY, "--checkpoint", str(ckpt), "--out", str(out),
                   "--json", str(js), "--online", "--no-progress", "--device", "cpu",
                   "--cfg-options", *(f"{k}={v}" for k, v in SMALL.items())])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"error: video {cut} is truncated" in err
    written, rate, size = decode_with_pyav(out)
    result = json.loads(js.read_text())
    assert result["complete"] is False and "truncated" in result["error"]
    assert 0 < len(written) < 3 * N and (rate, size) == (FPS, (160, 96))
    assert len(result["images"]) == len(written) == result["num_frames"]


def test_draw_detections_colours_and_labels(tmp_path):
    from clab.inference import class_colors, draw_detections

    colors = class_colors(30)
    assert len(set(colors)) == 30
    image = np.full((720, 1280, 3), 90, np.uint8)
    dets = [np.array([[100, 200, 400, 500, 0.9]], np.float32), np.zeros((0, 5), np.float32),
            np.array([[700, 100, 900, 300, 0.2], [800, 400, 1000, 700, 0.6]], np.float32)]
    out = draw_detections(image, dets, ["car", "dog", "bird"], score_thr=0.3)
    assert out.shape == image.shape and (image == 90).all()  # a copy
    assert tuple(out[350, 100]) == colors[0]           # left edge of the car box
    assert tuple(out[550, 800]) == colors[2]           # left edge of the second bird box
    assert (out[200, 700:900] == 90).all()             # the bird at 0.2 is below the threshold
    label = out[160:200, 100:240]                      # the car's label, above its box: filled, white ink
    assert (out[175:195, 101] == colors[0]).all()
    assert (label == 255).all(axis=2).sum() > 100
    small_dets = [np.concatenate([d[:, :4] / 8, d[:, 4:]], axis=1) for d in dets]
    small = draw_detections(np.full((96, 160, 3), 90, np.uint8), small_dets, ["car", "dog", "bird"])
    assert (small > 200).all(axis=2).sum() > 15             # light ink on the label even at 160x96
    cv2.imwrite(str(tmp_path / "look.png"), out)
