"""Geometric and photometric steps for a clip ``[key, *refs]`` (SPEC 3.6 steps 3-6), mmtracking names.

Each step wraps mmdet's single-image transform and applies it to every frame. With ``share_params`` the
random decision is taken once, on the key frame, and replayed on the references, so a whole clip gets
the same scale and the same flip:

- ``SeqResize``: mmdet ``Resize`` (mmcv rescale: new size ``int(x * s + 0.5)``, cv2 bilinear on uint8,
  ``scale_factor`` float32 [sx, sy, sx, sy], boxes scaled and clipped to the new image);
- ``SeqRandomFlip``: mmdet ``RandomFlip`` (horizontal: ``x1' = W - x2``, ``x2' = W - x1``);
- ``SeqNormalize``: mmdet ``Normalize`` (BGR -> RGB if ``to_rgb``, ``(x - mean) / std`` float32);
- ``SeqPad``: mmdet ``Pad`` (bottom/right zero padding to a multiple of ``size_divisor``, ``pad_shape``).
"""
from __future__ import annotations

from mmdet.datasets.builder import PIPELINES
from mmdet.datasets.pipelines import Normalize, Pad, RandomFlip, Resize

from .loading import _as_list


@PIPELINES.register_module()
class SeqResize(Resize):
    """mmdet ``Resize`` on every frame; with ``share_params`` the key frame's target ``scale`` is reused
    for all frames. Other arguments (``img_scale``, ``keep_ratio``, ``multiscale_mode``, ...) as mmdet."""

    def __init__(self, share_params: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.share_params = share_params

    def __call__(self, results: list[dict]) -> list[dict]:
        outs, scale = [], None
        for i, r in enumerate(_as_list(results, "SeqResize")):
            if self.share_params and i > 0:
                r["scale"] = scale
            r = super().__call__(r)
            if i == 0:
                scale = r["scale"]
            outs.append(r)
        return outs


@PIPELINES.register_module()
class SeqRandomFlip(RandomFlip):
    """mmdet ``RandomFlip`` on every frame; with ``share_params`` the key frame's draw (``flip``,
    ``flip_direction``) is applied to all frames. Arguments ``flip_ratio``, ``direction`` as mmdet."""

    def __init__(self, share_params: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.share_params = share_params

    def __call__(self, results: list[dict]) -> list[dict]:
        outs = []
        for i, r in enumerate(_as_list(results, "SeqRandomFlip")):
            if self.share_params and i > 0:
                r["flip"] = outs[0]["flip"]
                r["flip_direction"] = outs[0]["flip_direction"]
            outs.append(super().__call__(r))
        return outs


@PIPELINES.register_module()
class SeqNormalize(Normalize):
    """mmdet ``Normalize(mean, std, to_rgb)`` on every frame; adds ``img_norm_cfg``."""

    def __call__(self, results: list[dict]) -> list[dict]:
        return [super(SeqNormalize, self).__call__(r) for r in _as_list(results, "SeqNormalize")]


@PIPELINES.register_module()
class SeqPad(Pad):
    """mmdet ``Pad(size=None, size_divisor=None, pad_val=...)`` on every frame; adds ``pad_shape``."""

    def __call__(self, results: list[dict]) -> list[dict]:
        return [super(SeqPad, self).__call__(r) for r in _as_list(results, "SeqPad")]
