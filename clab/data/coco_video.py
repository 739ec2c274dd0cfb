"""CocoVID annotations and the video datasets built on them (SPEC 3.2, 3.4, 3.5, 4).

- ``CocoVID``: the COCO api (mmdet's pycocotools wrapper) plus a video index: ``get_vid_ids``,
  ``get_img_ids_from_vid`` (ordered by ``frame_id``), ``get_ins_ids_from_vid``. The json is checked when
  it is read, so a missing file, malformed json or a record without a required field fails at once with
  an error that names the file, the record and the field.
- ``CocoVideoDataset`` (mmdet ``CocoDataset``, registered in ``DATASETS`` under mmtracking 0.14's name and
  arguments): one item is a key frame plus reference frames chosen by ``clab.data.ref_sampling``; the
  pipeline receives the list ``[key, *refs]`` of mmdet result dicts (each with its own ``ann_info`` in
  training). ``evaluate`` scores ``{'det_bboxes': [...]}`` with mmdet's COCO evaluation, so
  ``bbox_mAP_50`` is exactly mmdet's/mmtracking's number.
- ``ImagenetVIDDataset``: the 30 ImageNet VID classes; ``load_as_video=False`` reads the DET json.

Key frames: when the json's images carry ``is_vid_train_frame``, training uses exactly the images where it
is true (``key_img_sampler`` is then ignored) and testing uses every frame, refusing a json in which any
frame is a training frame; without that field ``key_img_sampler=dict(interval=k)`` keeps every k-th frame.
Labels are the index of the category name in ``CLASSES`` (or ``classes``); without either, every
category of the json is a class, in id order.
"""
from __future__ import annotations

import json
import os.path as osp
import random
from collections import defaultdict

import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.datasets.builder import DATASETS

from . import ref_sampling
from .classes import IMAGENET_VID_CLASSES

IMAGE_FIELDS = ("id", "file_name", "height", "width")
VIDEO_IMAGE_FIELDS = ("video_id", "frame_id")
ANN_FIELDS = ("id", "image_id", "category_id", "bbox", "area")
VIDEO_ANN_FIELDS = ("instance_id",)
CATEGORY_FIELDS = ("id", "name")
REF_SAMPLER_KEYS = ("frame_range", "stride", "num_ref_imgs", "filter_key_img", "method", "return_key_img",
                    "duplicate_single_ref")


def load_coco_json(path: str, require_video: bool = True) -> dict:
    """Read and check a COCO / CocoVID json file (SPEC 3.2).

    Checks: the file exists and parses; the top level is an object with lists ``images``,
    ``annotations`` and ``categories`` (and ``videos`` when ``require_video``); every image has
    ``id, file_name, height, width`` (and ``video_id, frame_id`` when ``require_video``); every annotation
    has ``id, image_id, category_id, bbox [x, y, w, h], area`` (and ``instance_id`` when
    ``require_video``) and refers to an existing image; ids are unique; every image's video is listed in
    ``videos``. A missing ``iscrowd`` is read as 0. Unknown fields are kept and ignored.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: malformed json or a record that breaks the rules above; the message names ``path``,
            the record and the field.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid json ({e.msg} at line {e.lineno}, column {e.colno})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a json object, got {type(data).__name__}")
    keys = ("images", "annotations", "categories") + (("videos",) if require_video else ())
    for key in keys:
        if key not in data:
            raise ValueError(f"{path}: missing top-level list '{key}'")
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")

    def check_fields(section: str, records: list, fields: tuple) -> None:
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: {section}[{i}] must be an object, got {type(rec).__name__}")
            for field in fields:
                if field not in rec:
                    name = f"id {rec['id']}" if "id" in rec else f"index {i}"
                    raise ValueError(f"{path}: {section} record ({name}) has no field '{field}'")

    check_fields("images", data["images"], IMAGE_FIELDS + (VIDEO_IMAGE_FIELDS if require_video else ()))
    check_fields("annotations", data["annotations"], ANN_FIELDS + (VIDEO_ANN_FIELDS if require_video else ()))
    check_fields("categories", data["categories"], CATEGORY_FIELDS)
    if require_video:
        check_fields("videos", data["videos"], ("id",))

    for section in ("images", "annotations", "categories") + (("videos",) if require_video else ()):
        ids = [rec["id"] for rec in data[section]]
        if len(set(ids)) != len(ids):
            seen, dup = set(), None
            for i in ids:
                if i in seen:
                    dup = i
                    break
                seen.add(i)
            raise ValueError(f"{path}: {section} ids are not unique (id {dup} occurs more than once)")
    for img in data["images"]:
        h, w = img["height"], img["width"]
        if not (isinstance(h, (int, float)) and isinstance(w, (int, float)) and h > 0 and w > 0):
            raise ValueError(f"{path}: image id {img['id']} has height={h!r}, width={w!r}; expected "
                             f"positive numbers")
    img_ids = {img["id"] for img in data["images"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in img_ids:
            raise ValueError(f"{path}: annotation id {ann['id']} refers to image_id {ann['image_id']}, "
                             f"which is not in 'images'")
        bbox = ann["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                and all(isinstance(v, (int, float)) for v in bbox)):
            raise ValueError(f"{path}: annotation id {ann['id']} has bbox={bbox!r}; expected [x, y, w, h]")
        ann.setdefault("iscrowd", 0)
    if require_video:
        vid_ids = {vid["id"] for vid in data["videos"]}
        for img in data["images"]:
            if img["video_id"] not in vid_ids:
                raise ValueError(f"{path}: image id {img['id']} refers to video_id {img['video_id']}, "
                                 f"which is not in 'videos'")
    return data


class CocoVID(COCO):
    """COCO api over a CocoVID json, with a video index (mmtracking's ``CocoVID``).

    Args:
        annotation_file: path of the json (SPEC 3.2), checked by ``load_coco_json``.
        require_video: if True (VID) images need ``video_id``/``frame_id`` and the frame ids of every
            video must be exactly 0..n-1; if False (a DET json) images without a video are allowed and
            are simply left out of the video index.
    """

    def __init__(self, annotation_file: str, require_video: bool = True):
        self.annotation_file = annotation_file
        self.require_video = require_video
        super().__init__(annotation_file=None)
        self.dataset = load_coco_json(annotation_file, require_video)
        self.createIndex()

    def createIndex(self):  # noqa: N802 (pycocotools name)
        super().createIndex()
        # mmdet's snake-case aliases point at the dicts built by the base index
        self.img_ann_map = self.imgToAnns
        self.cat_img_map = self.catToImgs
        self.videos = {vid["id"]: vid for vid in self.dataset.get("videos", [])}
        self.vidToImgs = defaultdict(list)
        self.vidToInstances = defaultdict(list)
        self.instancesToImgs = defaultdict(list)
        for img in self.dataset.get("images", []):
            if "video_id" in img and "frame_id" in img:
                self.vidToImgs[img["video_id"]].append(img)
        for ann in self.dataset.get("annotations", []):
            if "instance_id" in ann:
                self.instancesToImgs[ann["instance_id"]].append(ann["image_id"])
                vid = ann.get("video_id", self.imgs[ann["image_id"]].get("video_id"))
                if vid is not None and ann["instance_id"] not in self.vidToInstances[vid]:
                    self.vidToInstances[vid].append(ann["instance_id"])
        self._frame_order = {}
        for vid, imgs in self.vidToImgs.items():
            ordered = sorted(imgs, key=lambda img: img["frame_id"])
            frame_ids = [img["frame_id"] for img in ordered]
            if frame_ids != list(range(len(ordered))):
                name = self.videos.get(vid, {}).get("name", vid)
                raise ValueError(
                    f"{self.annotation_file}: the frame_id values of video {name!r} (id {vid}) must be "
                    f"0..{len(ordered) - 1} without gaps or repeats, got {frame_ids[:10]}"
                    f"{'...' if len(frame_ids) > 10 else ''}")
            self._frame_order[vid] = [img["id"] for img in ordered]

    def get_vid_ids(self, vid_ids=None) -> list:
        """All video ids in json order, or those of ``vid_ids`` that exist."""
        if vid_ids is None or (isinstance(vid_ids, (list, tuple)) and len(vid_ids) == 0):
            return list(self.videos.keys())
        vid_ids = vid_ids if isinstance(vid_ids, (list, tuple)) else [vid_ids]
        return [v for v in vid_ids if v in self.videos]

    def get_img_ids_from_vid(self, vid_id) -> list:
        """Image ids of one video, index = ``frame_id``."""
        return list(self._frame_order.get(vid_id, []))

    def get_ins_ids_from_vid(self, vid_id) -> list:
        """Instance ids that occur in one video, in order of first appearance."""
        return list(self.vidToInstances.get(vid_id, []))

    def get_img_ids_from_ins_id(self, ins_id) -> list:
        """Image ids in which an instance occurs."""
        return list(self.instancesToImgs.get(ins_id, []))

    def load_vids(self, ids) -> list[dict]:
        """Video records for one id or a list of ids."""
        ids = ids if isinstance(ids, (list, tuple)) else [ids]
        return [self.videos[i] for i in ids]


@DATASETS.register_module()
class CocoVideoDataset(CocoDataset):
    """A CocoVID (or COCO) dataset whose items are a key frame and its reference frames (SPEC 3.4, 3.5).

    Args (besides mmdet ``CocoDataset``'s ``ann_file, pipeline, classes, data_root, img_prefix,
    proposal_file, test_mode, filter_empty_gt, file_client_args``):
        load_as_video: True: a CocoVID json, images grouped by video in frame order. False: a plain
            COCO json (DET), whose references are copies of the key image.
        key_img_sampler: ``dict(interval=k)``, used only when the json has no ``is_vid_train_frame``.
        ref_img_sampler: ``dict(method, frame_range, num_ref_imgs, stride=1, filter_key_img=True,
            return_key_img=True, duplicate_single_ref=True)`` (see ``clab.data.ref_sampling``), or None
            for no references (the pipeline then gets one dict instead of a list).
        test_load_ann: also attach ``ann_info`` in test mode.
        check_files: check at construction that the first image of every video (or the first image of
            a DET json) exists under ``img_prefix``, so a wrong data root fails before any work starts.

    Attributes:
        rng: the random source of the training samplers: None (default) uses the ``random`` module, which
            mmdet's data-loader workers seed; set a ``random.Random`` for exact reproducibility.
    """

    CLASSES = None

    def __init__(self, *args, load_as_video: bool = True, key_img_sampler: dict | None = None,
                 ref_img_sampler: dict | None = dict(frame_range=10, stride=1, num_ref_imgs=1,
                                                     filter_key_img=True, method="uniform",
                                                     return_key_img=True),
                 test_load_ann: bool = False, check_files: bool = True, **kwargs):
        self.load_as_video = load_as_video
        self.key_img_sampler = dict(interval=1) if key_img_sampler is None else dict(key_img_sampler)
        self.ref_img_sampler = self._check_ref_img_sampler(ref_img_sampler)
        self.test_load_ann = test_load_ann
        self.rng: random.Random | None = None
        super().__init__(*args, **kwargs)
        if not self.data_infos:
            raise ValueError(f"{self.ann_file}: no images left to use "
                             f"({'test' if self.test_mode else 'training'} mode, after filtering)")
        if check_files:
            self._check_image_files()

    # ---------------------------------------------------------------- configuration checks
    @staticmethod
    def _check_ref_img_sampler(cfg: dict | None) -> dict | None:
        if cfg is None:
            return None
        unknown = sorted(set(cfg) - set(REF_SAMPLER_KEYS))
        if unknown:
            raise ValueError(f"ref_img_sampler: unknown key(s) {unknown}; expected some of {REF_SAMPLER_KEYS}")
        out = dict(frame_range=10, stride=1, num_ref_imgs=1, filter_key_img=True, method="uniform",
                   return_key_img=True, duplicate_single_ref=True)
        out.update(cfg)
        lo, hi = ref_sampling.frame_range_bounds(out["frame_range"])
        out["frame_range"] = [lo, hi]
        out["num_ref_imgs"] = ref_sampling.resolve_num_ref_imgs(out["method"], [lo, hi], out["num_ref_imgs"])
        if out["method"] == "bilateral_uniform" and out["num_ref_imgs"] % 2:
            raise ValueError(f"ref_img_sampler: bilateral_uniform needs an even num_ref_imgs, "
                             f"got {out['num_ref_imgs']}")
        if out["method"] == "test_with_adaptive_stride" and out["num_ref_imgs"] < 2 and (lo, hi) != (0, 0):
            raise ValueError(f"ref_img_sampler: test_with_adaptive_stride needs frame_range to span at "
                             f"least 2 frames, got {[lo, hi]}")
        if out["stride"] <= 0:
            raise ValueError(f"ref_img_sampler: stride must be > 0, got {out['stride']}")
        return out

    def _check_image_files(self) -> None:
        seen_videos = set()
        for info in self.data_infos:
            vid = info.get("video_id") if self.load_as_video else None
            if vid in seen_videos:
                continue
            seen_videos.add(vid)
            path = osp.join(self.img_prefix, info["filename"]) if self.img_prefix else info["filename"]
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f"image file not found: {path} (image id {info['id']} of {self.ann_file}; check "
                    f"data_root/img_prefix, or pass check_files=False to skip this check)")

    # ---------------------------------------------------------------- loading
    def load_annotations(self, ann_file):
        """Read ``ann_file`` and return the image infos of the key frames (each gets ``filename``)."""
        self.coco = CocoVID(ann_file, require_video=self.load_as_video)
        self.cat_ids = self._class_cat_ids(ann_file)
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        images = self.coco.dataset["images"]
        self._has_train_flags = any("is_vid_train_frame" in img for img in images)
        infos = self._load_video_infos() if self.load_as_video else self._load_image_infos()
        self.img_ids = [info["id"] for info in infos]
        return infos

    def _class_cat_ids(self, ann_file) -> list:
        cats = self.coco.dataset["categories"]
        if self.CLASSES is None:
            ordered = sorted(cats, key=lambda c: c["id"])
            self.CLASSES = tuple(c["name"] for c in ordered)
            return [c["id"] for c in ordered]
        by_name = defaultdict(list)
        for cat in cats:
            by_name[cat["name"]].append(cat["id"])
        missing = [name for name in self.CLASSES if name not in by_name]
        if missing:
            raise ValueError(f"{ann_file}: no category named {missing} (the json has "
                             f"{sorted(by_name)}); check the dataset's classes")
        repeated = [name for name in self.CLASSES if len(by_name[name]) > 1]
        if repeated:
            raise ValueError(f"{ann_file}: several categories are named {repeated}")
        return [by_name[name][0] for name in self.CLASSES]

    def _load_video_infos(self) -> list[dict]:
        infos = []
        for vid_id in self.coco.get_vid_ids():
            frames = [self.coco.imgs[i] for i in self.coco.get_img_ids_from_vid(vid_id)]
            infos.extend(self._key_frames(frames))
        return [dict(img, filename=img["file_name"]) for img in infos]

    def _key_frames(self, frames: list[dict]) -> list[dict]:
        """The key frames of one video (frames in frame order)."""
        if not self._has_train_flags:
            return frames[::self.key_img_sampler.get("interval", 1)]
        if self.test_mode:
            train = [img for img in frames if img.get("is_vid_train_frame")]
            if train:
                raise ValueError(
                    f"{self.ann_file}: test mode expects no training frames, but image id "
                    f"{train[0]['id']} ({train[0]['file_name']}) has is_vid_train_frame=true")
            return frames
        return [img for img in frames if img.get("is_vid_train_frame")]

    def _load_image_infos(self) -> list[dict]:
        """DET json: every image, in json order (mmdet ``CocoDataset``)."""
        return [dict(self.coco.imgs[i], filename=self.coco.imgs[i]["file_name"])
                for i in self.coco.get_img_ids()]

    # ---------------------------------------------------------------- annotations
    def get_ann_info(self, img_info):
        """Parsed ground truth of an image given by its info dict or its dataset index (see
        ``_parse_ann_info``)."""
        if not isinstance(img_info, dict):
            img_info = self.data_infos[img_info]
        ann_ids = self.coco.get_ann_ids(img_ids=[img_info["id"]], cat_ids=self.cat_ids)
        return self._parse_ann_info(img_info, self.coco.load_anns(ann_ids))

    def _parse_ann_info(self, img_info, ann_info):
        """Ground truth of one image (SPEC 3.4).

        Skips annotations flagged ``ignore``, without overlap with the image, with ``area <= 0``, ``w < 1``
        or ``h < 1``, or of a category outside the classes; ``iscrowd`` boxes go to ``bboxes_ignore``.

        Returns:
            dict: ``bboxes`` float32 (k, 4) x1y1x2y2 pixels, ``labels`` int64 (k,) 0-based,
            ``bboxes_ignore`` float32 (m, 4), ``instance_ids`` int64 (k,) (the json's ``instance_id`` for
            videos, ``arange(k)`` otherwise), ``masks`` (raw segmentations), ``seg_map``.
        """
        bboxes, labels, ignore, masks, instance_ids = [], [], [], [], []
        width, height = img_info["width"], img_info["height"]
        for ann in ann_info:
            if ann.get("ignore", False):
                continue
            x1, y1, w, h = ann["bbox"]
            inter_w = max(0, min(x1 + w, width) - max(x1, 0))
            inter_h = max(0, min(y1 + h, height) - max(y1, 0))
            if inter_w * inter_h == 0 or ann["area"] <= 0 or w < 1 or h < 1:
                continue
            if ann["category_id"] not in self.cat2label:
                continue
            box = [x1, y1, x1 + w, y1 + h]
            if ann.get("iscrowd", False):
                ignore.append(box)
                continue
            bboxes.append(box)
            labels.append(self.cat2label[ann["category_id"]])
            if "segmentation" in ann:
                masks.append(ann["segmentation"])
            if "instance_id" in ann:
                instance_ids.append(ann["instance_id"])
        out = dict(
            bboxes=np.array(bboxes, dtype=np.float32).reshape(-1, 4),
            labels=np.array(labels, dtype=np.int64),
            bboxes_ignore=np.array(ignore, dtype=np.float32).reshape(-1, 4),
            masks=masks,
            seg_map=img_info["filename"].replace("jpg", "png"),
        )
        if self.load_as_video:
            out["instance_ids"] = np.array(instance_ids, dtype=np.int64)
        else:
            out["instance_ids"] = np.arange(len(labels), dtype=np.int64)
        return out

    # ---------------------------------------------------------------- reference sampling
    def ref_img_sampling(self, img_info: dict, frame_range, stride=1, num_ref_imgs=1, filter_key_img=True,
                         method="uniform", return_key_img=True, duplicate_single_ref=True) -> list[dict]:
        """The key image info and its reference image infos (SPEC 3.5), as fresh dicts.

        Images without a video (``load_as_video=False`` or no ``frame_id``) and ``frame_range`` [0, 0] get
        ``num_ref_imgs`` copies of the key. Otherwise ``clab.data.ref_sampling`` picks frame ids of the
        key's video, returned sorted by frame id. ``test_with_fix_stride`` also writes
        ``num_left_ref_imgs = |lo|`` and ``frame_stride`` into the key's info.

        Returns:
            ``[key_info, *ref_infos]`` (or only the references when ``return_key_img`` is False).
        """
        lo, hi = ref_sampling.frame_range_bounds(frame_range)
        num_ref_imgs = ref_sampling.resolve_num_ref_imgs(method, [lo, hi], num_ref_imgs)
        key = dict(img_info)
        if not self.load_as_video or key.get("frame_id", -1) < 0 or (lo, hi) == (0, 0):
            refs = [dict(key) for _ in range(num_ref_imgs)]
        else:
            img_ids = self.coco.get_img_ids_from_vid(key["video_id"])
            frame_ids = ref_sampling.sample_ref_frames(
                method, len(img_ids), key["frame_id"], [lo, hi], num_ref_imgs=num_ref_imgs, stride=stride,
                filter_key_img=filter_key_img, rng=self.rng, duplicate_single_ref=duplicate_single_ref)
            refs = []
            for f in frame_ids:
                info = dict(self.coco.imgs[img_ids[f]])
                info["filename"] = info["file_name"]
                refs.append(info)
            if method == "test_with_fix_stride":
                key["num_left_ref_imgs"] = -lo
                key["frame_stride"] = stride
        return [key, *refs] if return_key_img else refs

    # ---------------------------------------------------------------- items
    def prepare_results(self, img_info: dict) -> dict:
        """mmdet result dict of one image: ``img_info``, ``ann_info`` (training or ``test_load_ann``),
        prefixes and field lists, ``frame_id`` (-1 without a video) and ``is_video_data``."""
        results = dict(img_info=img_info)
        if not self.test_mode or self.test_load_ann:
            results["ann_info"] = self.get_ann_info(img_info)
        if self.proposals is not None:
            results["proposals"] = self.proposals[self.img_ids.index(img_info["id"])]
        self.pre_pipeline(results)
        results["frame_id"] = img_info.get("frame_id", -1)
        results["is_video_data"] = self.load_as_video
        return results

    def prepare_data(self, idx: int):
        """The pipeline applied to ``[key, *refs]`` (a single dict when ``ref_img_sampler`` is None)."""
        img_info = self.data_infos[idx]
        if self.ref_img_sampler is None:
            return self.pipeline(self.prepare_results(dict(img_info)))
        infos = self.ref_img_sampling(img_info, **self.ref_img_sampler)
        return self.pipeline([self.prepare_results(info) for info in infos])

    def prepare_train_img(self, idx):
        return self.prepare_data(idx)

    def prepare_test_img(self, idx):
        return self.prepare_data(idx)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, results, metric="bbox", logger=None, bbox_kwargs: dict | None = None, **kwargs):
        """COCO box evaluation through mmdet ``CocoDataset.evaluate`` (SPEC 4).

        Args:
            results: ``{'det_bboxes': [per frame: [per class: ndarray (k, 5) x1, y1, x2, y2, score in
                original-image pixels]]}`` in dataset order, or that per-frame list itself.
            metric: ``'bbox'`` or ``['bbox']`` (the only metric supported).
            bbox_kwargs / kwargs: mmdet options (``classwise``, ``proposal_nums``, ``iou_thrs``,
                ``metric_items``, ``jsonfile_prefix``); defaults as mmtracking:
                ``proposal_nums=(100, 300, 1000)``.

        Returns:
            dict: ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s/m/l``, ``bbox_mAP_copypaste``.
        """
        metrics = [metric] if isinstance(metric, str) else list(metric)
        unsupported = [m for m in metrics if m != "bbox"]
        if unsupported or not metrics:
            raise ValueError(f"evaluate: unsupported metric(s) {unsupported or metrics}; only 'bbox' is "
                             f"available")
        if isinstance(results, dict):
            if "det_bboxes" not in results:
                raise ValueError(f"evaluate: results has keys {sorted(results)}; expected 'det_bboxes'")
            det = results["det_bboxes"]
        elif isinstance(results, list):
            det = results
        else:
            raise TypeError(f"evaluate: results must be a dict or a list, got {type(results).__name__}")
        if len(det) != len(self):
            raise ValueError(f"evaluate: got detections for {len(det)} frames, the dataset has {len(self)}")
        for i, frame in enumerate(det):
            if len(frame) != len(self.CLASSES):
                raise ValueError(f"evaluate: frame {i} has {len(frame)} per-class arrays, expected "
                                 f"{len(self.CLASSES)} (one per class)")
        opts = dict(classwise=False, proposal_nums=(100, 300, 1000), iou_thrs=None, metric_items=None)
        opts.update(bbox_kwargs or {})
        opts.update(kwargs)
        return super().evaluate(det, metric="bbox", logger=logger, **opts)


@DATASETS.register_module()
class ImagenetVIDDataset(CocoVideoDataset):
    """ImageNet VID (``load_as_video=True``) or its DET complement (``load_as_video=False``, the
    ``imagenet_det_30plus1cls.json``: only images with ``is_vid_train_frame``, category 31 ignored)."""

    CLASSES = IMAGENET_VID_CLASSES

    def _load_image_infos(self) -> list[dict]:
        infos = []
        for img_id in self.coco.get_img_ids():
            img = self.coco.imgs[img_id]
            if "is_vid_train_frame" not in img:
                raise ValueError(f"{self.coco.annotation_file}: image id {img_id} has no field "
                                 f"'is_vid_train_frame' (needed to select the DET images)")
            if img["is_vid_train_frame"]:
                infos.append(dict(img, filename=img["file_name"]))
        return infos

