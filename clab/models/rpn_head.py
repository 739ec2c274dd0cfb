"""``PrefixNMSRPNHead``: mmdet's ``RPNHead`` whose proposal NMS stops once ``max_per_img`` proposals are kept.

The same proposals as ``RPNHead`` (:func:`clab.models.nms.batched_nms` keeps mmcv's boxes in mmcv's
order); only the work after the ``max_per_img``-th kept proposal is skipped. Parameter names, training,
anchors and decoding are ``RPNHead``'s, so checkpoints of either load into the other.
"""
from __future__ import annotations

import torch
from mmdet.models.builder import MODELS
from mmdet.models.dense_heads import RPNHead

from .nms import batched_nms


@MODELS.register_module()
class PrefixNMSRPNHead(RPNHead):
    """``RPNHead`` with :func:`clab.models.nms.batched_nms` for its proposals (see the module docstring)."""

    def _bbox_post_process(self, mlvl_scores, mlvl_bboxes, mlvl_valid_anchors, level_ids, cfg, img_shape,
                           **kwargs):
        """One image's proposals: decode, drop boxes not wider and taller than ``cfg.min_bbox_size``, NMS
        per level (``cfg.nms``), the first ``cfg.max_per_img``.

        Args:
            mlvl_scores, mlvl_bboxes, mlvl_valid_anchors, level_ids: per level, Tensor[n_l] scores,
                Tensor[n_l, 4] deltas, Tensor[n_l, 4] anchors and Tensor[n_l] level indices.
            cfg: the RPN's proposal config (``test_cfg.rpn``, or ``train_cfg.rpn_proposal`` in training:
                ``nms``, ``max_per_img``, ``min_bbox_size``).
            img_shape: (h, w, ...) of the network input, to clip the boxes.

        Returns:
            Tensor[k, 5], proposals (x1, y1, x2, y2, score) in score order.
        """
        scores = torch.cat(mlvl_scores)
        anchors = torch.cat(mlvl_valid_anchors)
        proposals = self.bbox_coder.decode(anchors, torch.cat(mlvl_bboxes), max_shape=img_shape)
        ids = torch.cat(level_ids)
        if cfg.min_bbox_size >= 0:
            w = proposals[:, 2] - proposals[:, 0]
            h = proposals[:, 3] - proposals[:, 1]
            valid = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
            if not valid.all():
                proposals, scores, ids = proposals[valid], scores[valid], ids[valid]
        if proposals.numel() == 0:
            return proposals.new_zeros(0, 5)
        dets, _ = batched_nms(proposals, scores, ids, cfg.nms, cfg.max_per_img)
        # RPNHead slices the same way (for max_per_img <= 0 too)
        return dets[:cfg.max_per_img]
