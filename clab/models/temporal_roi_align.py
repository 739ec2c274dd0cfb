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
  prepared stack of maps at a time (one batched product, one top-k, one gather per stack), so at most
  ``similarity_chunk_elements`` similarity entries exist at once (upstream builds the whole
  (n*49) x (K*h*w) matrix, 2 GB at 600x1000 with 300 RoIs and 15 maps); the default bound is chosen for
  the device (:func:`default_chunk_elements`). The top-k runs over all positions of one map, so it equals
  the unchunked top-k.
- Mixed precision: half-precision features are computed in float32 with autocast off and returned in
  their dtype (the published module's ``force_fp32(apply_to=('feats', 'ref_feats'), out_fp16=True)``).
- Reusable references (SPEC 2.7, PERFORMANCE.md): :meth:`prepare_reference_maps` computes the normalised
  maps once; :meth:`aggregate` takes several prepared stacks (a video's cached references plus the key
  frame's own map). Optionally the embed conv's nine taps are precomputed on each map, and the embed of a
  most-similar feature is gathered from them instead of convolved (the conv is linear and M_k is a
  weighted sum of map vectors); zero padding at the RoI border and the bias are handled exactly.
- Position-first search on the cached test path (:meth:`aggregate` with ``rois`` and ``key_maps``): a key
  RoI point is a 16-tap combination of key map positions (:mod:`clab.models.roi_taps`), so its
  similarities are the same combination of the key positions' similarities: one (U x C) by (C x h*w)
  product per map for the U <= h*w positions the RoIs touch, instead of one per RoI point (at 608x1008
  with 300 RoIs: 44 G instead of 270 G multiply-adds a frame). Its top-k runs on the groups of
  positions with the largest maxima (:func:`_topk_by_groups`, the same values as ``topk``). Pairs whose
  kept top-k is within rounding of the next value are searched again directly, so the kept positions
  are the direct search's; the key RoIs' embed conv is gathered from the key map's taps. On a CPU each
  map's table is built and read in column tiles that stay in cache, and with AVX-512 or AVX2 the tiles'
  bags and top-k run as one compiled pass (:mod:`clab.models.native`; the same values as the torch ops, exact ties
  in column order).
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.builder import MODELS
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from torch import Tensor
from torch.profiler import record_function

from . import native
from .reference_cache import ReferenceMaps
from .roi_taps import roi_align_from_points, roi_align_taps


#: similarity entries per block on a CPU by default (float32: 128 MiB): see default_chunk_elements
CPU_CHUNK_ELEMENTS = 2**25
#: on a CPU the position-first search's table and similarity blocks hold at most this many entries
#: (16 MiB of float32; with the grouped top-k, the search at 608x1008 took a median 1.88 s with it,
#: 2.24 s with 2**20, 2.14 s with 2**21 and 2.02 s with 2**23; benchmarks/README.md)
CPU_POSITION_BLOCK_ELEMENTS = 2**22
#: on a CPU the position-first search builds each map's table in tiles of CPU_TABLE_TILE columns (whole
#: top-k groups) and runs the 16-tap bags of up to CPU_TILE_ELEMENTS // CPU_TABLE_TILE points on one tile
#: at a time, so that the tile (U x 128 = 1.2 MB at 608x1008) stays in a core's cache while every point
#: reads 16 of its rows; the top-k groups' similarities are then summed again from their 64-column rows.
#: The TRoI part of a 608x1008 frame took 2.08 s against 2.27 s with whole-width blocks, with bitwise the
#: same outputs on that frame (benchmarks/README.md; a tile's product may round differently from one
#: whole-width product, within what the near-tie search covers). 0: whole-width blocks, as on other
#: devices
CPU_TABLE_TILE = 128
CPU_TILE_ELEMENTS = 2**21
#: on a CPU the attention logits of the cached path (TemporalRoIAlign._logits_by_maps) take one map at a
#: time, and its points this many at a time (an embed block of 2 MB of float32 at 512 channels)
CPU_EMBED_BLOCK_POINTS = 1024
#: the tiled search's top-k by the compiled kernel (clab/models/csrc/tiled_search.cpp: a tile's bags stay
#: in registers and update each point's running top, one pass) where it builds and reproduces the torch
#: ops, and the cached path's attention logits by the compiled bag_logits where it builds and matches the
#: torch ops within rounding; False: torch ops for both (embedding_bag, amax and the grouped top-k;
#: embedding_bag, add_, mul_ and sum)
CPU_NATIVE_SEARCH = True
#: near ties of the position-first search: a pair whose last kept similarity is within
#: NEAR_TIE_FACTOR * sqrt(C) * eps * (1 + spread) of the next one is searched again directly. On the
#: 608x1008 benchmark frame, on a CPU, a position-first similarity and the direct one differ by at most
#: 0.12 of that unit (benchmarks/troi_rounding.py); a wrong pick needs a gap below the two values' errors
#: together (0.24), so 2 leaves an 8x margin and searches 1.3% of the pairs again (8: 5.0%)
NEAR_TIE_FACTOR = 2
#: the same on other devices, whose rounding (e.g. cuBLAS's shape-dependent kernels) was not measured:
#: the earlier, wider tolerance (searching 5% of the pairs again costs little on a GPU)
UNMEASURED_NEAR_TIE_FACTOR = 8
#: the position-first search's top-k runs on the k groups of TOPK_GROUP consecutive positions with the
#: largest maxima (exact, see _topk_by_groups): 3.6x faster than torch.topk over 438 x 2,432 blocks here
TOPK_GROUP = 64
#: the GPU default's bounds, and the share of free device memory it may take
GPU_CHUNK_ELEMENTS_MIN, GPU_CHUNK_ELEMENTS_MAX, GPU_FREE_MEMORY_SHARE = 2**22, 2**30, 0.25
#: SingleRoIExtractor.forward without mmcv's force_fp32 wrapper (the wrapper keeps it as __wrapped__)
_PLAIN_ROI_FORWARD = getattr(SingleRoIExtractor.forward, '__wrapped__', SingleRoIExtractor.forward)


def default_chunk_elements(device: torch.device | str) -> int:
    """The default bound on similarity entries materialised at once by the most-similar search.

    On a GPU: a quarter of the free device memory, counting 8 bytes per entry (the float32 block and
    as much again for the top-k's workspace), within [2**22, 2**30] entries: at 600x1000 (300 RoIs,
    14 cached 38x63 maps) one block per map stack, i.e. two similarity products a frame instead of
    ~135. On a CPU: ``CPU_CHUNK_ELEMENTS`` (measured, benchmarks/README.md).

    Args:
        device: where the search runs.

    Returns:
        the number of entries.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * GPU_FREE_MEMORY_SHARE) // 8
        return min(max(budget, GPU_CHUNK_ELEMENTS_MIN), GPU_CHUNK_ELEMENTS_MAX)
    return CPU_CHUNK_ELEMENTS


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
        similarity_chunk_elements: the most similarity entries (RoI points x positions of all maps of
            one prepared stack) materialised at once; key RoIs are processed in chunks of
            ``max(1, similarity_chunk_elements // (49 * K * h * w))`` for the largest stack of K maps.
            None (default) chooses it for the device at run time (:func:`default_chunk_elements`).
    """

    def __init__(self,
                 roi_layer: dict,
                 out_channels: int,
                 featmap_strides: Sequence[int],
                 num_most_similar_points: int = 2,
                 num_temporal_attention_blocks: int = 4,
                 epsilon: float = 1e-10,
                 similarity_chunk_elements: int | None = None,
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
        if similarity_chunk_elements is not None and (
                int(similarity_chunk_elements) != similarity_chunk_elements or similarity_chunk_elements < 1):
            raise ValueError('TemporalRoIAlign: similarity_chunk_elements must be None or an integer >= 1, '
                             f'got {similarity_chunk_elements!r}')
        super().__init__(roi_layer, out_channels, list(featmap_strides), finest_scale=finest_scale,
                         init_cfg=init_cfg)
        self.num_most_similar_points = int(num_most_similar_points)
        self.num_temporal_attention_blocks = int(blocks)
        self.epsilon = float(epsilon)
        self.similarity_chunk_elements = (None if similarity_chunk_elements is None
                                          else int(similarity_chunk_elements))
        #: counts of the last position-first search (None before one ran): ``pairs`` (map, RoI point)
        #: searched and ``near_ties`` searched again directly
        self.last_search: dict[str, int] | None = None
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

        Half-precision inputs (float16 / bfloat16, e.g. under mmcv's fp16 mode) are computed in float32
        with autocast off and the result is returned in the dtype of ``feats`` (the published module's
        ``force_fp32(apply_to=('feats', 'ref_feats'), out_fp16=True)``).

        Args:
            feats: one-level tuple (Tensor[N, C, h, w],) of the images the RoIs lie in.
            rois: Tensor[n, 5], [batch index, x1, y1, x2, y2] in input-image pixels (mmdet ``bbox2roi``).
            roi_scale_factor: optional RoI rescaling, as ``SingleRoIExtractor``.
            ref_feats: None for plain RoIAlign (reference proposals); else the reference maps of each
                clip: a sequence of N Tensor[K_i, C, h_i, w_i] (clip i for RoIs with batch index i), or
                one Tensor[K, C, h, w] when N == 1.

        Returns:
            Tensor[n, C, 7, 7] in the row order of ``rois``, of the dtype of ``feats``.
        """
        out_dtype = feats[0].dtype
        dtype = _compute_dtype(out_dtype)
        with _full_precision(feats[0].device):
            feats = tuple(f.to(dtype) for f in feats)
            # the parent's forward without its fp16 wrapper, which would round the result to fp16
            roi_feats = _PLAIN_ROI_FORWARD(self, feats, rois.to(dtype), roi_scale_factor)  # (n, C, 7, 7)
            if ref_feats is not None:
                if isinstance(ref_feats, Tensor):
                    ref_feats = [ref_feats]
                clip_maps = [[self.prepare_reference_maps(f)] for f in ref_feats]
                roi_feats = self.aggregate_clips(roi_feats, rois[:, 0], clip_maps)
        return roi_feats.to(out_dtype)

    def prepare_reference_maps(self, ref_feats: Tensor, with_embed_taps: bool = False) -> ReferenceMaps:
        """Lay out K reference maps for the most-similar search (and optionally precompute embed taps).

        Computed in float32 for half-precision maps (the stored layouts are float32).

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
        with _full_precision(ref_feats.device):
            flat = ref_feats.to(_compute_dtype(ref_feats.dtype)).flatten(2)  # (K, C, h*w)
            normed = flat / (flat.norm(p=2, dim=1, keepdim=True) + self.epsilon)  # (K, C, h*w)
            points = flat.transpose(1, 2).contiguous()  # (K, h*w, C)
            embed_taps = None
            if with_embed_taps:
                # one map at a time: (h*w, 9*C) products, position-major
                embed_taps = self._tap_products(flat)
        return ReferenceMaps(points=points, normed=normed.contiguous(), height=height, width=width,
                             embed_taps=embed_taps)

    def align_key_rois(self, feats: Sequence[Tensor], rois: Tensor, key_maps: ReferenceMaps) -> Tensor:
        """Plain RoIAlign of ``rois`` on the key map, bitwise equal to ``self(feats, rois)``.

        On a CPU, for mmcv's average-pooling RoIAlign with a fixed sampling ratio, the RoIs are aligned
        from ``key_maps.points`` with the kernel's own float operations on whole channel rows
        (:func:`roi_align_like_kernel`: 0.07 s instead of 0.39 s for 300 RoIs on a 38x63x512 map),
        provided a check on the running mmcv build found the two bitwise equal
        (:func:`_kernel_order_reproduced`). Anywhere else (GPU kernels contract into fused
        multiply-adds, half precision, RoIs of another image) this is ``self(feats, rois)``.

        Args:
            feats: (Tensor[1, C, h, w],) the key map.
            rois: Tensor[n, 5], batch index 0, image pixels.
            key_maps: the same map prepared (:meth:`prepare_reference_maps`).

        Returns:
            Tensor[n, C, 7, 7] of the dtype of ``feats``.
        """
        layer = self.roi_layers[0]
        feat = feats[0]
        usable = (feat.device.type == 'cpu' and feat.dtype in (torch.float32, torch.float64)
                  and feat.size(0) == 1 and key_maps.points.dtype == feat.dtype
                  and rois.dtype == feat.dtype and rois.numel() > 0 and self._roi_layer_is_linear()
                  and not bool(rois[:, 0].any()))
        if not usable or not _kernel_order_reproduced(tuple(layer.output_size), float(layer.spatial_scale),
                                                      int(layer.sampling_ratio), bool(layer.aligned),
                                                      feat.dtype):
            return self(feats, rois)
        return roi_align_from_points(key_maps.points[0], rois, key_maps.height, key_maps.width,
                                     tuple(layer.output_size), float(layer.spatial_scale),
                                     int(layer.sampling_ratio), bool(layer.aligned))

    def aggregate_clips(self, roi_feats: Tensor, roi_clip_inds: Tensor,
                        clip_maps: Sequence[Sequence[ReferenceMaps]]) -> Tensor:
        """TRoI aggregation of RoIs from several clips, each against its own clip's reference maps.

        Args:
            roi_feats: Tensor[n, C, 7, 7], plain RoIAlign features of the key RoIs.
            roi_clip_inds: Tensor[n], the clip index of each RoI (column 0 of ``rois``).
            clip_maps: for each of the N clips, its prepared reference map stacks.

        Returns:
            Tensor[n, C, 7, 7] in the row order (and of the dtype) of ``roi_feats``.
        """
        clip_inds = roi_clip_inds.long()
        num_clips = len(clip_maps)
        if clip_inds.numel() and (int(clip_inds.min()) < 0 or int(clip_inds.max()) >= num_clips):
            raise ValueError(f'TemporalRoIAlign: RoI batch indices must lie in [0, {num_clips}) for '
                             f'{num_clips} reference clips, got {int(clip_inds.min())}..'
                             f'{int(clip_inds.max())}')
        if num_clips == 1:
            return self.aggregate(roi_feats, clip_maps[0])
        out = torch.zeros_like(roi_feats)
        for i, maps in enumerate(clip_maps):
            idx = torch.nonzero(clip_inds == i, as_tuple=False).squeeze(1)
            if idx.numel() == 0:
                continue
            out = out.index_copy(0, idx, self.aggregate(roi_feats[idx], maps))
        return out

    def aggregate(self, roi_feats: Tensor, ref_maps: Sequence[ReferenceMaps], rois: Tensor | None = None,
                  key_maps: ReferenceMaps | None = None) -> Tensor:
        """TRoI aggregation of one clip's key RoIs against its reference maps (SPEC 2.4).

        Computed in float32 with autocast off for half-precision ``roi_feats``; returned in their dtype.

        With ``rois`` and ``key_maps`` (the prepared map the RoIs were aligned from) and an
        average-pooling RoIAlign with a fixed ``sampling_ratio``, the search runs position-first
        (:meth:`_search_by_positions`): RoIAlign is linear in the map, so the similarity of a RoI point
        with a reference position is the RoIAlign combination of the similarities of the key map's
        positions; and with ``key_maps.embed_taps`` the key RoIs' embed conv is gathered from the key
        map's taps. Where every stack has ``embed_taps`` too, the attention logits are computed one map
        at a time over all RoIs (:meth:`_logits_by_maps`) and the attended output summed as bags
        (:meth:`_attend_by_bags`). Same results up to the order of float sums; without them, the RoI
        points are searched directly (the published computation).

        Args:
            roi_feats: Tensor[n, C, 7, 7], plain RoIAlign features R of the key RoIs.
            ref_maps: prepared map stacks, taken in order as the K reference frames (for a cached video:
                the cached maps, then the key frame's own map). The most-similar features of stacks
                with ``embed_taps`` are embedded by gathering taps, the others by the conv.
            rois: Tensor[n, 5], the key RoIs ``roi_feats`` were aligned from (image pixels).
            key_maps: a one-map :class:`ReferenceMaps` of the key map those RoIs lie in.

        Returns:
            Tensor[n, C, 7, 7], of the dtype of ``roi_feats``.
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
        out_dtype = roi_feats.dtype
        dtype = _compute_dtype(out_dtype)
        with _full_precision(roi_feats.device):
            roi_feats = roi_feats.to(dtype)
            ref_maps = [_maps_as(m, dtype) for m in ref_maps]
            # the largest similarity block of one stack (all its maps at once) bounds the RoI chunk
            positions = max(m.num_maps * m.height * m.width for m in ref_maps)
            chunk = max(1, self.chunk_elements(roi_feats.device) // (roi_h * roi_w * positions))
            found = taps = None
            key_points = self._to_points(roi_feats)  # (n*49, C), laid out once for every step below
            if rois is not None and key_maps is not None and self._roi_layer_is_linear():
                key_maps = _maps_as(key_maps, dtype)
                taps = self._roi_taps(rois, key_maps, dtype)  # (n, 7, 7, T) twice
                found = self._search_by_positions(roi_feats, taps, key_maps, ref_maps, key_points=key_points)
            logits = None
            if (found is not None and key_maps.embed_taps is not None and self.num_temporal_attention_blocks > 0
                    and all(m.embed_taps is not None for m in ref_maps)):
                logits = self._logits_by_maps(roi_feats.shape, found, ref_maps, key_maps.embed_taps, taps)
            outs = []
            for start in range(0, n, chunk):
                part = slice(start, start + chunk)
                point_part = slice(start * roi_h * roi_w, (start + chunk) * roi_h * roi_w)
                outs.append(self._aggregate_chunk(
                    roi_feats[part], key_points[point_part], ref_maps,
                    found=None if found is None else [(v[:, point_part], i[:, point_part]) for v, i in found],
                    key_embed=None if taps is None or key_maps.embed_taps is None else
                    (key_maps.embed_taps, taps[0][part], taps[1][part]),
                    logits=None if logits is None else [x[:, point_part] for x in logits]))
            out = torch.cat(outs) if len(outs) > 1 else outs[0]
        return out.to(out_dtype)

    def chunk_elements(self, device: torch.device | str) -> int:
        """The most similarity entries materialised at once on ``device``.

        ``similarity_chunk_elements`` when it was given; else the device's default
        (:func:`default_chunk_elements`).
        """
        if self.similarity_chunk_elements is not None:
            return self.similarity_chunk_elements
        return default_chunk_elements(device)

    # ------------------------------------------------------------------ internals
    def _roi_layer_is_linear(self) -> bool:
        """Whether the RoI layer is mmcv's average-pooling RoIAlign with a fixed sampling ratio, whose
        taps :func:`roi_align_taps` reproduces (adaptive sampling and max pooling are searched directly)."""
        layer = self.roi_layers[0]
        return (type(layer).__name__ == 'RoIAlign' and getattr(layer, 'pool_mode', None) == 'avg'
                and not getattr(layer, 'use_torchvision', False)
                and int(getattr(layer, 'sampling_ratio', 0)) > 0)

    def _roi_taps(self, rois: Tensor, key_maps: ReferenceMaps, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The RoIAlign taps of ``rois`` on the key map: index and weight Tensor[n, 7, 7, T] (T = 16 for
        sampling ratio 2), weights in ``dtype``."""
        layer = self.roi_layers[0]
        index, weight = roi_align_taps(rois, key_maps.height, key_maps.width, tuple(layer.output_size),
                                       float(layer.spatial_scale), int(layer.sampling_ratio),
                                       bool(layer.aligned))
        return index, weight.to(dtype)

    def _search_by_positions(self, roi_feats: Tensor, taps: tuple[Tensor, Tensor], key_maps: ReferenceMaps,
                             ref_maps: Sequence[ReferenceMaps],
                             key_points: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """The most-similar search of all key RoI points, computed on the key map's positions first.

        A RoI point is ``R_p = sum_t w_t F_key[q_t]`` (its RoIAlign taps), so its similarity numerator
        with position r of a reference map is ``sum_t w_t <F_key[q_t], F_ref_hat[r]>``: one product of
        the U key positions the RoIs touch with each map (U x C by C x h*w; at 600x1000 with 300 RoIs
        U <= 2,394 instead of 14,700 RoI points), then a 16-tap ``embedding_bag`` of its rows per
        point, one grouped top-k per map (:func:`_topk_by_groups`), and the division by
        ``||R_p|| + epsilon`` on the top values only (it does not change their order). On a CPU each
        map's table is built and read in column tiles (:meth:`_search_stack_by_tiles`,
        ``CPU_TABLE_TILE``); elsewhere, or with ``CPU_TABLE_TILE = 0``, maps are taken a block at a time
        (:meth:`_search_stack_by_blocks`: as many whole maps as fit the bound, at least one: at 608x1008
        one map's table, 2,394 x 2,432, is larger than the CPU bound) and points a block at a time so that a similarity
        block stays within the bound (on a CPU ``CPU_POSITION_BLOCK_ELEMENTS``, measured; see
        benchmarks/README.md). Pairs whose last kept value is within rounding of the next one are
        searched again directly (:meth:`_resolve_near_ties`).

        Args:
            roi_feats: Tensor[n, C, 7, 7], the RoIAlign features of the key RoIs (for their norms).
            taps: index and weight Tensor[n, 7, 7, T] of the RoIs on ``key_maps``.
            key_maps: the key map, one-map :class:`ReferenceMaps`.
            ref_maps: the stacks searched.
            key_points: ``roi_feats`` as points, Tensor[n*49, C] in (roi, y, x) order, when the caller
                has it laid out already.

        Returns:
            per stack, values and positions Tensor[K, n*49, top] of the most similar positions.
        """
        n, channels, roi_h, roi_w = roi_feats.shape
        points = n * roi_h * roi_w
        top = self.num_most_similar_points
        device, dtype = roi_feats.device, roi_feats.dtype
        index, weight = (t.reshape(points, -1) for t in taps)  # (n*49, T)
        with record_function('troi.similarity'):
            # only the key positions some RoI touches: rows of the tables
            used, local = torch.unique(index, return_inverse=True)
            key_rows = key_maps.points[0].index_select(0, used)  # (U, C)
            if key_points is None:
                key_points = self._to_points(roi_feats)
            inv_norm, unit = self._rounding_unit(key_points, index, weight, key_maps)
            factor = NEAR_TIE_FACTOR if device.type == 'cpu' else UNMEASURED_NEAR_TIE_FACTOR
            tol = factor * unit
            # a point's taps on the same key position as one tap (small RoIs' samples share positions)
            local, weight = _merge_taps(local, weight)
        tile = CPU_TABLE_TILE if device.type == 'cpu' else 0
        if tile and _bags_are_elementwise(device.type, dtype, tile):
            search = functools.partial(self._search_stack_by_tiles, tile=tile)
        else:
            search = self._search_stack_by_blocks
        counts = dict(pairs=points * sum(m.num_maps for m in ref_maps), near_ties=0)
        found = []
        for maps in ref_maps:
            values, rows, near = search(key_rows, maps, local, weight, inv_norm, tol, top)
            counts['near_ties'] += self._resolve_near_ties(key_points, maps, near, values, rows)
            found.append((values, rows))
        self.last_search = counts
        return found

    @staticmethod
    def _kept_and_near(v: Tensor, i: Tensor, inv_norm: Tensor, tol: Tensor, top: int,
                       positions: int) -> tuple[Tensor, Tensor, Tensor]:
        """The top ``top`` of a search's unscaled values and positions Tensor[..., p, kept], scaled by
        ``inv_norm`` Tensor[p], and which pairs to search again (Tensor[..., p] bool): those that kept a
        pad column (only where all of a point's tap weights, and so its similarities, are zero) and
        those whose last kept value is within ``tol`` Tensor[p] of the next one."""
        v = v * inv_norm[:, None]
        again = (i >= positions).any(dim=-1)
        if v.size(-1) > top:
            again |= v[..., top - 1] - v[..., top] <= tol
        return v[..., :top], i[..., :top], again

    def _search_stack_by_tiles(self, key_rows: Tensor, maps: ReferenceMaps, local: Tensor, weight: Tensor,
                               inv_norm: Tensor, tol: Tensor, top: int,
                               tile: int) -> tuple[Tensor, Tensor, Tensor]:
        """The position-first search of all points against a stack, each map's table built and read a
        column tile at a time (see ``CPU_TABLE_TILE``): :func:`_table_tiles`, then :func:`_top_of_tiles`.

        Args:
            key_rows: Tensor[U, C], the key positions the points' taps touch.
            maps: the stack searched, K maps.
            local, weight: Tensor[n*49, T], the points' taps as rows of ``key_rows`` and their weights.
            inv_norm, tol: Tensor[n*49], ``1 / (||R_p|| + epsilon)`` and the near-tie tolerance.
            top: how many positions to keep.
            tile: columns per tile, a multiple of ``TOPK_GROUP``.

        Returns:
            values and positions Tensor[K, n*49, top], and the pairs to search again Tensor[K, n*49].
        """
        positions = maps.height * maps.width
        # one more than the top, to see whether the last one kept is a near tie
        kept = min(top + 1, positions)
        points, device = local.size(0), key_rows.device
        values = key_rows.new_empty(maps.num_maps, points, top)
        rows = torch.empty(maps.num_maps, points, top, dtype=torch.long, device=device)
        near = torch.empty(maps.num_maps, points, dtype=torch.bool, device=device)
        for k in range(maps.num_maps):
            with record_function('troi.similarity'):
                table = _table_tiles(key_rows, maps.normed[k], tile)
            v, i = _top_of_tiles(table, local, weight, kept)
            values[k], rows[k], near[k] = self._kept_and_near(v, i, inv_norm, tol, top, positions)
        return values, rows, near

    def _search_stack_by_blocks(self, key_rows: Tensor, maps: ReferenceMaps, local: Tensor, weight: Tensor,
                                inv_norm: Tensor, tol: Tensor, top: int) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`_search_stack_by_tiles` on whole-width tables: as many whole maps as fit the bound (at
        least one) and points a block at a time, so that a similarity block stays within the bound (on
        a CPU ``CPU_POSITION_BLOCK_ELEMENTS``); the grouped top-k on each block."""
        channels, points = key_rows.size(1), local.size(0)
        device, dtype = key_rows.device, key_rows.dtype
        num_maps, positions = maps.num_maps, maps.height * maps.width
        bound = self.chunk_elements(device)
        if device.type == 'cpu':
            bound = min(bound, CPU_POSITION_BLOCK_ELEMENTS)
        # the table's columns per map: the positions, then pad columns up to whole top-k groups
        width = -(-positions // TOPK_GROUP) * TOPK_GROUP
        values = key_rows.new_empty(num_maps, points, top)
        rows = torch.empty(num_maps, points, top, dtype=torch.long, device=device)
        near = torch.zeros(num_maps, points, dtype=torch.bool, device=device)
        # one more than the top, to see whether the last one kept is a near tie
        kept = min(top + 1, positions)
        maps_per_block = max(1, min(num_maps, bound // max(1, key_rows.size(0) * width)))
        for k0 in range(0, num_maps, maps_per_block):
            k1 = min(num_maps, k0 + maps_per_block)
            kb = k1 - k0
            with record_function('troi.similarity'):
                normed = maps.normed[k0:k1]  # (kb, C, h*w)
                if width > positions:
                    normed = F.pad(normed, (0, width - positions))
                normed = normed.permute(1, 0, 2).reshape(channels, kb * width)
                table = key_rows.mm(normed).view(-1, kb, width)  # (U, kb, width)
                # pad columns never win: a very negative similarity (the tap weights are >= 0 and
                # sum to at most 1, so a point's pad value stays finite)
                table[:, :, positions:] = torch.finfo(dtype).min / 4
                table = table.view(-1, kb * width)
            chunk = max(1, bound // table.size(1))
            for p0 in range(0, points, chunk):
                p1 = min(points, p0 + chunk)
                with record_function('troi.similarity'):
                    sim = F.embedding_bag(local[p0:p1], table, per_sample_weights=weight[p0:p1],
                                          mode='sum')  # (p, kb*width)
                with record_function('troi.topk'):
                    v, i = _topk_by_groups(sim.view(p1 - p0, kb, width), kept)  # (p, kb, kept)
                    values[k0:k1, p0:p1], rows[k0:k1, p0:p1], near[k0:k1, p0:p1] = self._kept_and_near(
                        v.transpose(0, 1), i.transpose(0, 1), inv_norm[p0:p1], tol[p0:p1], top, positions)
            del table
        return values, rows, near

    def _rounding_unit(self, key_points: Tensor, index: Tensor, weight: Tensor,
                       key_maps: ReferenceMaps) -> tuple[Tensor, Tensor]:
        """How far a position-first cosine may round away from the direct one, per RoI point.

        Each C-term dot product rounds to about sqrt(C) eps of its size, and the position-first one sums
        ``spread = sum_t w_t ||F_key[q_t]|| / ||R_p||`` of them before dividing by ``||R_p||``: the unit
        is ``sqrt(C) eps (1 + spread)`` (``NEAR_TIE_FACTOR`` counts in it).

        Args:
            key_points: Tensor[n*49, C], the key RoI features R as points (:meth:`_to_points`).
            index, weight: Tensor[n*49, T], the points' RoIAlign taps on ``key_maps``.
            key_maps: the key map, one-map :class:`ReferenceMaps`.

        Returns:
            ``1 / (||R_p|| + epsilon)`` and the unit, Tensor[n*49] each.
        """
        inv_norm = 1.0 / (key_points.norm(p=2, dim=1) + self.epsilon)
        spread = (weight * key_maps.points[0].norm(p=2, dim=1)[index]).sum(dim=1) * inv_norm
        unit = math.sqrt(key_points.size(1)) * torch.finfo(key_points.dtype).eps * (1 + spread)
        return inv_norm, unit

    def _resolve_near_ties(self, key_points: Tensor, maps: ReferenceMaps, near: Tensor, values: Tensor,
                           rows: Tensor) -> int:
        """Search the (map, point) pairs whose last kept similarity is within rounding of the next one
        again, directly on the RoI point (the published computation), and overwrite their top values and
        positions in place: there the order of float sums decides which position is kept, and the
        position-first sums must not decide it differently.

        The direct search is a matrix product of the pairs' RoI points with the whole map, as the
        published search is (there a batched product over a chunk of points). On this CPU the two
        products were measured to keep the same positions (benchmarks/troi_rounding.py: 4 of 220,500
        pairs differ from a one-map product of all points, at ties below the products' own rounding);
        dot products of the candidate positions alone round differently, and flipped the kept position
        of 1 in 1,764 pairs of a test against the published search.

        Args:
            key_points: Tensor[n*49, C], the key RoI features as points (:meth:`_to_points`).
            maps: the stack searched, K maps.
            near: Tensor[K, n*49] bool, the pairs to search again.
            values, rows: Tensor[K, n*49, top], the search's result, updated in place.

        Returns:
            the number of pairs searched again.
        """
        pairs = near.nonzero(as_tuple=False)  # (m, 2): map, point
        if pairs.numel() == 0:
            return 0
        with record_function('troi.near_ties'):
            for k in pairs[:, 0].unique().tolist():
                pts = pairs[pairs[:, 0] == k, 1]
                chosen = key_points.index_select(0, pts)  # (m_k, C)
                key_hat = chosen / (chosen.norm(p=2, dim=1, keepdim=True) + self.epsilon)
                v, i = key_hat.mm(maps.normed[k]).topk(self.num_most_similar_points, dim=1)
                values[k].index_copy_(0, pts, v)
                rows[k].index_copy_(0, pts, i)
        return int(pairs.size(0))

    def _logits_by_maps(self, shape: torch.Size, found: Sequence[tuple[Tensor, Tensor]],
                        ref_maps: Sequence[ReferenceMaps], key_taps: Tensor,
                        taps: tuple[Tensor, Tensor]) -> list[Tensor]:
        """The attention logits of every frame, ``<E_k, E_0>`` per block of channels, one map at a time.

        The embeds are gathered from the maps' ``embed_taps`` as in :meth:`_aggregate_chunk`, but all
        points read one map's taps (44 MB at 608x1008) before the next map's, instead of each chunk of
        RoIs reading every map's (617 MB for 14 maps). Points go ``CPU_EMBED_BLOCK_POINTS`` at a time on
        a CPU, all at once elsewhere. Each map's logits come from :meth:`_logits_from_taps`: the compiled
        kernel where it applies (the same bags, the dot products summed in another order), else the
        torch ops of :meth:`_aggregate_chunk` (the same bits).

        Args:
            shape: (n, C, 7, 7), the key RoI features' shape.
            found: per stack, the search's values and positions Tensor[K, n*49, top].
            ref_maps: the stacks, each with ``embed_taps``.
            key_taps: ``embed_taps`` of the key map, Tensor[1, h*w, 9*C].
            taps: RoIAlign taps index and weight Tensor[n, 7, 7, T] of the RoIs on the key map.

        Returns:
            [Tensor[1, n*49, B] of the key, then Tensor[K, n*49, B] per stack], B blocks of C/B channels.
        """
        n, channels, roi_h, roi_w = shape
        points = n * roi_h * roi_w
        blocks = self.num_temporal_attention_blocks
        block_size = channels // blocks
        tap_idx, tap_weights = taps
        with record_function('troi.embed'):
            key_e = self._embed_from_taps(key_taps.view(-1, 9 * channels), tap_idx, tap_weights)  # (n*49, C)
            key_blocks = key_e.view(points, blocks, block_size)
            out = [(key_blocks * key_blocks).sum(dim=2)[None]]
        rois = n if key_e.device.type != 'cpu' else max(1, CPU_EMBED_BLOCK_POINTS // (roi_h * roi_w))
        for (values, idx), maps in zip(found, ref_maps):
            with record_function('troi.embed'):
                weights = values.softmax(dim=2)  # (K, n*49, top), as in _aggregate_chunk
                top = idx.size(2)
                logits = key_e.new_empty(maps.num_maps, points, blocks)
                map_taps = maps.embed_taps.view(maps.num_maps, -1, 9 * channels)
                for k in range(maps.num_maps):
                    for r0 in range(0, n, rois):
                        r1 = min(n, r0 + rois)
                        p0, p1 = r0 * roi_h * roi_w, r1 * roi_h * roi_w
                        logits[k, p0:p1] = self._logits_from_taps(
                            map_taps[k], idx[k, p0:p1].view(r1 - r0, roi_h, roi_w, top),
                            weights[k, p0:p1].view(r1 - r0, roi_h, roi_w, top), key_e[p0:p1])
            out.append(logits)
        return out

    def _aggregate_chunk(self, roi_feats: Tensor, key_points: Tensor, ref_maps: Sequence[ReferenceMaps],
                         found: Sequence[tuple[Tensor, Tensor]] | None = None,
                         key_embed: tuple[Tensor, Tensor, Tensor] | None = None,
                         logits: Sequence[Tensor] | None = None) -> Tensor:
        """:meth:`aggregate` for a chunk of RoIs whose similarity block against each stack fits the bound.

        Works on RoI points, ``key_points`` Tensor[n*7*7, C] (``roi_feats`` in (roi, y, x) order, laid out
        by :meth:`aggregate`), and returns to Tensor[n, C, 7, 7].
        Each stack of K maps is searched at once: one batched product (K, n*49, h*w), one top-k over its
        last axis, one gather of the most-similar features and one gather (or conv) of their embeds.

        Args:
            found: the search already done (:meth:`_search_by_positions`): per stack, the top values and
                positions, Tensor[K, n*49, top] each, of this chunk's points.
            key_embed: (embed_taps Tensor[1, h*w, 9*C] of the key map, RoIAlign taps index and weight
                Tensor[n, 7, 7, T] of this chunk's RoIs): the key RoIs' embed is gathered from the key
                map's taps instead of convolved.
            logits: the attention logits already computed (:meth:`_logits_by_maps`), this chunk's
                points of each: [Tensor[1, n*49, B] of the key, then Tensor[K, n*49, B] per stack], with
                ``found``; then the attention runs by :meth:`_attend_by_bags` and ``key_embed`` is not
                used.
        """
        n, channels, roi_h, roi_w = roi_feats.shape
        points = n * roi_h * roi_w
        blocks = self.num_temporal_attention_blocks
        if logits is not None and blocks > 0:
            return self._attend_by_bags(roi_feats.shape, key_points, ref_maps, found, logits)
        block_size = channels // max(blocks, 1)
        if found is None:
            key_hat = key_points / (key_points.norm(p=2, dim=1, keepdim=True) + self.epsilon)
        frames = [key_points[None]]  # tensors (K_s, n*49, C): the key, then each stack's most-similar
        # per frame block b, <E_k, E_0> over its C/B channels: tensors (K_s, n*49, B) in frame order
        # (the frames' embeds E_k are not kept: each is used once, against the key's E_0)
        logits = []
        if blocks > 0:
            with record_function('troi.embed'):
                if key_embed is None:
                    key_e = self._to_points(self._embed_conv(roi_feats))
                else:
                    key_taps, tap_idx, tap_weights = key_embed
                    key_e = self._embed_from_taps(key_taps.view(-1, 9 * channels), tap_idx, tap_weights)
                key_e = key_e.view(points, blocks, block_size)  # (n*49, B, C/B)
                logits.append((key_e * key_e).sum(dim=2)[None])
        for s, maps in enumerate(ref_maps):
            num_maps, positions = maps.num_maps, maps.height * maps.width
            if found is not None:
                values, idx = found[s]
            else:
                with record_function('troi.similarity'):
                    # (K, n*49, h*w): the cosine similarity of every RoI point with every map position
                    sim = torch.matmul(key_hat, maps.normed)
                with record_function('troi.topk'):
                    values, idx = sim.topk(self.num_most_similar_points, dim=2)  # (K, n*49, top)
                del sim
            with record_function('troi.gather'):
                weights = values.softmax(dim=2)  # (K, n*49, top)
                # rows of the K maps stacked: position q of map k is row k*h*w + q
                offsets = torch.arange(num_maps, device=idx.device).mul_(positions).view(-1, 1, 1)
                rows = (idx + offsets).view(-1, idx.size(2))
                # weighted sum of the raw features at the top positions: (K, n*49, C)
                most_similar = F.embedding_bag(rows, maps.points.view(-1, channels),
                                               per_sample_weights=weights.reshape(rows.shape),
                                               mode='sum').view(num_maps, points, channels)
            frames.append(most_similar)
            if blocks == 0:
                continue
            with record_function('troi.embed'):
                if maps.embed_taps is None:
                    ms_maps = most_similar.view(num_maps * n, roi_h, roi_w, channels).permute(0, 3, 1, 2)
                    embed = self._to_points(self._embed_conv(ms_maps))
                else:
                    embed = self._embed_from_taps(maps.embed_taps.view(-1, 9 * channels),
                                                  rows.view(num_maps * n, roi_h, roi_w, -1),
                                                  weights.view(num_maps * n, roi_h, roi_w, -1))
                # (K, n*49, B): the embed is not used again, so the products overwrite it
                logits.append(embed.view(num_maps, points, blocks, block_size).mul_(key_e).sum(dim=3))
        with record_function('troi.attention'):
            if blocks == 0:
                out = torch.cat(frames).mean(dim=0)  # (n*49, C)
            else:
                # softmax over the K+1 frames (the key included) of the scaled dot products
                alpha = (torch.cat(logits) / math.sqrt(block_size)).softmax(dim=0).unsqueeze(3)
                # sum_k alpha_k * X_k accumulated frame by frame, from each stack's tensor in place
                # (no copy of the K+1 frames into one tensor; one (n*49, B, C/B) buffer stays in cache;
                # measured faster than one broadcast product and sum over the frames)
                frame_views = [f[j].view(points, blocks, block_size) for f in frames for j in range(f.size(0))]
                out = frame_views[0] * alpha[0]
                for k in range(1, len(frame_views)):
                    out = torch.addcmul(out, frame_views[k], alpha[k])
        return out.reshape(n, roi_h, roi_w, channels).permute(0, 3, 1, 2).contiguous()

    def _attend_by_bags(self, shape: torch.Size, key_points: Tensor, ref_maps: Sequence[ReferenceMaps],
                        found: Sequence[tuple[Tensor, Tensor]], logits: Sequence[Tensor]) -> Tensor:
        """The temporal attention of a chunk of RoIs from its logits, without the most-similar features.

        The output ``sum_k alpha_k X_k`` over the frames, with ``X_k = sum_j w_kj F_k[q_kj]`` for the
        maps, is ``alpha_0 R + sum_(k, j) (alpha_k w_kj) F_k[q_kj]``: per stack one ``embedding_bag``
        over the stack's raw points seen as rows of C/B channels (row ``((k*h*w + q) * B + b``), one bag
        per (point, block) of its K * top entries. The published order (:meth:`_aggregate_chunk`: each
        most-similar feature, then the frames added one at a time) sums the same products in another
        order: the results differ by float rounding (3e-7 of a largest value of 1 on random maps).

        Args:
            shape: (n, C, 7, 7) of the chunk's key RoI features.
            key_points: Tensor[n*49, C], the key RoI features R as points.
            ref_maps: the stacks; found: per stack, the top values and positions Tensor[K, n*49, top].
            logits: [Tensor[1, n*49, B] of the key, then Tensor[K, n*49, B] per stack].

        Returns:
            Tensor[n, C, 7, 7].
        """
        n, channels, roi_h, roi_w = shape
        points = n * roi_h * roi_w
        blocks = self.num_temporal_attention_blocks
        block_size = channels // blocks
        with record_function('troi.attention'):
            # softmax over the K+1 frames (the key included) of the scaled dot products: (K+1, n*49, B)
            alpha = (torch.cat(logits) / math.sqrt(block_size)).softmax(dim=0)
            out = key_points.view(points, blocks, block_size) * alpha[0].unsqueeze(2)
        block_ids = torch.arange(blocks, device=key_points.device)
        first = 1
        for (values, idx), maps in zip(found, ref_maps):
            num_maps, positions, top = maps.num_maps, maps.height * maps.width, idx.size(2)
            with record_function('troi.gather'):
                frame_alpha = alpha[first:first + num_maps]  # (K, n*49, B)
                first += num_maps
                weights = values.softmax(dim=2)  # (K, n*49, top)
                offsets = torch.arange(num_maps, device=idx.device).mul_(positions).view(-1, 1, 1)
                # bag (point, block): rows of C/B channels of its K * top most-similar positions
                rows = ((idx + offsets).unsqueeze(3) * blocks + block_ids).permute(1, 3, 0, 2)
                products = (weights.unsqueeze(3) * frame_alpha.unsqueeze(2)).permute(1, 3, 0, 2)
                out.add_(F.embedding_bag(rows.reshape(points * blocks, -1),
                                         maps.points.reshape(-1, block_size),
                                         per_sample_weights=products.reshape(points * blocks, -1),
                                         mode='sum').view(points, blocks, block_size))
        return out.reshape(n, roi_h, roi_w, channels).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def _to_points(maps: Tensor) -> Tensor:
        """Tensor[n, C, 7, 7] -> Tensor[n*7*7, C] in (roi, y, x) order."""
        return maps.permute(0, 2, 3, 1).reshape(-1, maps.size(1))

    def _embed_conv(self, maps: Tensor) -> Tensor:
        """The embed network (a 3x3 conv, padding 1) on Tensor[n, C, 7, 7], with its weights in the
        dtype of ``maps``."""
        conv = self.embed_network.conv
        bias = None if conv.bias is None else conv.bias.to(maps.dtype)
        return F.conv2d(maps, conv.weight.to(maps.dtype), bias, conv.stride, conv.padding, conv.dilation)

    def _tap_products(self, flat: Tensor) -> Tensor:
        """Tensor[K, C, P] maps -> Tensor[K, P, 9*C], entry (k, p, t*C + o) = sum_c W[o, c, t // 3, t % 3]
        F_k[c, p]: one product a map, written position-major in place (no transposed copy)."""
        weight = self.embed_network.conv.weight.to(flat.dtype)  # (C_out, C_in, 3, 3)
        taps_weight = weight.permute(2, 3, 0, 1).reshape(-1, weight.size(1))  # (9*C_out, C_in)
        out = flat.new_empty(flat.size(0), flat.size(2), taps_weight.size(0))
        for k in range(flat.size(0)):
            torch.mm(flat[k].t(), taps_weight.t(), out=out[k])
        return out

    def _embed_from_taps(self, taps: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
        """The embed conv of most-similar features, gathered from precomputed taps.

        A most-similar point is sum_j w_j F[:, q_j], so tap t of the conv applied to it is
        sum_j w_j taps[q_j, t]; output point (y, x) sums tap (dy, dx) of source point
        (y + dy - 1, x + dx - 1), none outside the RoI grid (the conv's zero padding), plus the bias.

        Args:
            taps: Tensor[P, 9*C], ``embed_taps`` of one map (P = h*w) or of a stack of maps with their
                positions stacked (P = K*h*w).
            idx: Tensor[n, 7, 7, top] long, the most-similar rows of ``taps`` of each RoI point.
            weights: Tensor[n, 7, 7, top], their softmax weights.

        Returns:
            Tensor[n*7*7, C] in (roi, y, x) order, equal to ``embed_network`` of the most-similar
            features.
        """
        channels = taps.size(1) // 9
        rows = taps.view(-1, channels)  # (P*9, C), row 9*position + t
        bag_idx, bag_weights, offsets = _embed_bags(idx, weights)
        out = F.embedding_bag(bag_idx, rows, offsets=offsets, per_sample_weights=bag_weights,
                              mode='sum')  # (n*49, C)
        bias = self.embed_network.conv.bias
        return out if bias is None else out.add_(bias.to(out.dtype))

    def _logits_from_taps(self, taps: Tensor, idx: Tensor, weights: Tensor, key_e: Tensor) -> Tensor:
        """The attention logits ``<E, E_0>`` per block of the embed of most-similar features
        (:meth:`_embed_from_taps`) against the key's embed ``key_e`` Tensor[n*49, C]: Tensor[n*49, B].

        On a CPU with the compiled kernel (:func:`clab.models.native.bag_logits`: float32, blocks of a
        multiple of 16 channels, no gradient) the embeds are never written; else torch ops.
        """
        channels = taps.size(1) // 9
        rows = taps.view(-1, channels)
        bag_idx, bag_weights, offsets = _embed_bags(idx, weights)
        bias = self.embed_network.conv.bias
        bias = None if bias is None else bias.to(rows.dtype)
        blocks = self.num_temporal_attention_blocks
        kernel = None
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (rows, bag_weights, key_e, bias))  # the kernel has no backward
        if (CPU_NATIVE_SEARCH and rows.device.type == 'cpu' and rows.dtype == torch.float32
                and (channels // blocks) % 16 == 0 and not needs_grad):
            kernel = native.bag_logits()
        if kernel is not None:
            return kernel(rows, bag_idx, bag_weights, offsets, bias, key_e, blocks)
        return native.bag_logits_by_ops(rows, bag_idx, bag_weights, offsets, bias, key_e, blocks)


def _embed_bags(idx: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The bags of embed-tap rows of :meth:`TemporalRoIAlign._embed_from_taps`: one per output point (roi, y,
    x), its taps inside the RoI grid, each with the top most-similar rows.

    Args:
        idx, weights: Tensor[n, 7, 7, top], the most-similar rows (positions) and their weights.

    Returns:
        rows ``9 * position + tap`` and weights Tensor[E], and each bag's first entry Tensor[n*49].
    """
    n, roi_h, roi_w, top = idx.shape
    device = idx.device
    source, tap, starts = _conv_taps_in_grid(roi_h, roi_w, device)
    bag_idx = (idx.reshape(n, -1, top).index_select(1, source) * 9 + tap[:, None]).view(-1)
    bag_weights = weights.reshape(n, -1, top).index_select(1, source).view(-1)
    offsets = ((torch.arange(n, device=device)[:, None] * source.numel() + starts) * top).view(-1)
    return bag_idx, bag_weights, offsets


@functools.lru_cache(maxsize=16)
def _conv_taps_in_grid(roi_h: int, roi_w: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The taps of a 3x3 conv (padding 1) on a roi_h x roi_w grid that fall inside the grid.

    Source point (y + dy - 1, x + dx - 1) of output point (y, x) and tap t = 3*dy + dx, in (y, x, t)
    order, keeping only the V sources inside the grid (the zero padding adds nothing; V = 361 of 441 for
    7x7). Cached per grid and device: the layout is fixed, and building it on a GPU would wait on the
    device for the boolean mask.

    Returns:
        source (long, Tensor[V], y*roi_w + x), tap (long, Tensor[V]) and the first of each output
        point's taps in that order (long, Tensor[roi_h*roi_w]).
    """
    dy = torch.arange(3).repeat_interleave(3)  # (9,)
    dx = torch.arange(3).repeat(3)
    sy, sx = torch.broadcast_tensors(torch.arange(roi_h)[:, None, None] + dy - 1,
                                     torch.arange(roi_w)[None, :, None] + dx - 1)
    inside = ((sy >= 0) & (sy < roi_h) & (sx >= 0) & (sx < roi_w)).reshape(-1)  # (roi_h*roi_w*9,)
    source = (sy * roi_w + sx).reshape(-1)[inside]
    tap = torch.arange(9).repeat(roi_h * roi_w)[inside]
    counts = inside.view(roi_h * roi_w, 9).sum(dim=1)  # valid taps of each output point
    starts = torch.cumsum(counts, 0) - counts
    return source.to(device), tap.to(device), starts.to(device)


@functools.lru_cache(maxsize=16)
def _kernel_order_reproduced(output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
                             aligned: bool, dtype: torch.dtype) -> bool:
    """Whether :func:`roi_align_like_kernel` is bitwise mmcv's CPU RoIAlign with these settings.

    Run once per setting on a random 8 x 13 x 17 map with 24 RoIs, border and out-of-map ones
    among them. A build whose compiler fused the kernel's multiply-adds differs in the last bits and
    keeps mmcv's kernel.
    """
    from mmcv.ops import RoIAlign
    gen = torch.Generator().manual_seed(0)
    height, width = 13, 17
    feat = torch.randn(1, 8, height, width, generator=gen, dtype=dtype)
    size = torch.tensor([width, height], dtype=dtype) / spatial_scale
    corner = (torch.rand(24, 2, generator=gen, dtype=dtype) * 1.4 - 0.2) * size
    extent = torch.rand(24, 2, generator=gen, dtype=dtype) * size * 0.8
    boxes = torch.cat([corner, corner + extent], dim=1)
    boxes[0] = torch.cat([size.new_zeros(2), size])  # the whole map
    rois = torch.cat([boxes.new_zeros(24, 1), boxes], dim=1)
    expected = RoIAlign(output_size, spatial_scale, sampling_ratio, aligned=aligned)(feat, rois)
    got = roi_align_from_points(feat[0].flatten(1).t().contiguous(), rois, height, width, output_size,
                                spatial_scale, sampling_ratio, aligned)
    return bool(torch.equal(got, expected))


def _merge_taps(index: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Each point's taps on the same row as one tap of their summed weight.

    RoIAlign's 2x2 samples of a bin smaller than a map cell share bilinear corners, so a point's 16 taps
    often name fewer rows. A bag over the merged taps is the same sum up to float rounding
    (``(w1 + w2) x`` for ``w1 x + w2 x``), at the same cost for torch's ``embedding_bag``, and the
    compiled search skips taps of weight 0, so it reads each row once.

    Args:
        index, weight: Tensor[P, T], rows and weights of each point's taps.

    Returns:
        index and weight Tensor[P, T]: per point its distinct rows in increasing order, each with the sum of
        its weights (in tap order), then slots of weight 0 on row ``index.min()`` (any row of the table).
    """
    rows, order = index.sort(dim=1, stable=True)
    weights = weight.gather(1, order)
    first = torch.ones_like(rows, dtype=torch.bool)
    first[:, 1:] = rows[:, 1:] != rows[:, :-1]
    slot = first.cumsum(dim=1).sub_(1)  # (P, T): the merged tap each tap goes to
    fill = int(index.min()) if index.numel() else 0
    merged_rows = torch.full_like(index, fill).scatter_(1, slot, rows)
    merged_weights = torch.zeros_like(weight).scatter_add_(1, slot, weights)
    return merged_rows, merged_weights


def _table_tiles(key_rows: Tensor, normed: Tensor, tile: int) -> Tensor:
    """The position-first table of one map in column tiles: Tensor[n_tiles, U, tile], entry (t, u, c) =
    ``<key_rows[u], normed[:, t * tile + c]>``; the columns past the map's P positions (the last tile's
    pad columns) hold a very negative value, as in the whole-width search. Each tile is its own matrix
    product, so its entries may round differently from one product over all columns (at the product's
    own rounding, which the near-tie search covers)."""
    if tile <= 0 or tile % TOPK_GROUP:
        raise ValueError(f'CPU_TABLE_TILE must be a positive multiple of {TOPK_GROUP}, got {tile}')
    units, positions = key_rows.size(0), normed.size(1)
    tiles = -(-positions // tile)
    table = key_rows.new_empty(tiles, units, tile)
    for t in range(tiles):
        c0, c1 = t * tile, min(positions, (t + 1) * tile)
        if c1 - c0 == tile:
            torch.mm(key_rows, normed[:, c0:c1], out=table[t])
        else:
            table[t, :, :c1 - c0] = key_rows.mm(normed[:, c0:c1])
            table[t, :, c1 - c0:] = torch.finfo(table.dtype).min / 4
    return table


def _top_of_tiles(table: Tensor, local: Tensor, weight: Tensor, kept: int) -> tuple[Tensor, Tensor]:
    """:func:`_topk_by_groups` of the points' 16-tap bags over a tiled table, without the whole-width
    similarities.

    Pass 1 sums each point's bag over one tile at a time (the tile stays in cache while every point
    reads its rows) and keeps only the maxima of its groups of ``TOPK_GROUP`` columns; pass 2 sums the
    bags again over the ``kept`` groups with the largest maxima (64-column rows of the same tiles) and
    takes the top ``kept`` among them. The bags sum each column on its own (checked by
    :func:`_bags_are_elementwise`), so pass 2's values are pass 1's, and the values and positions are
    those of the grouped top-k of the tiles laid side by side. Where it applies (:func:`_compiled_top`)
    one compiled pass does the same: each tile's bags stay in registers and update each point's running
    top; the same values bit for bit, equal values in column order (``topk`` has its own order: where
    values tie exactly inside the kept top, the positions may come in another order, and the sums over
    them round differently in the last bit).

    Args:
        table: Tensor[n_tiles, U, tile], :func:`_table_tiles`.
        local, weight: Tensor[n*49, T], the points' taps as rows of the table and their weights.
        kept: how many to keep, at most the number of columns.

    Returns:
        values and column indices, Tensor[n*49, kept] each (see :func:`clab.models.native.tile_top_by_ops`
        for the torch version's memory).
    """
    kernel = _compiled_top(table, weight)
    if kernel is not None:
        with record_function('troi.similarity'):
            return kernel(table, local, weight, kept)
    with record_function('troi.similarity'):
        maxima = native.tile_maxima_by_bags(table, local, weight, max(1, CPU_TILE_ELEMENTS // table.size(2)))
    with record_function('troi.topk'):
        return native.tile_top_by_ops(table, local, weight, maxima, kept)


def _compiled_top(table: Tensor, weight: Tensor):
    """The compiled one-pass top-k (:func:`clab.models.native.tiled_top`) where it applies:
    ``CPU_NATIVE_SEARCH`` on, a float32 CPU table of 128-column tiles, 64-column groups, no gradient asked
    through the table or the weights, and a build where it reproduces the torch ops; else None."""
    if not (CPU_NATIVE_SEARCH and table.device.type == 'cpu' and table.dtype == torch.float32
            and table.size(2) == native.TILE and TOPK_GROUP == native.GROUP):
        return None
    if torch.is_grad_enabled() and (table.requires_grad or weight.requires_grad):
        return None  # the kernel has no backward
    return native.tiled_top()


@functools.lru_cache(maxsize=8)
def _bags_are_elementwise(device_type: str, dtype: torch.dtype, tile: int) -> bool:
    """Whether ``F.embedding_bag`` (sum, per-sample weights) gives each column the same bits whatever
    the table's width: bags over ``tile``-column and ``TOPK_GROUP``-column slices of a random 40-row
    table against the same columns of bags over the whole table (16-tap bags). The tiled search
    (:meth:`TemporalRoIAlign._search_stack_by_tiles`) relies on it; without it the search keeps
    whole-width blocks."""
    gen = torch.Generator().manual_seed(0)
    width = 3 * tile
    table = torch.randn(40, width, generator=gen, dtype=dtype).to(device_type)
    index = torch.randint(0, 40, (24, 16), generator=gen).to(device_type)
    weight = torch.rand(24, 16, generator=gen, dtype=dtype).to(device_type)
    whole = F.embedding_bag(index, table, per_sample_weights=weight, mode='sum')
    for size in (tile, TOPK_GROUP):
        for c0 in range(0, width, size):
            part = table[:, c0:c0 + size].contiguous()
            got = F.embedding_bag(index, part, per_sample_weights=weight, mode='sum')
            if not torch.equal(got, whole[:, c0:c0 + size]):
                return False
    return True


def _topk_by_groups(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``x.topk(k, dim=-1)`` (values in descending order, indices along the last axis), computed on the
    k groups of ``TOPK_GROUP`` consecutive entries with the largest maxima.

    Exact: every entry larger than the k-th largest value v lies in a group whose maximum exceeds v, so
    those groups (fewer than k) are all among the k chosen, and the chosen groups' maxima supply the
    entries equal to v; the values are those of ``topk``, and so are the indices except among equal
    values.

    Args:
        x: Tensor[..., G * TOPK_GROUP].
        k: how many, at most the size of the last axis.

    Returns:
        values and indices (long), Tensor[..., k] each.
    """
    *lead, size = x.shape
    if size % TOPK_GROUP:
        raise ValueError(f'_topk_by_groups: the last axis ({size}) must hold whole groups of {TOPK_GROUP}')
    groups = size // TOPK_GROUP
    if groups <= k:
        return x.topk(k, dim=-1)
    flat = x.reshape(-1, groups, TOPK_GROUP)
    best = flat.amax(dim=2).topk(k, dim=1).indices  # (r, k) groups
    members = flat.gather(1, best[:, :, None].expand(-1, -1, TOPK_GROUP)).view(-1, k * TOPK_GROUP)
    values, index = native.top_of_members(members, best, k, TOPK_GROUP)
    return values.view(*lead, k), index.view(*lead, k)


# ---------------------------------------------------------------------- dtype and device helpers
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision dtypes (float16, bfloat16), else ``dtype`` itself (float32, float64)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _full_precision(device: torch.device | str):
    """Context that turns autocast off on ``device`` (CUDA or CPU), so fp32 operands stay fp32."""
    kind = torch.device(device).type
    if kind in ('cuda', 'cpu'):
        return torch.autocast(device_type=kind, enabled=False)
    return contextlib.nullcontext()


def _maps_as(maps: ReferenceMaps, dtype: torch.dtype) -> ReferenceMaps:
    """``maps`` itself when its tensors have ``dtype``, else a copy converted to it."""
    if maps.points.dtype == dtype:
        return maps
    taps = None if maps.embed_taps is None else maps.embed_taps.to(dtype)
    return ReferenceMaps(points=maps.points.to(dtype), normed=maps.normed.to(dtype), height=maps.height,
                         width=maps.width, embed_taps=taps)
