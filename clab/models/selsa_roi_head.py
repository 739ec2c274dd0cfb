"""SELSA RoI head with Temporal RoI Align (SPEC 1.10, 2.6, 2.7).

Registered in mmdet's ``MODELS`` as ``SelsaRoIHead`` (extends mmdet's ``StandardRoIHead``; parameter keys
``bbox_roi_extractor.embed_network.conv.*`` and ``bbox_head.*`` as mmtracking 0.14).

Training (SPEC 1.10, 2.6), for N key images with T reference images each:
- mmdet's assigner and sampler per key image (MaxIoU 0.5/0.5/0.5, 256 RoIs with 25 % positives, GT
  boxes added as proposals, all from ``train_cfg``);
- key RoI features: TRoI of clip i's RoIs against clip i's T reference maps;
- reference RoI features: plain RoIAlign of all N*T reference proposal sets;
- the SELSA box head per clip (key RoIs of clip i attend only to clip i's reference RoIs);
- mmdet's targets and losses over the concatenation (``loss_cls``, ``loss_bbox``, ``acc``).
Unlike the published code this works for any N >= 1 (SPEC 0.1).

Testing, one key frame (SPEC 2.6, 2.7):
- :meth:`SelsaRoIHead.simple_test` with explicit reference maps and proposals, as upstream; or
- :meth:`SelsaRoIHead.prepare_reference_cache` once per video on the fixed reference frames, then
  :meth:`SelsaRoIHead.simple_test` with ``ref_cache``: the reference set is the cached frames followed by
  the key frame itself with its own proposals (SPEC 2.7's ``ref_x = cat(memo, x)``), and only the key
  frame's part is computed per frame. Same outputs as the uncached call within float tolerance.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmcv.utils import ConfigDict
from mmdet.core import bbox2result, bbox2roi
from mmdet.models.builder import MODELS
from mmdet.models.roi_heads import StandardRoIHead
from torch import Tensor

from .nms import multiclass_nms
from .reference_cache import ReferenceCache
from .selsa_bbox_head import SelsaBBoxHead
from .temporal_roi_align import TemporalRoIAlign


def _check_level_tuple(feats, name: str) -> Tensor:
    """Return the single level of a neck output tuple, Tensor[B, C, h, w]."""
    if isinstance(feats, Tensor) or not isinstance(feats, Sequence):
        raise ValueError(f'SelsaRoIHead: {name} must be the one-level neck output tuple '
                         f'(Tensor[B, C, h, w],), got {type(feats).__name__}')
    if len(feats) != 1:
        raise ValueError(f'SelsaRoIHead: {name} must hold exactly one feature level (the neck output), '
                         f'got {len(feats)}')
    level = feats[0]
    if not isinstance(level, Tensor) or level.dim() != 4:
        raise ValueError(f'SelsaRoIHead: {name}[0] must be a Tensor[B, C, h, w], got '
                         f'{getattr(level, "shape", type(level).__name__)}')
    return level


@MODELS.register_module()
class SelsaRoIHead(StandardRoIHead):
    """StandardRoIHead whose box branch is TemporalRoIAlign + SelsaBBoxHead.

    Args: as mmdet's ``StandardRoIHead``; ``bbox_roi_extractor`` must build a ``TemporalRoIAlign`` and
    ``bbox_head`` a ``SelsaBBoxHead``. Mask heads and shared heads are not supported.
    """

    def __init__(self, bbox_roi_extractor: dict | None = None, bbox_head: dict | None = None,
                 mask_roi_extractor: dict | None = None, shared_head: dict | None = None,
                 mask_head: dict | None = None, **kwargs) -> None:
        if bbox_roi_extractor is None or bbox_head is None:
            raise ValueError('SelsaRoIHead: bbox_roi_extractor and bbox_head are required')
        if mask_head is not None or mask_roi_extractor is not None or shared_head is not None:
            raise ValueError('SelsaRoIHead: mask_head, mask_roi_extractor and shared_head are not '
                             'supported')
        for name in ('train_cfg', 'test_cfg'):  # mmdet reads these by attribute
            if isinstance(kwargs.get(name), dict) and not isinstance(kwargs[name], ConfigDict):
                kwargs[name] = ConfigDict(kwargs[name])
        super().__init__(bbox_roi_extractor=bbox_roi_extractor, bbox_head=bbox_head, **kwargs)
        if not isinstance(self.bbox_roi_extractor, TemporalRoIAlign):
            raise TypeError('SelsaRoIHead: bbox_roi_extractor must be a TemporalRoIAlign, got '
                            f'{type(self.bbox_roi_extractor).__name__}')
        if not isinstance(self.bbox_head, SelsaBBoxHead):
            raise TypeError('SelsaRoIHead: bbox_head must be a SelsaBBoxHead, got '
                            f'{type(self.bbox_head).__name__}')

    # ------------------------------------------------------------------ training
    def forward_train(self,
                      x: Sequence[Tensor],
                      ref_x: Sequence[Tensor],
                      img_metas: list[dict],
                      proposal_list: list[Tensor],
                      ref_proposal_list: list[Tensor],
                      gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor],
                      gt_bboxes_ignore: list[Tensor] | None = None,
                      gt_masks=None,
                      **kwargs) -> dict[str, Tensor]:
        """Box losses of N key images, each with T reference images.

        Args:
            x: key neck output, (Tensor[N, C, h, w],).
            ref_x: reference neck output, (Tensor[N*T, C, h, w],), ordered clip by clip.
            img_metas: N key image metas (unused by the box branch; their count is checked).
            proposal_list: N Tensor[k_i, 5] key proposals [x1, y1, x2, y2, score] (training RPN cfg).
            ref_proposal_list: N*T Tensor[k_j, 5] reference proposals, clip by clip (test RPN cfg).
            gt_bboxes: N Tensor[g_i, 4] x1y1x2y2 in resized-image pixels (g_i may be 0).
            gt_labels: N Tensor[g_i] long, 0-based classes.
            gt_bboxes_ignore: None or N Tensor[*, 4].
            gt_masks: unsupported, must be None.

        Returns:
            dict(loss_cls=Tensor[], loss_bbox=Tensor[], acc=Tensor[1]) from mmdet's ``BBoxHead.loss``.
        """
        if gt_masks is not None:
            raise ValueError('SelsaRoIHead.forward_train: gt_masks is not supported')
        key_maps = _check_level_tuple(x, 'x')
        ref_maps = _check_level_tuple(ref_x, 'ref_x')
        num_imgs = key_maps.size(0)
        for name, value in (('img_metas', img_metas), ('proposal_list', proposal_list),
                            ('gt_bboxes', gt_bboxes), ('gt_labels', gt_labels)):
            if len(value) != num_imgs:
                raise ValueError(f'SelsaRoIHead.forward_train: {name} has {len(value)} entries, '
                                 f'expected one per key image (N = {num_imgs})')
        num_refs = self._refs_per_clip(num_imgs, ref_maps, ref_proposal_list)
        if gt_bboxes_ignore is None:
            gt_bboxes_ignore = [None] * num_imgs

        sampling_results = []
        for i in range(num_imgs):
            assign_result = self.bbox_assigner.assign(proposal_list[i], gt_bboxes[i],
                                                      gt_bboxes_ignore[i], gt_labels[i])
            sampling_results.append(self.bbox_sampler.sample(
                assign_result, proposal_list[i], gt_bboxes[i], gt_labels[i],
                feats=[lvl[i][None] for lvl in x]))

        rois = bbox2roi([res.bboxes for res in sampling_results])  # (sum n_i, 5)
        ref_rois = bbox2roi(ref_proposal_list)  # (sum m_j, 5), batch index 0..N*T-1
        cls_score, bbox_pred = self._bbox_forward(x, ref_x, rois, ref_rois, num_refs)
        bbox_targets = self.bbox_head.get_targets(sampling_results, gt_bboxes, gt_labels,
                                                  self.train_cfg)
        return self.bbox_head.loss(cls_score, bbox_pred, rois, *bbox_targets)

    def _bbox_forward(self, x: Sequence[Tensor], ref_x: Sequence[Tensor], rois: Tensor,
                      ref_rois: Tensor, num_refs: int) -> tuple[Tensor, Tensor]:
        """Class scores and box deltas of key RoIs of N clips, each clip on its own references.

        Args:
            x: (Tensor[N, C, h, w],) key maps.
            ref_x: (Tensor[N*T, C, h, w],) reference maps, clip by clip.
            rois: Tensor[n, 5], batch index = clip index.
            ref_rois: Tensor[m, 5], batch index = reference image index (clip i owns i*T..i*T+T-1).
            num_refs: T.

        Returns:
            cls_score Tensor[n, num_classes + 1], bbox_pred Tensor[n, 4 * num_classes], rows as ``rois``.
        """
        ref_maps = ref_x[0]
        num_clips = ref_maps.size(0) // num_refs
        clip_ref_maps = list(ref_maps.reshape(num_clips, num_refs, *ref_maps.shape[1:]).unbind(0))
        bbox_feats = self.bbox_roi_extractor(x[:1], rois, ref_feats=clip_ref_maps)  # (n, C, 7, 7)
        ref_bbox_feats = self.bbox_roi_extractor(ref_x[:1], ref_rois)  # (m, C, 7, 7)

        key_clip = rois[:, 0].long()
        ref_clip = torch.div(ref_rois[:, 0].long(), num_refs, rounding_mode='floor')
        cls_score = bbox_pred = None
        for i in range(num_clips):
            key_idx = torch.nonzero(key_clip == i, as_tuple=False).squeeze(1)
            if key_idx.numel() == 0:
                continue
            ref_idx = torch.nonzero(ref_clip == i, as_tuple=False).squeeze(1)
            cls_i, reg_i = self.bbox_head(bbox_feats[key_idx], ref_bbox_feats[ref_idx])
            if cls_score is None:
                cls_score = cls_i.new_zeros(rois.size(0), cls_i.size(1))
                bbox_pred = reg_i.new_zeros(rois.size(0), reg_i.size(1))
            cls_score = cls_score.index_copy(0, key_idx, cls_i)
            bbox_pred = bbox_pred.index_copy(0, key_idx, reg_i)
        if cls_score is None:
            raise ValueError('SelsaRoIHead: no key RoIs to classify')
        return cls_score, bbox_pred

    @staticmethod
    def _refs_per_clip(num_clips: int, ref_maps: Tensor, ref_proposal_list: Sequence[Tensor]) -> int:
        """T, checked against the reference maps and proposals."""
        num_ref_imgs = len(ref_proposal_list)
        if num_ref_imgs == 0 or num_ref_imgs % num_clips != 0:
            raise ValueError(f'SelsaRoIHead: ref_proposal_list has {num_ref_imgs} entries, expected a '
                             f'positive multiple of the {num_clips} key images (T per clip)')
        if ref_maps.size(0) != num_ref_imgs:
            raise ValueError(f'SelsaRoIHead: ref_x[0] holds {ref_maps.size(0)} maps but '
                             f'ref_proposal_list has {num_ref_imgs} entries; expected one map per '
                             'reference proposal set, clip by clip')
        return num_ref_imgs // num_clips

    # ------------------------------------------------------------------ testing
    def prepare_reference_cache(self, ref_x: Sequence[Tensor], ref_proposal_list: list[Tensor],
                                with_embed_taps: bool = True) -> ReferenceCache:
        """Precompute everything about a video's fixed reference frames (SPEC 2.7, PERFORMANCE.md).

        Runs without autograd.

        Args:
            ref_x: (Tensor[K, C, h, w],) neck maps of the K reference frames.
            ref_proposal_list: K Tensor[k_j, 5] test-RPN proposals of those frames.
            with_embed_taps: also precompute the temporal-attention embed conv's taps on each map
                (K * 9 * C floats per map position, e.g. 0.6 GB for 14 maps of 38x63x512) so the
                most-similar features are embedded by gathering instead of convolving.

        Returns:
            :class:`ReferenceCache` for :meth:`simple_test`.
        """
        ref_maps = _check_level_tuple(ref_x, 'ref_x')
        if len(ref_proposal_list) != ref_maps.size(0):
            raise ValueError(f'SelsaRoIHead.prepare_reference_cache: ref_x[0] holds '
                             f'{ref_maps.size(0)} maps but ref_proposal_list has '
                             f'{len(ref_proposal_list)} entries')
        extractor = self.bbox_roi_extractor
        with_taps = with_embed_taps and extractor.num_temporal_attention_blocks > 0
        with torch.no_grad():
            ref_rois = bbox2roi(ref_proposal_list)
            ref_bbox_feats = extractor(ref_x[:1], ref_rois)  # (m, C, 7, 7)
            encodings = self.bbox_head.encode_references(ref_bbox_feats)
            maps = extractor.prepare_reference_maps(ref_maps, with_embed_taps=with_taps)
        return ReferenceCache(maps=maps, encodings=encodings, num_rois=int(ref_rois.size(0)),
                              rois_per_frame=[int(p.size(0)) for p in ref_proposal_list])

    def simple_test(self,
                    x: Sequence[Tensor],
                    ref_x: Sequence[Tensor] | None,
                    proposal_list: list[Tensor],
                    ref_proposal_list: list[Tensor] | None,
                    img_metas: list[dict],
                    rescale: bool = False,
                    ref_cache: ReferenceCache | None = None) -> list[np.ndarray]:
        """Detections of one key frame.

        Args:
            x: key neck output, (Tensor[1, C, h, w],).
            ref_x: without ``ref_cache``: (Tensor[K, C, h, w],), all K reference maps (at test SPEC 2.7's
                ``cat(memo, x)``, the key frame last). With ``ref_cache``: None.
            proposal_list: [Tensor[k, 5]] key proposals (test RPN).
            ref_proposal_list: without ``ref_cache``: K Tensor[k_j, 5]; with it: None (the references
                are the cached frames followed by the key frame with ``proposal_list[0]``).
            img_metas: [meta] with ``img_shape`` and ``scale_factor``.
            rescale: map boxes back to the original image (divide by ``scale_factor``).
            ref_cache: from :meth:`prepare_reference_cache`.

        Returns:
            ``bbox2result`` output: num_classes float32 arrays (k_c, 5), [x1, y1, x2, y2, score],
            after ``test_cfg`` (score_thr, class-wise NMS, max_per_img).
        """
        key_maps = _check_level_tuple(x, 'x')
        if key_maps.size(0) != 1 or len(proposal_list) != 1 or len(img_metas) != 1:
            raise ValueError('SelsaRoIHead.simple_test: one key frame per call, got '
                             f'x[0] of batch {key_maps.size(0)}, {len(proposal_list)} proposal sets '
                             f'and {len(img_metas)} img_metas')
        rois = bbox2roi(proposal_list)  # (n, 5)
        num_classes = self.bbox_head.num_classes
        if rois.size(0) == 0:
            return [np.zeros((0, 5), dtype=np.float32) for _ in range(num_classes)]

        if ref_cache is None:
            if ref_x is None or ref_proposal_list is None:
                raise ValueError('SelsaRoIHead.simple_test: give ref_x and ref_proposal_list, or '
                                 'ref_cache')
            ref_maps = _check_level_tuple(ref_x, 'ref_x')
            num_refs = self._refs_per_clip(1, ref_maps, ref_proposal_list)
            cls_score, bbox_pred = self._bbox_forward(x, ref_x, rois, bbox2roi(ref_proposal_list),
                                                      num_refs)
        else:
            if ref_x is not None or ref_proposal_list is not None:
                raise ValueError('SelsaRoIHead.simple_test: with ref_cache, ref_x and '
                                 'ref_proposal_list must be None (the cache holds the references)')
            cls_score, bbox_pred = self._bbox_forward_cached(x, rois, ref_cache)

        det_bboxes, det_labels = self.detections(rois, cls_score, bbox_pred, img_metas[0], rescale)
        return bbox2result(det_bboxes, det_labels, num_classes)

    def detections(self, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor, img_meta: dict,
                   rescale: bool) -> tuple[Tensor, Tensor]:
        """One frame's detections: the box head's decoded boxes and class scores (mmdet's ``get_bboxes``
        without its NMS), then mmdet's multiclass NMS stopping at ``test_cfg.max_per_img``
        (:func:`clab.models.nms.multiclass_nms`, the same detections).

        Args:
            rois: Tensor[n, 5] key RoIs; cls_score: Tensor[n, C + 1]; bbox_pred: Tensor[n, 4 * C].
            img_meta: the frame's meta (``img_shape``, ``scale_factor``).
            rescale: boxes in the original image's pixels instead of the network input's.

        Returns:
            det_bboxes Tensor[k, 5] (x1, y1, x2, y2, score) and det_labels Tensor[k] long, k <= max_per_img
            (all that survive NMS when max_per_img <= 0).
        """
        bboxes, scores = self.bbox_head.get_bboxes(rois, cls_score, bbox_pred, img_meta['img_shape'],
                                                   img_meta['scale_factor'], rescale=rescale, cfg=None)
        cfg = self.test_cfg
        return multiclass_nms(bboxes, scores, cfg.score_thr, cfg.nms, cfg.max_per_img)

    def _bbox_forward_cached(self, x: Sequence[Tensor], rois: Tensor,
                             cache: ReferenceCache) -> tuple[Tensor, Tensor]:
        """Box branch of one key frame against cached references plus the key frame itself.

        Args:
            x: (Tensor[1, C, h, w],) key map.
            rois: Tensor[n, 5] key RoIs (batch index 0); also the key frame's reference RoIs.
            cache: the video's reference cache.

        Returns:
            cls_score Tensor[n, num_classes + 1], bbox_pred Tensor[n, 4 * num_classes].
        """
        extractor = self.bbox_roi_extractor
        if x[0].size(1) != cache.maps.channels:
            raise ValueError(f'SelsaRoIHead.simple_test: key map has {x[0].size(1)} channels, the '
                             f'cached reference maps {cache.maps.channels}')
        with_taps = cache.maps.embed_taps is not None
        key_maps = extractor.prepare_reference_maps(x[0], with_embed_taps=with_taps)
        # plain RoIAlign of the key proposals (bitwise extractor(x[:1], rois)): the TRoI input and, as
        # the last reference frame's proposals, the key frame's reference RoI features
        roi_feats = extractor.align_key_rois(x[:1], rois, key_maps)  # (n, C, 7, 7)
        # position-first search: the key RoIs and the map they were aligned from
        bbox_feats = extractor.aggregate(roi_feats, [cache.maps, key_maps], rois=rois,
                                         key_maps=key_maps)  # (n, C, 7, 7)
        encodings = SelsaBBoxHead.concat_encodings(cache.encodings,
                                                   self.bbox_head.encode_references(roi_feats))
        return self.bbox_head.forward_encoded(bbox_feats, encodings)
