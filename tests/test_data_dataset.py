"""CocoVID datasets (clab.data.coco_video) on small json + JPEG sets written to disk (SPEC 3.4, 3.5, 4)."""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from mmcv import Config
from mmdet.datasets import build_dataloader, build_dataset

from clab.data import CocoVID, CocoVideoDataset, ImagenetVIDDataset
from clab.data.classes import IMAGENET_VID_CLASSES, OTHER_CATEGORY

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "_base_" / "datasets"
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
CATS = (("a", 1), ("b", 2), ("c", 3))
TRAIN_PIPELINE = [
    dict(type="LoadMultiImagesFromFile"),
    dict(type="SeqLoadAnnotations", with_bbox=True, with_track=True),
    dict(type="SeqResize", img_scale=(128, 64), keep_ratio=True, share_params=True),
    dict(type="SeqRandomFlip", share_params=True, flip_ratio=0.5),
    dict(type="SeqNormalize", mean=MEAN, std=STD, to_rgb=True),
    dict(type="SeqPad", size_divisor=16),
    dict(type="VideoCollect", keys=["img", "gt_bboxes", "gt_labels", "gt_instance_ids"]),
    dict(type="ConcatVideoReferences"),
    dict(type="SeqDefaultFormatBundle", ref_prefix="ref"),
]
TEST_PIPELINE = [
    dict(type="LoadMultiImagesFromFile"),
    dict(type="SeqResize", img_scale=(128, 64), keep_ratio=True, share_params=True),
    dict(type="SeqRandomFlip", share_params=True, flip_ratio=0.0),
    dict(type="SeqNormalize", mean=MEAN, std=STD, to_rgb=True),
    dict(type="SeqPad", size_divisor=16),
    dict(type="VideoCollect", keys=["img"], meta_keys=("num_left_ref_imgs", "frame_stride")),
    dict(type="ConcatVideoReferences"),
    dict(type="MultiImagesToTensor", ref_prefix="ref"),
    dict(type="ToList"),
]
BILATERAL = dict(num_ref_imgs=2, frame_range=2, filter_key_img=True, method="bilateral_uniform")
ADAPTIVE = dict(num_ref_imgs=4, frame_range=[-2, 2], method="test_with_adaptive_stride")


def train_videos():
    """wide0: 64x48, key frames 1, 3, 5 (frame 3 without objects); tall1: 40x56, key frames 0, 2, 4 (frame
    4 holds only an object of category 3, not a class); tiny2: 30x40 (min side < 32)."""
    wide = {f: [(1, 11, [4 + 2 * f, 10, 20, 16]), (2, 12, [30, 20, 12, 12])] for f in range(6) if f != 3}
    tall = {f: [(2, 21, [5, 5 + 3 * f, 20, 20])] for f in range(4)}
    tall[4] = [(3, 22, [5, 5, 10, 10])]
    return [
        dict(name="train/wide0", num_frames=6, width=64, height=48, train_frames=(1, 3, 5), objects=wide),
        dict(name="train/tall1", num_frames=5, width=40, height=56, train_frames=(0, 2, 4), objects=tall),
        dict(name="train/tiny2", num_frames=4, width=30, height=40, train_frames=(0, 2)),
    ]


def val_videos(train_frames=()):
    return [dict(name="val/v0", num_frames=6, width=64, height=48, train_frames=train_frames),
            dict(name="val/v1", num_frames=3, width=64, height=48, train_frames=())]


def dataset(ann: Path, cls=CocoVideoDataset, **kw):
    kw.setdefault("pipeline", TRAIN_PIPELINE)
    kw.setdefault("ref_img_sampler", BILATERAL)
    kw.setdefault("classes", ("a", "b"))
    return cls(ann_file=str(ann), img_prefix=str(ann.parents[1] / "Data" / "VID"), **kw)


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------- CocoVID index
def test_cocovid_orders_frames_by_frame_id_and_indexes_instances(cocovid_set):
    ann = cocovid_set(train_videos(), categories=CATS)
    edit_json(ann, lambda d: random.Random(0).shuffle(d["images"]))
    coco = CocoVID(str(ann))
    assert coco.get_vid_ids() == [1, 2, 3]
    ids = coco.get_img_ids_from_vid(1)
    assert [coco.imgs[i]["frame_id"] for i in ids] == list(range(6))
    assert coco.get_ins_ids_from_vid(1) == [11, 12] and coco.get_ins_ids_from_vid(2) == [21, 22]
    assert coco.cat_img_map is coco.catToImgs and len(coco.img_ann_map[ids[0]]) == 2


# --------------------------------------------------------------------------------------- training set
def test_training_keeps_key_frames_with_ground_truth_and_sets_group_flags(cocovid_set):
    ds = dataset(cocovid_set(train_videos(), categories=CATS))
    got = [(info["file_name"].split("/")[1], info["frame_id"]) for info in ds.data_infos]
    # wide0 frame 3: no objects; tall1 frame 4: only category 3; tiny2: min side 30 < 32
    assert got == [("wide0", 1), ("wide0", 5), ("tall1", 0), ("tall1", 2)]
    assert ds.img_ids == [info["id"] for info in ds.data_infos]
    assert ds.flag.tolist() == [1, 1, 0, 0]
    assert ds.CLASSES == ("a", "b") and ds.cat_ids == [1, 2]


def test_training_without_flags_uses_the_key_frame_interval(cocovid_set):
    videos = [dict(name="train/v", num_frames=7, width=64, height=48, train_frames=None)]
    ds = dataset(cocovid_set(videos), key_img_sampler=dict(interval=3))
    assert [info["frame_id"] for info in ds.data_infos] == [0, 3, 6]


def test_ground_truth_parsing_filters_boxes_and_keeps_instance_ids(cocovid_set):
    objects = {0: [(1, 5, [10, 10, 20, 10]),      # kept
                   (2, 6, [0, 0, 0.5, 10]),       # w < 1
                   (1, 7, [70, 10, 10, 10]),      # outside the 64x48 image
                   (1, 8, [10, 10, 10, 10]),      # area set to 0 below
                   (2, 9, [30, 20, 10, 10]),      # flagged ignore below
                   (2, 10, [40, 30, 10, 8]),      # iscrowd below -> bboxes_ignore
                   (3, 11, [5, 5, 10, 10]),       # category outside the classes
                   (2, 12, [50, 2, 12, 40])]}     # kept, clipped later by nothing: inside
    ann = cocovid_set([dict(name="train/v", num_frames=1, width=64, height=48, train_frames=(0,),
                            objects=objects)], categories=CATS)

    def mark(d):
        d["annotations"][3]["area"] = 0
        d["annotations"][4]["ignore"] = True
        d["annotations"][5]["iscrowd"] = True
    edit_json(ann, mark)
    gt = dataset(ann).get_ann_info(0)
    np.testing.assert_array_equal(gt["bboxes"], [[10, 10, 30, 20], [50, 2, 62, 42]])
    assert gt["bboxes"].dtype == np.float32
    assert gt["labels"].tolist() == [0, 1] and gt["labels"].dtype == np.int64
    assert gt["instance_ids"].tolist() == [5, 12]
    np.testing.assert_array_equal(gt["bboxes_ignore"], [[40, 30, 50, 38]])


def test_train_item_is_key_plus_bilateral_references_of_the_same_video(cocovid_set):
    ds = dataset(cocovid_set(train_videos(), categories=CATS))
    ds.rng = random.Random(0)
    infos = ds.ref_img_sampling(ds.data_infos[0], **ds.ref_img_sampler)  # wide0 frame 1, range 2
    assert infos[0]["frame_id"] == 1 and infos[0]["id"] == ds.data_infos[0]["id"]
    assert infos[1]["frame_id"] == 0 and infos[2]["frame_id"] in (2, 3)
    assert all(i["video_id"] == 1 and i["filename"] == i["file_name"] for i in infos)
    item = ds[2]  # tall1 frame 0: the one right-side reference is duplicated (SPEC 1.11)
    metas = item["ref_img_metas"].data
    assert len(metas) == 2 and metas[0]["frame_id"] == metas[1]["frame_id"] in (1, 2)
    assert item["ref_img"].data.shape[0] == 2
    assert item["ref_gt_bboxes"].data[:, 0].tolist() == [0, 1]


def test_dataset_pickles_for_spawned_loader_workers(cocovid_set):
    ds = pickle.loads(pickle.dumps(dataset(cocovid_set(train_videos(), categories=CATS))))
    assert len(ds) == 4 and ds[0]["ref_img"].data.shape[0] == 2


def test_collated_training_batch_has_the_contract_shapes(cocovid_set):
    ds = dataset(cocovid_set(train_videos(), categories=CATS))
    loader = build_dataloader(ds, samples_per_gpu=2, workers_per_gpu=0, num_gpus=1, dist=False, shuffle=True,
                              seed=0)
    batches = list(loader)
    assert len(batches) == 2  # two aspect groups of two
    for batch in batches:
        img, ref = batch["img"].data[0], batch["ref_img"].data[0]
        assert img.shape[:2] == (2, 3) and ref.shape[:3] == (2, 2, 3)
        assert img.shape[2] % 16 == 0 and img.shape[3] % 16 == 0 and ref.shape[3:] == img.shape[2:]
        metas = batch["img_metas"].data[0]
        assert len(metas) == 2 and len({m["ori_shape"] for m in metas}) == 1  # one aspect group
        assert all(len(m) == 2 for m in batch["ref_img_metas"].data[0])
        for boxes, labels, ids, rb, rl in zip(batch["gt_bboxes"].data[0], batch["gt_labels"].data[0],
                                              batch["gt_instance_ids"].data[0], batch["ref_gt_bboxes"].data[0],
                                              batch["ref_gt_labels"].data[0]):
            assert boxes.shape[1] == 4 and len(labels) == len(ids) == len(boxes) > 0
            assert rb.shape[1] == 5 and rl.shape[1] == 2 and set(rb[:, 0].tolist()) <= {0.0, 1.0}
            assert rl[:, 0].tolist() == rb[:, 0].tolist()


def test_det_images_use_copies_of_the_key_and_arange_instance_ids(tmp_path):
    import cv2
    cats = [{"id": i + 1, "name": n, "encode_name": n} for i, n in enumerate(IMAGENET_VID_CLASSES)]
    cats.append(dict(OTHER_CATEGORY))
    images, anns = [], []
    specs = [(1, True, [(5, [2, 2, 20, 20]), (31, [30, 10, 20, 20])]), (2, True, [(31, [4, 4, 10, 10])]),
             (3, False, [(1, [2, 2, 20, 20])]), (4, True, [(1, [2, 2, 20, 20]), (30, [30, 20, 30, 20])])]
    for img_id, flag, objs in specs:
        name = f"train/ILSVRC2014_train_0000/img_{img_id}.JPEG"
        images.append({"id": img_id, "file_name": name, "height": 48, "width": 64, "is_vid_train_frame": flag})
        path = tmp_path / "Data" / "DET" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((48, 64, 3), 90, np.uint8))
        for cat, box in objs:
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": False})
    ann = tmp_path / "det.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    ds = ImagenetVIDDataset(ann_file=str(ann), img_prefix=str(tmp_path / "Data" / "DET"), load_as_video=False,
                            ref_img_sampler=dict(num_ref_imgs=2, frame_range=0, filter_key_img=False,
                                                 method="bilateral_uniform"), pipeline=TRAIN_PIPELINE)
    # image 2 holds only category 31 (ignored), image 3 is not a VID train frame
    assert ds.img_ids == [1, 4]
    gt = ds.get_ann_info(1)
    assert gt["labels"].tolist() == [0, 29] and gt["instance_ids"].tolist() == [0, 1]
    infos = ds.ref_img_sampling(ds.data_infos[1], **ds.ref_img_sampler)
    assert [i["id"] for i in infos] == [4, 4, 4] and infos[1] is not infos[2]
    item = ds[1]
    assert item["ref_img"].data.shape[0] == 2
    np.testing.assert_array_equal(item["ref_img"].data[0], item["img"].data)
    assert item["ref_gt_instance_ids"].data.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert item["img_metas"].data["frame_id"] == -1


def test_imagenet_vid_labels_follow_the_class_tuple_not_the_json_order(cocovid_set):
    cats = tuple((n, i + 1) for i, n in enumerate(IMAGENET_VID_CLASSES))[::-1]  # json lists zebra first
    videos = [dict(name="train/v", num_frames=3, width=64, height=48, train_frames=(1,),
                   objects={f: [(30, 1, [5, 5, 20, 20]), (1, 2, [30, 5, 20, 20])] for f in range(3)})]
    ds = dataset(cocovid_set(videos, categories=cats), cls=ImagenetVIDDataset, classes=None)
    assert ds.CLASSES == IMAGENET_VID_CLASSES and len(ds) == 1
    assert ds.get_ann_info(0)["labels"].tolist() == [29, 0]


# ------------------------------------------------------------------------------------------- test set
def test_test_mode_keeps_every_frame_in_video_order(cocovid_set):
    ann = cocovid_set(val_videos())
    edit_json(ann, lambda d: d["images"].reverse())
    ds = dataset(ann, pipeline=TEST_PIPELINE, ref_img_sampler=ADAPTIVE, test_mode=True)
    assert [(i["video_id"], i["frame_id"]) for i in ds.data_infos] == [(1, f) for f in range(6)] + [
        (2, f) for f in range(3)]


def test_test_mode_refuses_training_frames(cocovid_set):
    ann = cocovid_set(val_videos(train_frames=(2,)))
    with pytest.raises(ValueError, match="is_vid_train_frame=true"):
        dataset(ann, pipeline=TEST_PIPELINE, ref_img_sampler=ADAPTIVE, test_mode=True)


def test_adaptive_stride_test_items_carry_references_only_at_frame_zero(cocovid_set):
    ds = dataset(cocovid_set(val_videos()), pipeline=TEST_PIPELINE, ref_img_sampler=ADAPTIVE, test_mode=True)
    first = ds[0]
    # 64x48 frames at img_scale (128, 64): x4/3 -> 85x64, padded to 96x64
    assert first["img"][0].shape == (3, 64, 96) and first["ref_img"][0].shape == (4, 3, 64, 96)
    # L = 6, 4 references: round(i * 5 / 3) = 0, 2, 3, 5
    assert [m["frame_id"] for m in first["ref_img_metas"][0].data] == [0, 2, 3, 5]
    assert "ann_info" not in first and "gt_bboxes" not in first
    for idx in range(1, 6):
        item = ds[idx]
        assert set(item) == {"img", "img_metas"} and item["img_metas"][0].data["frame_id"] == idx
    assert [m["frame_id"] for m in ds[6]["ref_img_metas"][0].data] == [0, 1, 1, 2]  # second video


def test_fix_stride_items_record_the_window_in_the_meta(cocovid_set):
    ds = dataset(cocovid_set(val_videos()), pipeline=TEST_PIPELINE, test_mode=True,
                 ref_img_sampler=dict(num_ref_imgs=4, frame_range=[-2, 2], stride=1, method="test_with_fix_stride"))
    first = ds[0]
    assert [m["frame_id"] for m in first["ref_img_metas"][0].data] == [0, 0, 0, 1, 2]
    meta = first["img_metas"][0].data
    assert meta["num_left_ref_imgs"] == 2 and meta["frame_stride"] == 1
    assert [m["frame_id"] for m in ds[1]["ref_img_metas"][0].data] == [3]  # one new frame, not two
    assert [m["frame_id"] for m in ds[5]["ref_img_metas"][0].data] == [5]


def test_test_sampler_warns_and_resets_num_ref_imgs(cocovid_set):
    ann = cocovid_set(val_videos())
    with pytest.warns(UserWarning, match="num_ref_imgs=4"):
        ds = dataset(ann, pipeline=TEST_PIPELINE, test_mode=True, ref_img_sampler=dict(ADAPTIVE, num_ref_imgs=10))
    assert ds.ref_img_sampler["num_ref_imgs"] == 4 and ds[0]["ref_img"][0].shape[0] == 4


# ----------------------------------------------------------------------------------------- evaluation
def perfect_detections(ds, shift_every=0):
    dets = []
    for i, info in enumerate(ds.data_infos):
        gt = ds.get_ann_info(info)
        frame = [np.zeros((0, 5), np.float32) for _ in ds.CLASSES]
        for box, label in zip(gt["bboxes"], gt["labels"]):
            box = box.copy()
            if shift_every and i % shift_every == 0:
                box[[0, 2]] += (box[2] - box[0])  # IoU 0 with the ground truth
            frame[label] = np.vstack([frame[label], np.append(box, 0.9)[None]]).astype(np.float32)
        dets.append(frame)
    return dets


def test_evaluate_gives_map50_one_for_perfect_detections_and_less_for_shifted_ones(cocovid_set):
    ds = dataset(cocovid_set(val_videos()), pipeline=TEST_PIPELINE, ref_img_sampler=ADAPTIVE, test_mode=True)
    perfect = ds.evaluate({"det_bboxes": perfect_detections(ds)}, metric="bbox")
    assert perfect["bbox_mAP_50"] == pytest.approx(1.0)
    assert {"bbox_mAP", "bbox_mAP_75", "bbox_mAP_copypaste"} <= set(perfect)
    shifted = ds.evaluate(perfect_detections(ds, shift_every=3), metric=["bbox"])  # 3 of 9 frames missed
    assert 0.3 < shifted["bbox_mAP_50"] < 0.6
    with pytest.raises(ValueError, match="9"):
        ds.evaluate({"det_bboxes": perfect_detections(ds)[:-1]})
    with pytest.raises(ValueError, match="only 'bbox'"):
        ds.evaluate({"det_bboxes": perfect_detections(ds)}, metric="track")
    with pytest.raises(ValueError, match="det_bboxes"):
        ds.evaluate({"track_bboxes": []})


# ----------------------------------------------------------------------------------------- bad inputs
def test_missing_or_malformed_json_names_the_file(tmp_path, cocovid_set):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        dataset(tmp_path / "annotations" / "nope.json")
    bad = tmp_path / "annotations" / "bad.json"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match=r"bad\.json: not valid json"):
        dataset(bad)
    ann = cocovid_set(train_videos(), categories=CATS)
    edit_json(ann, lambda d: d.pop("videos"))
    with pytest.raises(ValueError, match=r"vid\.json: missing top-level list 'videos'"):
        dataset(ann)


@pytest.mark.parametrize("section,index,field", [("images", 3, "frame_id"), ("images", 0, "file_name"),
                                                 ("annotations", 2, "bbox"), ("annotations", 0, "instance_id")])
def test_a_record_without_a_required_field_is_named(cocovid_set, section, index, field):
    ann = cocovid_set(train_videos(), categories=CATS)
    edit_json(ann, lambda d: d[section][index].pop(field))
    with pytest.raises(ValueError, match=rf"vid\.json: {section} record \(id \d+\) has no field '{field}'"):
        dataset(ann)


def test_inconsistent_records_are_rejected(cocovid_set):
    ann = cocovid_set(train_videos(), categories=CATS)
    edit_json(ann, lambda d: d["images"][1].update(frame_id=0))
    with pytest.raises(ValueError, match="frame_id values of video 'train/wide0'"):
        dataset(ann)
    ann = cocovid_set(train_videos(), categories=CATS)
    edit_json(ann, lambda d: d["annotations"][0].update(image_id=999))
    with pytest.raises(ValueError, match="image_id 999"):
        dataset(ann)
    ann = cocovid_set(train_videos(), categories=CATS)
    with pytest.raises(ValueError, match=r"no category named \['zebra'\]"):
        dataset(ann, classes=("a", "zebra"))
    with pytest.raises(ValueError, match="unknown key.*'num_refs'"):
        dataset(ann, ref_img_sampler=dict(BILATERAL, num_refs=2))
    with pytest.raises(ValueError, match="unknown reference sampling method 'bilateral'"):
        dataset(ann, ref_img_sampler=dict(BILATERAL, method="bilateral"))
    with pytest.raises(ValueError, match="no images left"):
        dataset(cocovid_set(val_videos()))  # a json without training frames, used for training


def test_missing_image_files_are_named_at_construction_and_at_loading(cocovid_set, tmp_path):
    ann = cocovid_set(train_videos(), categories=CATS)
    first = tmp_path / "Data" / "VID" / "train" / "wide0" / "000001.JPEG"
    first.unlink()
    with pytest.raises(FileNotFoundError, match=r"train/wide0/000001\.JPEG"):
        dataset(ann)
    ds = dataset(ann, check_files=False)
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*train/wide0/000001\.JPEG"):
        ds[0]


# ------------------------------------------------------------------------------------ synthetic set
def test_synthetic_set_runs_through_the_config_pipelines(tmp_path):
    synthetic = pytest.importorskip("clab.data.synthetic")
    root = synthetic.make_synthetic(tmp_path / "synthetic", seed=0, train_videos=2, val_videos=1, frames=6)
    cfg = Config.fromfile(str(CONFIGS / "synthetic-vid.py"))
    assert tuple(cfg.classes) == tuple(synthetic.SYNTHETIC_CLASSES)
    for split, part in (("train", cfg.data.train), ("val", cfg.data.test)):
        part.ann_file = str(root / "annotations" / f"synthetic_vid_{split}.json")
        part.img_prefix = str(root / "Data" / "VID")
    train = build_dataset(cfg.data.train)
    assert len(train) >= 2 and train.CLASSES == tuple(synthetic.SYNTHETIC_CLASSES)
    for i in range(len(train)):
        item = train[i]
        h, w = item["img_metas"].data["img_shape"][:2]
        assert (h, w) == (96, 160) and item["img"].data.shape == (3, 96, 160)  # 160x96 frames kept at their size
        assert item["ref_img"].data.shape[:2] == (2, 3)
        boxes = item["gt_bboxes"].data
        assert len(boxes) > 0 and (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()
    batch = next(iter(build_dataloader(train, 2, 0, num_gpus=1, dist=False, shuffle=False)))
    assert batch["img"].data[0].shape[0] == 2 and batch["ref_img"].data[0].shape[:3] == (2, 2, 3)
    test = build_dataset(cfg.data.test)
    assert len(test) == 6
    items = [test[i] for i in range(len(test))]
    assert items[0]["ref_img"][0].shape[0] == 4 and all("ref_img" not in it for it in items[1:])
    assert test.evaluate({"det_bboxes": perfect_detections(test)})["bbox_mAP_50"] == pytest.approx(1.0)


def test_imagenet_config_matches_the_spec():
    cfg = Config.fromfile(str(CONFIGS / "imagenet-vid-det_troi.py"))
    vid, det = cfg.data.train
    assert cfg.data.samples_per_gpu == 2 and cfg.data_root == "data/ILSVRC/"
    assert vid.ref_img_sampler == dict(num_ref_imgs=2, frame_range=9, filter_key_img=True, method="bilateral_uniform")
    assert det.load_as_video is False and det.ref_img_sampler.frame_range == 0
    assert det.ref_img_sampler.filter_key_img is False
    assert cfg.data.test.ref_img_sampler == dict(num_ref_imgs=14, frame_range=[-7, 7],
                                                 method="test_with_adaptive_stride")
    assert cfg.data.test.test_mode and cfg.data.test.ann_file.endswith("annotations/imagenet_vid_val.json")
    resize = [s for s in cfg.train_pipeline if s.type == "SeqResize"][0]
    assert resize.img_scale == (1000, 600) and resize.keep_ratio
