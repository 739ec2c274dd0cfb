"""Temporal RoI Align (TRoI): Most-Similar RoI Align + temporal attentional feature aggregation.

Implements SPEC 2.4 with CLAB's epsilon in the cosine-similarity norms (SPEC 1.9), registered in mmdet's
``MODELS`` as ``TemporalRoIAlign`` with mmtracking 0.14's parameter names (``embed_network.conv`` holds
the only parameters).

For each key RoI feature R (C x 7 x 7) and each of the K reference maps F_k of its clip:

- Most-Similar RoI Align: for every one of the 49 RoI points, the cosine similarity with every position
  of F_k; the top ``num_most_similar_points`` positions q_j with values v_j; the point's feature is
  ``sum_j softmax(v)_j * F_k[:, q_j]`` (raw features), giving M_k (C x 7 x 7);
- temporal attention over X = [R, M_1..M_K]: E = embed(X) (3x3 conv, no norm, no activation); per block
  of C / ``num_temporal_attention_blocks`` channels a_k = <E_k, E_0> / sqrt(block size); weights
  softmax over the K + 1 frames (the key included); output ``sum_k alpha_k * X_k``. With 0 blocks the
  output is the mean of X (as upstream).

Deliberate differences from mmtracking 0.14 / the CLAB fork (same outputs):

- One interface for any number of clips N >= 1: ``ref_feats`` holds one map stack per clip, and a key
  RoI with batch index i (column 0 of ``rois``) attends only to clip i's maps. The published code picks
  a branch from ``len(ref_feats)`` and breaks at N == 1 (SPEC 0.1).
- Memory-bounded search: key RoIs are processed in chunks and the similarity of a chunk is built one
  reference map at a time, so at most ``similarity_chunk_elements`` similarity entries exist at once
  (upstream builds the whole (n*49) x (K*h*w) matrix, 2 GB at 600x1000 with 300 RoIs and 15 maps). The
  top-k runs over all positions of one map, so it equals the unchunked top-k.
- Reusable references (SPEC 2.7, PERFORMANCE.md): :meth:`prepare_reference_maps` computes the normalised
  maps once; :meth:`aggregate` takes several prepared stacks (a video's cached references plus the key
  frame's own map). Optionally the embed conv's nine taps are precomputed on each map, and the embed of a
  most-similar feature is gathered from them instead of convolved (the conv is linear and M_k is a
  weighted sum of map vectors); zero padding at the RoI border and the bias are handled exactly.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.builder import MODELS
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from torch import Tensor

from .reference_cache import ReferenceMaps


@MODELS.register_module()
class TemporalRoIAlign(SingleRoIExtractor):
    """Single-level RoIAlign followed, when reference maps are given, by TRoI aggregation (SPEC 2.4).

    Args:
        roi_layer, out_channels, featmap_strides, finest_scale, init_cfg: as mmdet's
            ``SingleRoIExtractor``; exactly one feature level (``featmap_strides`` of length 1).
        num_most_similar_points: top-k positions per RoI point and reference map (2).
        num_temporal_attention_blocks: attention blocks of the temporal aggregation (4); 0 averages the
            key and most-similar features instead and builds no embed network.
        epsilon: added to the L2 norms of the cosine similarity (1e-10 in CLAB; 0 reproduces upstream,
            which gives NaN for an all-zero feature vector).
        similarity_chunk_elements: the most similarity entries (RoI points x positions of one map)
            materialised at once; key RoIs are processed in chunks of
            ``max(1, similarity_chunk_elements // (49 * h * w))``.
    """

    def __init__(self,
                 roi_layer: dict,
                 out_channels: int,
                 featmap_strides: Sequence[int],
                 num_most_similar_points: int = 2,
                 num_temporal_attention_blocks: int = 4,
                 epsilon: float = 1e-10,
                 similarity_chunk_elements: int = 2**22,
                 finest_scale: int = 56,
                 init_cfg: dict | None = None) -> None:
        if len(featmap_strides) != 1:
            raise ValueError('TemporalRoIAlign: featmap_strides must name exactly one feature level '
                             f'(the neck output), got {list(featmap_strides)}')
        if int(num_most_similar_points) != num_most_similar_points or num_most_similar_points < 1:
            raise ValueError('TemporalRoIAlign: num_most_similar_points must be an integer >= 1, got '
                             f'{num_most_similar_points!r}')
        blocks = num_temporal_attention_blocks
        if int(blocks) != blocks or blocks < 0 or (blocks > 0 and out_channels % blocks != 0):
            raise ValueError('TemporalRoIAlign: num_temporal_attention_blocks must be 0 or a positive '
                             f'divisor of out_channels={out_channels}, got {blocks!r}')
        if not epsilon >= 0:
            raise ValueError(f'TemporalRoIAlign: epsilon must be >= 0, got {epsilon!r}')
        if int(similarity_chunk_elements) != similarity_chunk_elements or similarity_chunk_elements < 1:
            raise ValueError('TemporalRoIAlign: similarity_chunk_elements must be an integer >= 1, got '
                             f'{similarity_chunk_elements!r}')
        super().__init__(roi_layer, out_channels, list(featmap_strides), finest_scale=finest_scale,
                         init_cfg=init_cfg)
        self.num_most_similar_points = int(num_most_similar_points)
        self.num_temporal_attention_blocks = int(blocks)
        self.epsilon = float(epsilon)
        self.similarity_chunk_elements = int(similarity_chunk_elements)
        if self.num_temporal_attention_blocks > 0:
            # Kaiming-normal (fan_out, relu) weights and zero bias: ConvModule's own init.
            self.embed_network = ConvModule(out_channels, out_channels, 3, padding=1, conv_cfg=None,
                                            norm_cfg=None, act_cfg=None)

    # ------------------------------------------------------------------ public interface
    def forward(self,
                feats: Sequence[Tensor],
                rois: Tensor,
                roi_scale_factor: float | None = None,
                ref_feats: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        """RoI features of ``rois``, temporally aggregated when ``ref_feats`` is given.

        Args:
            feats: one-level tuple (Tensor[N, C, h, w],) of the images the RoIs lie in.
            rois: Tensor[n, 5], [batch index, x1, y1, x2, y2] in input-image pixels (mmdet ``bbox2roi``).
            roi_scale_factor: optional RoI rescaling, as ``SingleRoIExtractor``.
            ref_feats: None for plain RoIAlign (reference proposals); else the reference maps of each
                clip: a sequence of N Tensor[K_i, C, h_i, w_i] (clip i for RoIs with batch index i), or
                one Tensor[K, C, h, w] when N == 1.

        Returns:
            Tensor[n, C, 7, 7] in the row order of ``rois``.
        """
        roi_feats = super().forward(feats, rois, roi_scale_factor)  # (n, C, 7, 7)
        if ref_feats is None:
            return roi_feats
        if isinstance(ref_feats, Tensor):
            ref_feats = [ref_feats]
        clip_maps = [[self.prepare_reference_maps(f)] for f in ref_feats]
        return self.aggregate_clips(roi_feats, rois[:, 0], clip_maps)

    def prepare_reference_maps(self, ref_feats: Tensor, with_embed_taps: bool = False) -> ReferenceMaps:
        """Lay out K reference maps for the most-similar search (and optionally precompute embed taps).

        Args:
            ref_feats: Tensor[K, C, h, w], one neck map per reference frame.
            with_embed_taps: also compute ``embed_taps`` (K * 9 * C * C * h * w multiply-adds, a
                Tensor[K, h*w, 9*C]); needs an embed network.

        Returns:
            :class:`ReferenceMaps`.
        """
        if ref_feats.dim() != 4 or ref_feats.size(1) != self.out_channels:
            raise ValueError('TemporalRoIAlign: reference maps must be Tensor[K, C, h, w] with '
                             f'C = out_channels = {self.out_channels}, got shape {tuple(ref_feats.shape)}')
        if with_embed_taps and self.num_temporal_attention_blocks == 0:
            raise ValueError('TemporalRoIAlign: with_embed_taps needs the embed network '
                             '(num_temporal_attention_blocks > 0)')
        num_maps, _, height, width = ref_feats.shape
        flat = ref_feats.flatten(2)  # (K, C, h*w)
        normed = flat / (flat.norm(p=2, dim=1, keepdim=True) + self.epsilon)  # (K, C, h*w)
        points = flat.transpose(1, 2).contiguous()  # (K, h*w, C)
        embed_taps = None
        if with_embed_taps:
            # one map at a time: (9*C, h*w) products, stored position-major as (K, h*w, 9*C)
            embed_taps = torch.stack([self._tap_products(flat[k]).t() for k in range(num_maps)])
        return ReferenceMaps(points=points, normed=normed.contiguous(), height=height, width=width,
                             embed_taps=embed_taps)

    def aggregate_clips(self, roi_feats: Tensor, roi_clip_inds: Tensor,
                        clip_maps: Sequence[Sequence[ReferenceMaps]]) -> Tensor:
        """TRoI aggregation of RoIs from several clips, each against its own clip's reference maps.

        Args:
            roi_feats: Tensor[n, C, 7, 7], plain RoIAlign features of the key RoIs.
            roi_clip_inds: Tensor[n], the clip index of each RoI (column 0 of ``rois``).
            clip_maps: for each of the N clips, its prepared reference map stacks.

        Returns:
            Tensor[n, C, 7, 7] in the row order of ``roi_feats``.
        """
        clip_inds = roi_clip_inds.long()
        num_clips = len(clip_maps)
        if clip_inds.numel() and (int(clip_inds.min()) < 0 or int(clip_inds.max()) >= num_clips):
            raise ValueError(f'TemporalRoIAlign: RoI batch indices must lie in [0, {num_clips}) for '
                             f'{num_clips} reference clips, got {int(clip_inds.min())}..'
                             f'{int(clip_inds.max())}')
        out = torch.zeros_like(roi_feats)
        for i, maps in enumerate(clip_maps):
            idx = torch.nonzero(clip_inds == i, as_tuple=False).squeeze(1)
            if idx.numel() == 0:
                continue
            out = out.index_copy(0, idx, self.aggregate(roi_feats[idx], maps))
        return out

    def aggregate(self, roi_feats: Tensor, ref_maps: Sequence[ReferenceMaps]) -> Tensor:
        """TRoI aggregation of one clip's key RoIs against its reference maps (SPEC 2.4).

        Args:
            roi_feats: Tensor[n, C, 7, 7], plain RoIAlign features R of the key RoIs.
            ref_maps: prepared map stacks, taken in order as the K reference frames (for a cached video:
                the cached maps, then the key frame's own map). The most-similar features of stacks
                with ``embed_taps`` are embedded by gathering taps, the others by the conv.

        Returns:
            Tensor[n, C, 7, 7].
        """
        if len(ref_maps) == 0 or sum(m.num_maps for m in ref_maps) == 0:
            raise ValueError('TemporalRoIAlign: at least one reference map is needed for aggregation')
        for maps in ref_maps:
            if maps.channels != roi_feats.size(1):
                raise ValueError(f'TemporalRoIAlign: reference maps have {maps.channels} channels, the '
                                 f'RoI features {roi_feats.size(1)}')
        n, _, roi_h, roi_w = roi_feats.shape
        if n == 0:
            return roi_feats
        positions = max(m.height * m.width for m in ref_maps)
        chunk = max(1, self.similarity_chunk_elements // (roi_h * roi_w * positions))
        outs = [self._aggregate_chunk(roi_feats[start:start + chunk], ref_maps)
                for start in range(0, n, chunk)]
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    # ------------------------------------------------------------------ internals
    def _aggregate_chunk(self, roi_feats: Tensor, ref_maps: Sequence[ReferenceMaps]) -> Tensor:
        """:meth:`aggregate` for a chunk of RoIs small enough for one map's similarity block.

        Works on RoI points, Tensor[n*7*7, C] in (roi, y, x) order, and returns to Tensor[n, C, 7, 7].
        """
        n, channels, roi_h, roi_w = roi_feats.shape
        blocks = self.num_temporal_attention_blocks
        block_size = channels // max(blocks, 1)
        key_points = roi_feats.permute(0, 2, 3, 1).reshape(-1, channels)  # (n*49, C)
        key_hat = key_points / (key_points.norm(p=2, dim=1, keepdim=True) + self.epsilon)
        frames = [key_points]  # K+1 tensors (n*49, C): the key, then the most-similar features
        logits = []  # K+1 tensors (n*49, blocks): <E_k, E_0> per block
        if blocks > 0:
            key_embed = self._to_points(self.embed_network(roi_feats)).view(-1, blocks, block_size)
            logits.append((key_embed * key_embed).sum(dim=2))
        for maps in ref_maps:
            for k in range(maps.num_maps):
                sim = key_hat.mm(maps.normed[k])  # (n*49, h*w)
                values, idx = sim.topk(self.num_most_similar_points, dim=1)  # (n*49, top)
                del sim
                weights = values.softmax(dim=1)  # (n*49, top)
                # weighted sum of the raw features at the top positions: (n*49, C)
                most_similar = F.embedding_bag(idx, maps.points[k], per_sample_weights=weights,
                                               mode='sum')
                frames.append(most_similar)
                if blocks == 0:
                    continue
                if maps.embed_taps is None:
                    ms_maps = most_similar.view(n, roi_h, roi_w, channels).permute(0, 3, 1, 2)
                    embed = self._to_points(self.embed_network(ms_maps))
                else:
                    embed = self._embed_from_taps(maps.embed_taps[k], idx.view(n, roi_h, roi_w, -1),
                                                  weights.view(n, roi_h, roi_w, -1))
                logits.append((embed.view(-1, blocks, block_size) * key_embed).sum(dim=2))
        if blocks == 0:
            out = torch.stack(frames).mean(dim=0)  # (n*49, C)
        else:
            # softmax over the K+1 frames (the key included) of the scaled dot products
            alpha = (torch.stack(logits) / math.sqrt(block_size)).softmax(dim=0)  # (K+1, n*49, blocks)
            out = None  # sum_k alpha_k * X_k, accumulated frame by frame: (n*49, blocks, C/blocks)
            for frame, frame_alpha in zip(frames, alpha):
                frame = frame.view(-1, blocks, block_size)
                frame_alpha = frame_alpha.unsqueeze(2)
                out = frame * frame_alpha if out is None else torch.addcmul(out, frame, frame_alpha)
        return out.reshape(n, roi_h, roi_w, channels).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def _to_points(maps: Tensor) -> Tensor:
        """Tensor[n, C, 7, 7] -> Tensor[n*7*7, C] in (roi, y, x) order."""
        return maps.permute(0, 2, 3, 1).reshape(-1, maps.size(1))

    def _tap_products(self, flat_map: Tensor) -> Tensor:
        """Tensor[C, P] map positions -> Tensor[9*C, P], row t*C + o = sum_c W[o, c, t // 3, t % 3] F[c]."""
        weight = self.embed_network.conv.weight  # (C_out, C_in, 3, 3)
        taps_weight = weight.permute(2, 3, 0, 1).reshape(-1, weight.size(1))  # (9*C_out, C_in)
        return taps_weight.mm(flat_map)

    def _embed_from_taps(self, taps: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
        """The embed conv of most-similar features, gathered from one map's precomputed taps.

        A most-similar point is sum_j w_j F[:, q_j], so tap t of the conv applied to it is
        sum_j w_j taps[q_j, t]; output point (y, x) sums tap (dy, dx) of source point
        (y + dy - 1, x + dx - 1), none outside the RoI grid (the conv's zero padding), plus the bias.

        Args:
            taps: Tensor[h*w, 9*C], one map's ``embed_taps``.
            idx: Tensor[n, 7, 7, top] long, the most-similar positions of each RoI point.
            weights: Tensor[n, 7, 7, top], their softmax weights.

        Returns:
            Tensor[n*7*7, C] in (roi, y, x) order, equal to ``embed_network`` of the most-similar
            features.
        """
        n, roi_h, roi_w, top = idx.shape
        channels = taps.size(1) // 9
        rows = taps.view(-1, channels)  # (h*w*9, C), row 9*position + t
        # the grid padded by one zero-weight point on each side: (n, (7+2)*(7+2), top)
        idx = F.pad(idx, (0, 0, 1, 1, 1, 1)).view(n, -1, top)
        weights = F.pad(weights, (0, 0, 1, 1, 1, 1)).view(n, -1, top)
        # padded source point (y + dy, x + dx) of output point (y, x) and tap t = 3*dy + dx: (7*7*9,)
        device = idx.device
        dy = torch.arange(3, device=device).repeat_interleave(3)  # (9,)
        dx = torch.arange(3, device=device).repeat(3)
        ys = torch.arange(roi_h, device=device)[:, None, None]
        xs = torch.arange(roi_w, device=device)[None, :, None]
        source = ((ys + dy) * (roi_w + 2) + xs + dx).view(-1)  # (7, 7, 9) -> (7*7*9,)
        tap = torch.arange(9, device=device).repeat(roi_h * roi_w)  # (7*7*9,)
        bag_idx = (idx.index_select(1, source) * 9 + tap[:, None]).view(-1, 9 * top)  # (n*49, 9*top)
        bag_weights = weights.index_select(1, source).view(-1, 9 * top)
        out = F.embedding_bag(bag_idx, rows, per_sample_weights=bag_weights, mode='sum')  # (n*49, C)
        bias = self.embed_network.conv.bias
        return out if bias is None else out + bias
