"""SELSA aggregator: multi-head attention from key RoI features to reference RoI features (SPEC 2.5).

Registered in mmdet's ``MODELS`` as ``SelsaAggregator`` with mmtracking 0.14's parameter names
(``fc_embed``, ``ref_fc_embed``, ``fc``, ``ref_fc``: four Linear(C, C) layers with PyTorch's default init).

For key features x (n x C) and reference features r (m x C), with G = ``num_attention_blocks`` groups
of d = C / G channels:

    q = fc_embed(x), k = ref_fc_embed(r), v = ref_fc(r), each split into G groups of d channels
    A_g = softmax over the m references of (q_g k_g^T / sqrt(d))        (n x m per group)
    output = fc(concat_g A_g v_g)                                       (n x C)

The reference side (k, v) does not depend on the key frame, so it is exposed separately
(:meth:`SelsaAggregator.project_references`) for the per-video reference cache (SPEC 2.7).
"""
from __future__ import annotations

import math

import torch
from mmcv.runner import BaseModule
from mmdet.models.builder import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class SelsaAggregator(BaseModule):
    """Multi-head attention of key RoI features over reference RoI features.

    Args:
        in_channels: C, the feature size (the box head's ``fc_out_channels``, 1024).
        num_attention_blocks: G, the number of attention groups (16); must divide C.
        init_cfg: mmcv init config; None keeps PyTorch's default Linear init (as upstream).
    """

    def __init__(self, in_channels: int, num_attention_blocks: int = 16,
                 init_cfg: dict | None = None) -> None:
        if in_channels < 1 or num_attention_blocks < 1 or in_channels % num_attention_blocks != 0:
            raise ValueError('SelsaAggregator: num_attention_blocks must be a positive divisor of '
                             f'in_channels, got in_channels={in_channels}, '
                             f'num_attention_blocks={num_attention_blocks}')
        super().__init__(init_cfg)
        self.in_channels = in_channels
        self.num_attention_blocks = num_attention_blocks
        self.fc_embed = nn.Linear(in_channels, in_channels)
        self.ref_fc_embed = nn.Linear(in_channels, in_channels)
        self.fc = nn.Linear(in_channels, in_channels)
        self.ref_fc = nn.Linear(in_channels, in_channels)

    def forward(self, x: Tensor, ref_x: Tensor) -> Tensor:
        """Aggregate reference features into each key feature.

        Args:
            x: Tensor[n, C], key RoI features.
            ref_x: Tensor[m, C], reference RoI features.

        Returns:
            Tensor[n, C] (the residual that the box head adds to x).
        """
        return self.attend(x, *self.project_references(ref_x))

    def project_references(self, ref_x: Tensor) -> tuple[Tensor, Tensor]:
        """The reference side of the attention.

        Args:
            ref_x: Tensor[m, C].

        Returns:
            (keys, values): ``ref_fc_embed(ref_x)`` and ``ref_fc(ref_x)``, each Tensor[m, C].
        """
        return self.ref_fc_embed(ref_x), self.ref_fc(ref_x)

    def attend(self, x: Tensor, ref_keys: Tensor, ref_values: Tensor) -> Tensor:
        """Attention of the key features over projected references.

        Args:
            x: Tensor[n, C], key RoI features.
            ref_keys, ref_values: Tensor[m, C] each, from :meth:`project_references` (for several
                reference sets, concatenated along m).

        Returns:
            Tensor[n, C].
        """
        n, channels = x.shape
        m = ref_keys.size(0)
        groups = self.num_attention_blocks
        d = channels // groups
        query = self.fc_embed(x).view(n, groups, d).transpose(0, 1)  # (G, n, d)
        keys = ref_keys.view(m, groups, d).permute(1, 2, 0)  # (G, d, m)
        values = ref_values.view(m, groups, d).transpose(0, 1)  # (G, m, d)
        # scaled in place: no second (G, n, m) buffer (the same numbers as a division into a new one)
        weights = torch.bmm(query, keys).div_(math.sqrt(d)).softmax(dim=2)  # (G, n, m)
        out = torch.bmm(weights, values).transpose(0, 1).reshape(n, channels)  # (n, C)
        return self.fc(out)
