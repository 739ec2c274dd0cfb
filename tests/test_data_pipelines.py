"""Sequence pipeline steps (clab.data.pipelines) on real JPEG clips: shared decisions, exact geometry, and
the collated batch format (SPEC 3.6)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from mmcv.parallel import collate
from mmcv.utils import build_from_cfg
from mmdet.datasets.builder import PIPELINES
from mmdet.datasets.pipelines import Compose

import clab  # noqa: F401  (registers the steps)

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def write_clip(root, num_frames=3, size=(128, 72), boxes=((10, 8, 40, 30),)):
    """Write ``num_frames`` JPEGs of ``size`` (w, h) and return mmdet result dicts [key, *refs] with
    ``ann_info`` (boxes x1y1x2y2, labels, instance ids)."""
    w, h = size
    results = []
    for f in range(num_frames):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 2] = (200, 100, 50)  # left half coloured, right half black: flips are visible
        img[:16, :16] = 40 * f
        name = f"clip/{f:06d}.JPEG"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
        bboxes = np.array([[x1 + f, y1, x2 + f, y2] for x1, y1, x2, y2 in boxes], np.float32).reshape(-1, 4)
        ann = dict(bboxes=bboxes, labels=np.arange(len(bboxes), dtype=np.int64),
                   bboxes_ignore=np.zeros((0, 4), np.float32),
                   instance_ids=np.arange(len(bboxes), dtype=np.int64) + 7)
        results.append(dict(img_info=dict(id=f + 1, filename=name, frame_id=f, width=w, height=h),
                            ann_info=ann, img_prefix=str(root), seg_prefix=None, proposal_file=None,
                            bbox_fields=[], mask_fields=[], seg_fields=[], frame_id=f, is_video_data=True))
    return results


def build(cfg):
    return build_from_cfg(cfg, PIPELINES)


def loaded(root, **kw):
    clip = write_clip(root, **kw)
    clip = build(dict(type="LoadMultiImagesFromFile"))(clip)
    return build(dict(type="SeqLoadAnnotations", with_bbox=True, with_track=True))(clip)


TRAIN_STEPS = [
    dict(type="LoadMultiImagesFromFile"),
    dict(type="SeqLoadAnnotations", with_bbox=True, with_track=True),
    dict(type="SeqResize", img_scale=(100, 60), keep_ratio=True, share_params=True),
    dict(type="SeqRandomFlip", share_params=True, flip_ratio=0.5),
    dict(type="SeqNormalize", mean=MEAN, std=STD, to_rgb=True),
    dict(type="SeqPad", size_divisor=16),
    dict(type="VideoCollect", keys=["img", "gt_bboxes", "gt_labels", "gt_instance_ids"]),
    dict(type="ConcatVideoReferences"),
    dict(type="SeqDefaultFormatBundle", ref_prefix="ref"),
]


def test_loading_gives_bgr_uint8_frames_and_annotations(tmp_path):
    clip = loaded(tmp_path)
    assert len(clip) == 3
    for f, r in enumerate(clip):
        assert r["img"].dtype == np.uint8 and r["img"].shape == (72, 128, 3)
        assert abs(int(r["img"][4, 4, 0]) - 40 * f) <= 12  # the frame's own file
        assert np.allclose(r["img"][30, 20], (200, 100, 50), atol=4)  # BGR order kept
        assert r["gt_bboxes"].tolist() == [[10 + f, 8, 40 + f, 30]]
        assert r["gt_instance_ids"].tolist() == [7]
        assert r["filename"].endswith(f"clip/{f:06d}.JPEG") and r["ori_shape"] == (72, 128, 3)


def test_resize_follows_mmcv_rounding_and_scales_boxes():
    # SPEC 3.6 example: 1280x720 -> 1000x563 at img_scale (1000, 600)
    img = np.full((720, 1280, 3), 90, np.uint8)
    res = [dict(img=img.copy(), img_fields=["img"], bbox_fields=["gt_bboxes"],
                gt_bboxes=np.array([[100, 100, 1280, 720]], np.float32)) for _ in range(2)]
    out = build(dict(type="SeqResize", img_scale=(1000, 600), keep_ratio=True))(res)
    for r in out:
        assert r["img"].shape == (563, 1000, 3) and r["img"].dtype == np.uint8
        assert r["scale_factor"].dtype == np.float32
        np.testing.assert_allclose(r["scale_factor"], [1000 / 1280, 563 / 720, 1000 / 1280, 563 / 720],
                                   rtol=1e-6)
        np.testing.assert_allclose(r["gt_bboxes"], [[78.125, 100 * 563 / 720, 1000, 563]], rtol=1e-5)


def test_resize_shares_the_random_scale_across_the_clip(tmp_path):
    clip = write_clip(tmp_path)
    load = build(dict(type="LoadMultiImagesFromFile"))
    shared = build(dict(type="SeqResize", img_scale=[(60, 30), (200, 120)], multiscale_mode="range",
                        keep_ratio=True, share_params=True))
    separate = build(dict(type="SeqResize", img_scale=[(60, 30), (200, 120)], multiscale_mode="range",
                          keep_ratio=True, share_params=False))
    np.random.seed(0)
    sizes_shared, mixed = set(), False
    for _ in range(10):
        out = shared(load([dict(r) for r in clip]))
        assert len({r["img"].shape for r in out}) == 1
        sizes_shared.add(out[0]["img"].shape)
        out = separate(load([dict(r) for r in clip]))
        mixed |= len({r["img"].shape for r in out}) > 1
    assert len(sizes_shared) > 1 and mixed  # the draw is random, and only shared when asked


def test_flip_decision_is_shared_and_boxes_follow_it(tmp_path):
    clip = loaded(tmp_path, size=(128, 72))
    resize = build(dict(type="SeqResize", img_scale=(128, 72), keep_ratio=True))
    flip = build(dict(type="SeqRandomFlip", share_params=True, flip_ratio=0.5))
    np.random.seed(3)
    seen = set()
    for _ in range(12):
        before = resize([dict(r) for r in clip])
        imgs, boxes = [r["img"].copy() for r in before], [r["gt_bboxes"].copy() for r in before]
        out = flip(before)
        flags = {r["flip"] for r in out}
        assert len(flags) == 1  # one decision for the clip
        seen |= flags
        for r, img, b in zip(out, imgs, boxes):
            if r["flip"]:
                assert r["flip_direction"] == "horizontal"
                np.testing.assert_array_equal(r["img"], img[:, ::-1])
                # x1' = W - x2, x2' = W - x1
                np.testing.assert_allclose(r["gt_bboxes"], np.stack(
                    [128 - b[:, 2], b[:, 1], 128 - b[:, 0], b[:, 3]], axis=1))
            else:
                np.testing.assert_array_equal(r["img"], img)
                np.testing.assert_array_equal(r["gt_bboxes"], b)
    assert seen == {True, False}
    f0 = clip[0]
    one = flip([dict(f0, img=f0["img"].copy(), gt_bboxes=np.array([[10, 8, 40, 30]], np.float32),
                     flip=True, flip_direction="horizontal")])[0]
    assert one["gt_bboxes"].tolist() == [[88, 8, 118, 30]]


def test_unshared_flip_can_differ_within_a_clip(tmp_path):
    clip = loaded(tmp_path, num_frames=4)
    flip = build(dict(type="SeqRandomFlip", share_params=False, flip_ratio=0.5))
    np.random.seed(0)
    assert any(len({r["flip"] for r in flip([dict(r) for r in clip])}) > 1 for _ in range(10))


def test_normalize_converts_to_rgb_float_and_pad_reaches_multiples_of_16(tmp_path):
    clip = loaded(tmp_path, size=(100, 50))
    out = build(dict(type="SeqNormalize", mean=MEAN, std=STD, to_rgb=True))(clip)
    for r in out:
        assert r["img"].dtype == np.float32
        # BGR (200, 100, 50) becomes RGB (50, 100, 200), then (x - mean) / std
        expected = (np.array([50, 100, 200]) - MEAN) / STD
        np.testing.assert_allclose(r["img"][30, 20], expected, atol=4 / 57)
        assert r["img_norm_cfg"]["to_rgb"] is True
    out = build(dict(type="SeqPad", size_divisor=16))(out)
    for r in out:
        assert r["img"].shape == (64, 112, 3) and r["pad_shape"] == (64, 112, 3)
        assert r["img_shape"] == (50, 100, 3)
        assert not r["img"][50:].any() and not r["img"][:, 100:].any()  # bottom/right zeros


def test_collated_training_batch_has_the_contract_shapes(tmp_path):
    pipeline = Compose(TRAIN_STEPS)
    np.random.seed(0)
    a = pipeline(write_clip(tmp_path / "a", num_frames=3, size=(128, 72), boxes=((10, 8, 40, 30),)))
    b = pipeline(write_clip(tmp_path / "b", num_frames=3, size=(96, 72), boxes=((4, 4, 20, 20), (30, 30, 60, 50))))
    batch = collate([a, b], samples_per_gpu=2)
    img, ref_img = batch["img"].data[0], batch["ref_img"].data[0]
    # a: 128x72 -> 100x56 -> pad 112x64; b: 96x72 -> 80x60 -> pad 80x64; batch max 64x112
    assert img.shape == (2, 3, 64, 112) and ref_img.shape == (2, 2, 3, 64, 112)
    assert img.dtype == torch.float32
    metas = batch["img_metas"].data[0]
    assert [m["img_shape"] for m in metas] == [(56, 100, 3), (60, 80, 3)]
    assert [m["pad_shape"] for m in metas] == [(64, 112, 3), (64, 80, 3)]
    assert metas[0]["scale_factor"].shape == (4,) and metas[0]["frame_id"] == 0
    assert {"filename", "ori_shape", "flip", "flip_direction", "img_norm_cfg"} <= set(metas[0])
    ref_metas = batch["ref_img_metas"].data[0]
    assert len(ref_metas) == 2 and [m["frame_id"] for m in ref_metas[0]] == [1, 2]
    gt_bboxes, gt_labels = batch["gt_bboxes"].data[0], batch["gt_labels"].data[0]
    assert [t.shape for t in gt_bboxes] == [(1, 4), (2, 4)] and gt_labels[1].dtype == torch.int64
    assert batch["gt_instance_ids"].data[0][1].tolist() == [7, 8]
    ref_b = batch["ref_gt_bboxes"].data[0][1]
    assert ref_b.shape == (4, 5) and ref_b[:, 0].tolist() == [0, 0, 1, 1]  # column 0 = reference index
    assert batch["ref_gt_labels"].data[0][1].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert batch["ref_gt_instance_ids"].data[0][0].shape == (2, 2)
    # reference boxes: each reference's own boxes, scaled (80/96, 60/72) and flipped with the clip
    sx, sy = 80 / 96, 60 / 72
    raw = np.array([b for f in (1, 2) for b in ([4 + f, 4, 20 + f, 20], [30 + f, 30, 60 + f, 50])], np.float64)
    expected = raw * [sx, sy, sx, sy]
    if metas[1]["flip"]:
        expected = np.stack([80 - expected[:, 2], expected[:, 1], 80 - expected[:, 0], expected[:, 3]], 1)
    np.testing.assert_allclose(ref_b[:, 1:].numpy(), expected, rtol=1e-5)


def test_test_pipeline_with_and_without_references(tmp_path):
    steps = [
        dict(type="LoadMultiImagesFromFile"),
        dict(type="SeqResize", img_scale=(100, 60), keep_ratio=True),
        dict(type="SeqRandomFlip", share_params=True, flip_ratio=0.0),
        dict(type="SeqNormalize", mean=MEAN, std=STD, to_rgb=True),
        dict(type="SeqPad", size_divisor=16),
        dict(type="VideoCollect", keys=["img"], meta_keys=("num_left_ref_imgs", "frame_stride")),
        dict(type="ConcatVideoReferences"),
        dict(type="MultiImagesToTensor", ref_prefix="ref"),
        dict(type="ToList"),
    ]
    pipeline = Compose(steps)
    clip = write_clip(tmp_path, num_frames=5)
    for r in clip:
        del r["ann_info"]
    clip[0]["img_info"].update(num_left_ref_imgs=2, frame_stride=1)
    with_refs = collate([pipeline([dict(r) for r in clip])], samples_per_gpu=1)
    assert with_refs["img"][0].shape == (1, 3, 64, 112)
    assert with_refs["ref_img"][0].shape == (1, 4, 3, 64, 112)
    meta = with_refs["img_metas"][0].data[0][0]
    assert meta["frame_id"] == 0 and meta["num_left_ref_imgs"] == 2 and meta["frame_stride"] == 1
    assert meta["flip"] is False
    assert [m["frame_id"] for m in with_refs["ref_img_metas"][0].data[0][0]] == [1, 2, 3, 4]
    key_only = collate([pipeline([dict(clip[3])])], samples_per_gpu=1)
    assert set(key_only) == {"img", "img_metas"} and key_only["img"][0].shape == (1, 3, 64, 112)
    assert key_only["img_metas"][0].data[0][0]["frame_id"] == 3


def test_missing_and_corrupt_image_files_are_named(tmp_path):
    clip = write_clip(tmp_path)
    missing = tmp_path / "clip" / "000001.JPEG"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="000001.JPEG") as e:
        build(dict(type="LoadMultiImagesFromFile"))(clip)
    assert "image id 2" in str(e.value)
    missing.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="could not decode image file .*000001.JPEG"):
        build(dict(type="LoadMultiImagesFromFile"))(write_clip(tmp_path, num_frames=1) + [clip[1]])


def test_steps_reject_a_single_dict_and_a_clip_without_references(tmp_path):
    clip = loaded(tmp_path, num_frames=1)
    with pytest.raises(TypeError, match="SeqResize expects the list"):
        build(dict(type="SeqResize", img_scale=(100, 60), keep_ratio=True))(clip[0])
    collected = build(dict(type="VideoCollect", keys=["img", "gt_bboxes"]))(clip)
    with pytest.raises(ValueError, match="at least one reference"):
        build(dict(type="SeqDefaultFormatBundle"))(build(dict(type="ConcatVideoReferences"))(collected))
    with pytest.raises(KeyError, match="gt_masks"):
        build(dict(type="VideoCollect", keys=["img", "gt_masks"]))(clip)
