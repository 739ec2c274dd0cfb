"""SELSA box head: shared fcs with a SELSA aggregator residual before each ReLU (SPEC 2.5).

Registered in mmdet's ``MODELS`` as ``SelsaBBoxHead`` (extends mmdet's ``ConvFCBBoxHead``), with
mmtracking 0.14's parameter names: ``shared_fcs.{i}``, ``aggregator.{i}`` (one ``SelsaAggregator`` per
shared fc), ``fc_cls`` (num_classes + 1 rows, background last) and ``fc_reg``. Targets, losses and
``get_bboxes`` are mmdet's ``BBoxHead`` ones, unchanged.

Forward, for key RoI features x (n x C x 7 x 7) and reference RoI features r (m x C x 7 x 7):

    x, r = flatten(x), flatten(r)
    for each shared fc i:
        x = fc_i(x); r = fc_i(r)          # shared weights
        x = x + aggregator_i(x, r)        # attention on the pre-ReLU features
        x = relu(x); r = relu(r)
    cls_score = fc_cls(x); bbox_pred = fc_reg(x)

The reference path never depends on the key RoIs, so :meth:`SelsaBBoxHead.encode_references` runs it
once and returns each aggregator's key/value projections; :meth:`SelsaBBoxHead.forward_encoded` then
runs the key path against them (reused across the frames of a video, SPEC 2.7).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.models.builder import MODELS
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
from torch import Tensor, nn


@MODELS.register_module()
class SelsaBBoxHead(ConvFCBBoxHead):
    """ConvFCBBoxHead whose shared fcs attend to reference RoIs through SELSA aggregators.

    Args:
        aggregator: config of the aggregator built for every shared fc, e.g.
            ``dict(type='SelsaAggregator', in_channels=1024, num_attention_blocks=16)`` (mmtracking's
            name for this argument).
        aggregator_cfg: the same, under an alternative name; give exactly one of the two.
        num_shared_fcs: shared fcs (3 for TRoI, 2 for plain SELSA); must be >= 1.
        **kwargs: ``ConvFCBBoxHead`` / ``BBoxHead`` arguments (in_channels, fc_out_channels,
            roi_feat_size, num_classes, bbox_coder, reg_class_agnostic, loss_cls, loss_bbox, ...). Shared
            or branch convs and ``with_avg_pool`` are not supported.
    """

    def __init__(self, aggregator: dict | None = None, aggregator_cfg: dict | None = None,
                 num_shared_fcs: int = 3, **kwargs) -> None:
        if (aggregator is None) == (aggregator_cfg is None):
            raise ValueError('SelsaBBoxHead: give exactly one of aggregator / aggregator_cfg (the '
                             "SELSA aggregator config, e.g. dict(type='SelsaAggregator', "
                             'in_channels=1024, num_attention_blocks=16))')
        if num_shared_fcs < 1:
            raise ValueError(f'SelsaBBoxHead: num_shared_fcs must be >= 1, got {num_shared_fcs}')
        for name in ('num_shared_convs', 'num_cls_convs', 'num_reg_convs'):
            if kwargs.get(name, 0):
                raise ValueError(f'SelsaBBoxHead: {name} must be 0 (convs are not supported), got '
                                 f'{kwargs[name]}')
        if kwargs.get('with_avg_pool', False):
            raise ValueError('SelsaBBoxHead: with_avg_pool is not supported')
        super().__init__(num_shared_fcs=num_shared_fcs, **kwargs)
        agg_cfg = dict(aggregator if aggregator is not None else aggregator_cfg)
        self.aggregator = nn.ModuleList(MODELS.build(dict(agg_cfg)) for _ in range(num_shared_fcs))
        width = getattr(self.aggregator[0], 'in_channels', self.fc_out_channels)
        if width != self.fc_out_channels:
            raise ValueError(f'SelsaBBoxHead: aggregator in_channels ({width}) must equal '
                             f'fc_out_channels ({self.fc_out_channels})')

    def forward(self, x: Tensor, ref_x: Tensor) -> tuple[Tensor, Tensor]:
        """Class scores and box deltas of key RoIs attending to reference RoIs.

        Args:
            x: Tensor[n, C, 7, 7], key RoI features (TRoI output).
            ref_x: Tensor[m, C, 7, 7], reference RoI features (plain RoIAlign).

        Returns:
            cls_score Tensor[n, num_classes + 1] (background last), bbox_pred Tensor[n, 4 * num_classes]
            (class-specific; 4 if ``reg_class_agnostic``).
        """
        return self.forward_encoded(x, self.encode_references(ref_x))

    def encode_references(self, ref_x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Run the reference RoIs through the shared fcs and project them for each aggregator.

        Args:
            ref_x: Tensor[m, C, 7, 7].

        Returns:
            For each shared fc i: (keys, values) = aggregator_i.project_references(fc_i(r)), each
            Tensor[m, fc_out_channels]; r is then ReLU(fc_i(r)).
        """
        r = ref_x.flatten(1)  # (m, C*7*7)
        encodings = []
        for fc, aggregator in zip(self.shared_fcs, self.aggregator):
            r = fc(r)  # (m, F), pre-ReLU
            encodings.append(aggregator.project_references(r))
            r = F.relu(r)
        return encodings

    def forward_encoded(self, x: Tensor,
                        encodings: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """:meth:`forward` with the reference side given by :meth:`encode_references`.

        Args:
            x: Tensor[n, C, 7, 7], key RoI features.
            encodings: per shared fc, (keys, values) Tensor[m, F] each; encodings of several reference
                sets may be concatenated along m.

        Returns:
            cls_score, bbox_pred as :meth:`forward`.
        """
        if len(encodings) != len(self.shared_fcs):
            raise ValueError(f'SelsaBBoxHead: expected {len(self.shared_fcs)} reference encodings '
                             f'(one per shared fc), got {len(encodings)}')
        x = x.flatten(1)  # (n, C*7*7)
        for fc, aggregator, (keys, values) in zip(self.shared_fcs, self.aggregator, encodings):
            x = fc(x)  # (n, F)
            x = x + aggregator.attend(x, keys, values)  # residual on the pre-ReLU features
            x = F.relu(x)
        x_cls, x_reg = x, x
        for fc in self.cls_fcs:
            x_cls = F.relu(fc(x_cls))
        for fc in self.reg_fcs:
            x_reg = F.relu(fc(x_reg))
        cls_score = self.fc_cls(x_cls) if self.with_cls else None  # (n, num_classes + 1)
        bbox_pred = self.fc_reg(x_reg) if self.with_reg else None  # (n, 4 * num_classes)
        return cls_score, bbox_pred

    @staticmethod
    def concat_encodings(*parts: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Concatenate the encodings of several reference sets along the RoI axis (in the given order)."""
        return [(torch.cat([p[i][0] for p in parts]), torch.cat([p[i][1] for p in parts]))
                for i in range(len(parts[0]))]
