"""Containers for the per-video reference state that the SELSA + TRoI test path reuses (SPEC 2.7).

With ``test_with_adaptive_stride`` the 14 reference frames of a video are fixed, so everything about them
that does not depend on the current key frame is computed once per video and reused at every frame:

- :class:`ReferenceMaps`: the reference feature maps in the two layouts the most-similar search needs
  (raw features position-major for gathering, L2-normalised features channel-major for the similarity
  product) and, optionally, the nine taps of the temporal-attention embed conv applied to each map
  (``TemporalRoIAlign.prepare_reference_maps``);
- :class:`ReferenceCache`: those maps plus, for every shared fc of the SELSA box head, the references'
  key and value projections of its aggregator (``SelsaRoIHead.prepare_reference_cache``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ReferenceMaps:
    """A stack of K reference feature maps prepared for Most-Similar RoI Align (SPEC 2.4).

    Attributes:
        points: Tensor[K, h*w, C], raw features, one row per map position (row-major y, x): the
            vectors that MS-RoI-Align gathers.
        normed: Tensor[K, C, h*w], the same features divided by their L2 norm over C plus epsilon:
            the right operand of the cosine-similarity product.
        height, width: h and w of the maps.
        embed_taps: None, or Tensor[K, h*w, 9*C]: for each position, the nine 3x3 taps of the
            temporal-attention embed conv applied to its feature vector (tap t = 3*dy + dx, row
            t*C + o holds sum_c W[o, c, dy, dx] * F[c]); lets the embed conv of a most-similar RoI
            feature be gathered instead of convolved (PERFORMANCE.md).
    """

    points: Tensor
    normed: Tensor
    height: int
    width: int
    embed_taps: Tensor | None = None

    @property
    def num_maps(self) -> int:
        """K, the number of maps in the stack."""
        return self.points.size(0)

    @property
    def channels(self) -> int:
        """C, the feature channels."""
        return self.points.size(2)


@dataclass
class ReferenceCache:
    """Everything about a video's fixed reference frames that a key frame's RoI head pass reuses.

    Attributes:
        maps: the K reference maps prepared for the most-similar search (:class:`ReferenceMaps`).
        encodings: one ``(keys, values)`` pair per shared fc of the SELSA box head, each
            Tensor[m, fc_out_channels]: the aggregator's ``ref_fc_embed`` and ``ref_fc`` projections of
            the m reference RoIs' features after that fc (before its ReLU), in reference-frame order.
        num_rois: m, the number of reference RoIs over the K frames.
        rois_per_frame: the number of reference RoIs of each frame (length K).
    """

    maps: ReferenceMaps
    encodings: list[tuple[Tensor, Tensor]]
    num_rois: int
    rois_per_frame: list[int] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        """K, the number of cached reference frames."""
        return self.maps.num_maps
