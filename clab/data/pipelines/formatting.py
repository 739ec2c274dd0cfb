"""Collection and formatting steps for a clip (SPEC 3.6 steps 7-9 and the test pipeline), mmtracking names.

Output after mmcv ``collate`` (N clips, T references):

- training (``VideoCollect`` -> ``ConcatVideoReferences`` -> ``SeqDefaultFormatBundle``): ``img``
  Tensor[N, 3, H, W], ``img_metas`` N dicts, ``gt_bboxes`` N Tensor[k, 4], ``gt_labels`` N Tensor[k],
  ``gt_instance_ids`` N Tensor[k], ``ref_img`` Tensor[N, T, 3, H, W], ``ref_img_metas`` N lists of T dicts,
  ``ref_gt_bboxes`` N Tensor[sum_t k_t, 5] and ``ref_gt_labels`` / ``ref_gt_instance_ids`` N
  Tensor[sum_t k_t, 2], column 0 being the reference index t;
- testing (``VideoCollect`` -> ``ConcatVideoReferences`` -> ``MultiImagesToTensor`` -> ``ToList``),
  batch 1: ``img`` [Tensor[1, 3, H, W]], ``img_metas`` [[meta]], and ``ref_img`` [Tensor[1, T, 3, H, W]],
  ``ref_img_metas`` [[[T metas]]] only when the sampler returned references.
"""
from __future__ import annotations

import numpy as np
from mmcv.parallel import DataContainer as DC
from mmdet.datasets.builder import PIPELINES
from mmdet.datasets.pipelines import to_tensor

from .loading import _as_list

DEFAULT_META_KEYS = ("filename", "ori_filename", "ori_shape", "img_shape", "pad_shape", "scale_factor",
                     "flip", "flip_direction", "img_norm_cfg", "frame_id", "is_video_data")
#: per-frame array fields that references concatenate with a leading reference-index column
REF_INDEXED_KEYS = ("proposals", "gt_bboxes", "gt_bboxes_ignore", "gt_labels", "gt_instance_ids")


@PIPELINES.register_module()
class VideoCollect:
    """Keep ``keys`` of every frame and gather its meta data into ``img_metas``.

    Args:
        keys: result keys to keep (e.g. ``['img', 'gt_bboxes', 'gt_labels', 'gt_instance_ids']``).
        meta_keys: extra meta keys (e.g. ``('num_left_ref_imgs', 'frame_stride')``), looked up in the
            result dict first and then in ``img_info``; missing ones are skipped.
        default_meta_keys: ``filename, ori_filename, ori_shape, img_shape, pad_shape, scale_factor, flip,
            flip_direction, img_norm_cfg, frame_id, is_video_data``.

    Returns a list of dicts (``keys`` + ``img_metas``) for a list input; for a single dict, one dict whose
    ``img_metas`` is already a ``DataContainer``.
    """

    def __init__(self, keys, meta_keys=None, default_meta_keys=DEFAULT_META_KEYS):
        self.keys = list(keys)
        extra = (meta_keys,) if isinstance(meta_keys, str) else tuple(meta_keys or ())
        self.meta_keys = tuple(dict.fromkeys(tuple(default_meta_keys) + extra))

    def __call__(self, results):
        single = isinstance(results, dict)
        outs = [self._collect(r) for r in ([results] if single else _as_list(results, "VideoCollect"))]
        if single:
            outs[0]["img_metas"] = DC(outs[0]["img_metas"], cpu_only=True)
            return outs[0]
        return outs

    def _collect(self, results: dict) -> dict:
        img = results["img"]
        results.setdefault("pad_shape", img.shape)
        results.setdefault("scale_factor", 1.0)
        channels = 1 if img.ndim < 3 else img.shape[2]
        results.setdefault("img_norm_cfg", dict(mean=np.zeros(channels, dtype=np.float32),
                                                std=np.ones(channels, dtype=np.float32), to_rgb=False))
        info = results.get("img_info", {})
        meta = {}
        for key in self.meta_keys:
            if key in results:
                meta[key] = results[key]
            elif key in info:
                meta[key] = info[key]
        data = dict(img_metas=meta)
        for key in self.keys:
            if key not in results:
                raise KeyError(f"VideoCollect: key '{key}' is not in the results (available: "
                               f"{sorted(results)})")
            data[key] = results[key]
        return data

    def __repr__(self) -> str:
        return f"VideoCollect(keys={self.keys}, meta_keys={self.meta_keys})"


@PIPELINES.register_module()
class ConcatVideoReferences:
    """Merge the references of ``[key, ref_0, ..., ref_{T-1}]`` into one dict: ``[key, refs]``.

    In the merged dict ``img`` is (H, W, C, T), ``img_metas`` (and ``gt_masks``) a list of T entries, and
    each of ``proposals, gt_bboxes, gt_bboxes_ignore, gt_labels, gt_instance_ids`` is the row-wise
    concatenation over t of ``[t, value]``: (sum_t k_t, 1 + width), column 0 = reference index t, in the
    value's dtype (float32 for boxes, int64 for labels and instance ids). A list holding only the key frame
    is returned unchanged.
    """

    def __call__(self, results: list[dict]) -> list[dict]:
        results = _as_list(results, "ConcatVideoReferences")
        key, refs = results[0], results[1:]
        if not refs:
            return [key]
        merged = dict(refs[0])
        if "img" in refs[0]:
            imgs = [r["img"] if r["img"].ndim == 3 else r["img"][..., None] for r in refs]
            shapes = {im.shape for im in imgs}
            if len(shapes) > 1:
                raise ValueError(f"ConcatVideoReferences: reference images differ in shape {sorted(shapes)}; "
                                 f"resize them alike (share_params=True) before concatenating")
            merged["img"] = np.stack(imgs, axis=-1)
        for k in ("img_metas", "gt_masks"):
            if k in refs[0]:
                merged[k] = [r[k] for r in refs]
        for k in REF_INDEXED_KEYS:
            if k not in refs[0]:
                continue
            parts = []
            for t, r in enumerate(refs):
                value = r[k] if r[k].ndim > 1 else r[k][:, None]
                index = np.full((value.shape[0], 1), t, dtype=value.dtype)
                parts.append(np.concatenate([index, value], axis=1))
            merged[k] = np.concatenate(parts, axis=0)
        return [key, merged]


def _image_to_tensor(img: np.ndarray):
    """(H, W, C) -> Tensor (C, H, W); (H, W, C, T) -> Tensor (T, C, H, W)."""
    axes = (2, 0, 1) if img.ndim == 3 else (3, 2, 0, 1)
    return to_tensor(np.ascontiguousarray(img.transpose(*axes)))


def _merge_with_prefix(outs: list[dict], prefix: str) -> dict:
    data = dict(outs[0])
    if len(outs) > 1:
        data.update({f"{prefix}_{k}": v for k, v in outs[1].items()})
    return data


@PIPELINES.register_module()
class SeqDefaultFormatBundle:
    """Training formatting of ``[key, refs]`` into one dict of ``DataContainer`` s, the reference keys
    prefixed with ``ref_prefix``: ``img`` -> Tensor (3, H, W) / ref (T, 3, H, W) stacked and padded by
    ``collate``; box, label and id arrays -> tensors (not stacked); ``img_metas``, ``gt_masks`` -> cpu-only.
    """

    def __init__(self, ref_prefix: str = "ref"):
        self.ref_prefix = ref_prefix

    def __call__(self, results: list[dict]) -> dict:
        results = _as_list(results, "SeqDefaultFormatBundle")
        if len(results) != 2:
            raise ValueError(f"SeqDefaultFormatBundle expects [key, refs] (run ConcatVideoReferences first; "
                             f"training needs at least one reference frame), got {len(results)} item(s)")
        return _merge_with_prefix([self._format(dict(r)) for r in results], self.ref_prefix)

    @staticmethod
    def _format(results: dict) -> dict:
        if "img" in results:
            results["img"] = DC(_image_to_tensor(results["img"]), stack=True)
        for k in REF_INDEXED_KEYS + ("gt_match_indices",):
            if k in results:
                results[k] = DC(to_tensor(results[k]))
        for k in ("img_metas", "gt_masks"):
            if k in results:
                results[k] = DC(results[k], cpu_only=True)
        if "gt_semantic_seg" in results:
            seg = results["gt_semantic_seg"]
            seg = seg[None] if seg.ndim == 2 else np.ascontiguousarray(seg.transpose(3, 2, 0, 1))
            results["gt_semantic_seg"] = DC(to_tensor(seg), stack=True)
        return results

    def __repr__(self) -> str:
        return f"SeqDefaultFormatBundle(ref_prefix={self.ref_prefix!r})"


@PIPELINES.register_module()
class MultiImagesToTensor:
    """Test formatting of ``[key]`` or ``[key, refs]``: ``img`` -> Tensor (3, H, W) (refs (T, 3, H, W)),
    ``proposals`` -> tensor, ``img_metas`` -> cpu-only ``DataContainer``; reference keys get
    ``ref_prefix``."""

    def __init__(self, ref_prefix: str = "ref"):
        self.ref_prefix = ref_prefix

    def __call__(self, results: list[dict]) -> dict:
        outs = []
        for r in _as_list(results, "MultiImagesToTensor"):
            r = dict(r)
            if "img" in r:
                r["img"] = _image_to_tensor(r["img"])
            if "proposals" in r:
                r["proposals"] = to_tensor(r["proposals"])
            if "img_metas" in r:
                r["img_metas"] = DC(r["img_metas"], cpu_only=True)
            outs.append(r)
        return _merge_with_prefix(outs, self.ref_prefix)

    def __repr__(self) -> str:
        return f"MultiImagesToTensor(ref_prefix={self.ref_prefix!r})"


@PIPELINES.register_module()
class ToList:
    """Wrap every value in a one-element list (the test loader's batch of one)."""

    def __call__(self, results: dict) -> dict:
        return {k: [v] for k, v in results.items()}
