"""Loading steps for a clip ``[key, *refs]`` (SPEC 3.6 steps 1-2), mmtracking 0.14 names.

Each step applies mmdet's own single-image step to every dict of the list. Loading adds clear errors: a
missing image file or one that cannot be decoded is reported with its path and image id.
"""
from __future__ import annotations

import os.path as osp

import cv2
from mmdet.datasets.builder import PIPELINES
from mmdet.datasets.pipelines import LoadAnnotations, LoadImageFromFile


def _as_list(results, step: str) -> list:
    if not isinstance(results, list):
        raise TypeError(f"{step} expects the list [key, *refs] of result dicts, got {type(results).__name__}")
    return results


@PIPELINES.register_module()
class LoadMultiImagesFromFile(LoadImageFromFile):
    """mmdet ``LoadImageFromFile`` on every frame: ``img`` uint8 (H, W, 3) BGR, ``filename``,
    ``ori_filename``, ``img_shape``, ``ori_shape``, ``img_fields``. Same arguments as mmdet's step.

    Raises:
        FileNotFoundError: an image file does not exist (message: path and image id).
        ValueError: an image file exists but cannot be decoded.
    """

    def __call__(self, results: list[dict]) -> list[dict]:
        return [self._load(r) for r in _as_list(results, "LoadMultiImagesFromFile")]

    def _load(self, results: dict) -> dict:
        info = results["img_info"]
        prefix = results.get("img_prefix")
        path = osp.join(prefix, info["filename"]) if prefix is not None else info["filename"]
        where = f"image id {info.get('id')}"
        if self.file_client_args.get("backend", "disk") == "disk" and not osp.isfile(path):
            raise FileNotFoundError(f"image file not found: {path} ({where})")
        try:
            return super().__call__(results)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"image file not found: {path} ({where})") from e
        except (AttributeError, cv2.error) as e:  # mmcv.imfrombytes gives None (or cv2 fails) on bad data
            raise ValueError(f"could not decode image file {path} ({where}); is it a valid image?") from e


@PIPELINES.register_module()
class SeqLoadAnnotations(LoadAnnotations):
    """mmdet ``LoadAnnotations`` on every frame (``gt_bboxes`` float32 (k, 4), ``gt_labels`` int64 (k,),
    ``gt_bboxes_ignore``, ``bbox_fields``), plus ``gt_instance_ids`` int64 (k,) when ``with_track``.

    Args:
        with_bbox, with_label, (with_mask, with_seg, ...): as mmdet ``LoadAnnotations``.
        with_track: also load the instance ids (``ann_info['instance_ids']``).
    """

    def __init__(self, with_bbox: bool = True, with_label: bool = True, with_track: bool = False, **kwargs):
        super().__init__(with_bbox=with_bbox, with_label=with_label, **kwargs)
        self.with_track = with_track

    def __call__(self, results: list[dict]) -> list[dict]:
        outs = []
        for r in _as_list(results, "SeqLoadAnnotations"):
            if "ann_info" not in r:
                raise KeyError("SeqLoadAnnotations: a frame has no 'ann_info' (the dataset attaches it in "
                               "training, or in test mode with test_load_ann=True)")
            r = super().__call__(r)
            if self.with_track:
                r["gt_instance_ids"] = r["ann_info"]["instance_ids"].copy()
            outs.append(r)
        return outs

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, with_track={self.with_track})"
