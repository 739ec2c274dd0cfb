"""RoIAlign as a sparse linear map: the map positions and weights each output point is built from.

mmcv's ``RoIAlign`` (average pooling) is linear in the feature map: output point (y, x) of a RoI is
``sum_t w_t * F[:, q_t]`` over the four bilinear corners of each of its ``s x s`` sample points
(``s = sampling_ratio``), with ``w_t`` the bilinear weight divided by ``s * s``. :func:`roi_align_taps`
computes those ``4 * s * s`` taps (q_t, w_t) per output point with the kernel's own arithmetic (the
same float32 sample coordinates, the same clamping at the map border, zero weight for a sample outside
``[-1, h] x [-1, w]``), so that anything linear in the RoI features can be computed on the map's
positions first and combined afterwards: ``TemporalRoIAlign`` uses it for the most-similar search
(similarities of the key map's positions instead of the RoI points) and for the embed conv of the key
RoIs (gathered from the key map's embed taps).
"""
from __future__ import annotations

import torch
from torch import Tensor


def roi_align_taps(rois: Tensor, height: int, width: int, output_size: tuple[int, int],
                   spatial_scale: float, sampling_ratio: int, aligned: bool,
                   average: bool = True) -> tuple[Tensor, Tensor]:
    """The bilinear taps of mmcv's average-pooling RoIAlign for every output point of ``rois``.

    Args:
        rois: Tensor[n, 5], [batch index, x1, y1, x2, y2] in input-image pixels (the batch index is
            not used: the taps index one map).
        height, width: h and w of the feature map.
        output_size: (7, 7), the RoIAlign output grid.
        spatial_scale: map pixels per image pixel (1/16 for the dilated C5).
        sampling_ratio: s >= 1 sample points per bin side (adaptive sampling, s = 0, is not supported).
        aligned: mmcv's ``aligned`` (pixel-centre shift of 0.5).
        average: divide the weights by ``s * s`` (the bin average); False gives the kernel's own
            bilinear weights, which :func:`roi_align_like_kernel` sums in the kernel's order.

    Returns:
        index Tensor[n, ph, pw, 4*s*s] long, map positions y*w + x; weight Tensor[n, ph, pw, 4*s*s],
        float32 (the kernel's arithmetic) converted to the dtype of ``rois``; samples outside the map
        have weight 0 (and index 0). ``sum_t weight * F[:, index]`` equals ``RoIAlign(F)`` up to the
        order of the float sums.
    """
    if int(sampling_ratio) != sampling_ratio or sampling_ratio < 1:
        raise ValueError(f'roi_align_taps: sampling_ratio must be an integer >= 1, got {sampling_ratio!r}')
    pooled_h, pooled_w = output_size
    grid = int(sampling_ratio)
    device = rois.device
    boxes = rois[:, 1:].float()
    offset = 0.5 if aligned else 0.0
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    start_x, start_y, end_x, end_y = (boxes * scale.to(device) - offset).unbind(1)
    roi_w, roi_h = end_x - start_x, end_y - start_y
    if not aligned:  # the kernel's backward-compatible minimum size
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w  # (n,)
    sample = torch.arange(grid, device=device, dtype=torch.float32) + 0.5  # (s,)
    # sample coordinates as the kernel computes them: start + p * bin + ((i + .5) * bin) / s
    ys = (start_y[:, None, None] + torch.arange(pooled_h, device=device)[None, :, None] * bin_h[:, None, None]
          + (sample[None, None, :] * bin_h[:, None, None]) / grid)  # (n, ph, s)
    xs = (start_x[:, None, None] + torch.arange(pooled_w, device=device)[None, :, None] * bin_w[:, None, None]
          + (sample[None, None, :] * bin_w[:, None, None]) / grid)  # (n, pw, s)
    y_low, y_high, ly, y_ok = _axis_taps(ys, height)
    x_low, x_high, lx, x_ok = _axis_taps(xs, width)
    n = rois.size(0)
    # broadcast to (n, ph, pw, s_y, s_x): y terms indexed [:, :, None, :, None], x terms [:, None, :, None, :]
    def by(t):
        return t[:, :, None, :, None]

    def bx(t):
        return t[:, None, :, None, :]

    valid = (by(y_ok) & bx(x_ok)).float()
    hy, hx = 1.0 - ly, 1.0 - lx
    # corners in the kernel's order: (low, low), (low, high), (high, low), (high, high)
    weights = torch.stack([by(hy) * bx(hx), by(hy) * bx(lx), by(ly) * bx(hx), by(ly) * bx(lx)], dim=-1)
    index = torch.stack([by(y_low) * width + bx(x_low), by(y_low) * width + bx(x_high),
                         by(y_high) * width + bx(x_low), by(y_high) * width + bx(x_high)], dim=-1)
    # the average over the s*s samples (s*s is 4 for s = 2: the division is exact)
    weights = weights * valid[..., None]
    if average:
        weights = weights / float(grid * grid)
    index = index * valid[..., None].long()
    taps = 4 * grid * grid
    return (index.reshape(n, pooled_h, pooled_w, taps),
            weights.reshape(n, pooled_h, pooled_w, taps).to(rois.dtype))


def roi_align_like_kernel(points: Tensor, index: Tensor, weight: Tensor, block: int = 512) -> Tensor:
    """mmcv's CPU average-pooling RoIAlign of one map from its taps, with the kernel's float operations.

    The kernel computes, per output point and channel, each sample's ``w1*v1 + w2*v2 + w3*v3 + w4*v4``
    left to right, adds the samples to a zero in order and divides by their count. The same products,
    sums and division are done here on whole channel rows (separate multiplies and adds, no fused
    multiply-add), so the result is bitwise the kernel's when it was compiled without contraction into
    fused multiply-adds; :func:`clab.models.temporal_roi_align.TemporalRoIAlign.align_key_rois` checks
    that on the running build before using it. Vectorised over the channels and blocks of points, it
    runs on both cores, where the kernel loops over scalars on one.

    Args:
        points: Tensor[h*w, C], the map position-major (row y*w + x).
        index, weight: Tensor[P, 4*s*s], :func:`roi_align_taps` with ``average=False`` reshaped to one
            row per output point (samples in the kernel's order, four corners each).
        block: points computed at once, so that their rows stay in cache (at 608x1008 with 300 RoIs and
            512 channels: 0.072 s with 512, 0.079 s with 256, 0.084 s with 1,024 and 0.18 s with
            16,384, against 0.39 s for the kernel).

    Returns:
        Tensor[P, C], the RoIAlign output of each point.
    """
    num_points, taps = index.shape
    samples = taps // 4
    out = points.new_empty(num_points, points.size(1))
    for p0 in range(0, num_points, block):
        p1 = min(num_points, p0 + block)
        idx, w = index[p0:p1], weight[p0:p1]
        total = torch.zeros(p1 - p0, points.size(1), dtype=points.dtype, device=points.device)
        for s in range(samples):
            val = points.index_select(0, idx[:, 4 * s]).mul_(w[:, 4 * s, None])
            for c in range(4 * s + 1, 4 * s + 4):
                val.add_(points.index_select(0, idx[:, c]).mul_(w[:, c, None]))
            total.add_(val)
        out[p0:p1] = total.div_(float(max(samples, 1)))
    return out


def roi_align_from_points(points: Tensor, rois: Tensor, height: int, width: int,
                          output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
                          aligned: bool) -> Tensor:
    """mmcv's average-pooling RoIAlign of one map, from its position-major points
    (:func:`roi_align_taps` summed by :func:`roi_align_like_kernel`).

    Args:
        points: Tensor[h*w, C], the map position-major.
        rois, height, width, output_size, spatial_scale, sampling_ratio, aligned: as
            :func:`roi_align_taps` (every RoI on this map).

    Returns:
        Tensor[n, C, ph, pw], of the dtype of ``points``.
    """
    index, weight = roi_align_taps(rois, height, width, output_size, spatial_scale, sampling_ratio,
                                   aligned, average=False)
    out = roi_align_like_kernel(points, index.view(-1, index.size(-1)),
                                weight.view(-1, weight.size(-1)).to(points.dtype))
    return out.view(rois.size(0), *output_size, -1).permute(0, 3, 1, 2).contiguous()


def _axis_taps(coords: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One axis of the kernel's bilinear interpolation.

    Args:
        coords: Tensor[...] float32 sample coordinates along an axis of ``size`` map pixels.

    Returns:
        low, high (long), the fractional offset from ``low`` (float32), and whether the sample lies in
        ``[-1, size]`` (outside, the kernel adds nothing).
    """
    inside = (coords >= -1.0) & (coords <= size)
    coords = coords.clamp(min=0.0)
    low = coords.long()  # truncation, coords >= 0
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coords = torch.where(at_edge, low.to(coords.dtype), coords)
    return low, high, coords - low.to(coords.dtype), inside
