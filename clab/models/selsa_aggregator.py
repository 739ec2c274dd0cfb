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


#: attention weights (groups x key RoIs x reference RoIs) computed at once: for 300 key and 4,500
#: reference RoIs (16 groups) one aggregator's attention took 0.08 s with 1 or 2 groups at a time,
#: 0.11 s with 3 or 4 and 0.15 s with all 16 at once (median of 7, 2 threads)
ATTENTION_BLOCK_ELEMENTS = 3 * 2**20


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
        scale = math.sqrt(d)
        query = self.fc_embed(x)
        # a power-of-two scale is exact on either side of the product: apply it to the n x C queries
        # rather than to the n x m logits of every group
        exact = math.frexp(scale)[0] == 0.5
        if exact:
            query = query / scale
        query = query.view(n, groups, d).transpose(0, 1)  # (G, n, d)
        keys = ref_keys.view(m, groups, d).permute(1, 2, 0)  # (G, d, m)
        values = ref_values.view(m, groups, d).transpose(0, 1)  # (G, m, d)
        # a few groups at a time, so that their (g, n, m) weights stay in cache between the products and
        # the softmax (on this CPU bitwise the numbers of all groups at once)
        step = max(1, min(groups, ATTENTION_BLOCK_ELEMENTS // max(1, n * m)))
        outs = []
        for g0 in range(0, groups, step):
            part = slice(g0, g0 + step)
            logits = torch.bmm(query[part], keys[part])  # (g, n, m)
            if not exact:
                logits = logits.div_(scale)  # in place: no second (g, n, m) buffer
            outs.append(torch.bmm(logits.softmax(dim=2), values[part]))  # (g, n, d)
        out = (torch.cat(outs) if len(outs) > 1 else outs[0]).transpose(0, 1).reshape(n, channels)  # (n, C)
        return self.fc(out)
