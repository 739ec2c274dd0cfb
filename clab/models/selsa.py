"""SELSA video detector (SELSA + Temporal RoI Align Faster R-CNN) with the optional CLAB auxiliary branch.

Implements SPEC 1.3-1.5 (the CLAB detector: a contrastive branch tapping one backbone stage during training,
generalised to N >= 1 clips per device) and SPEC 2.7 (SELSA inference over a video with reference caching).

The model wraps an mmdet ``FasterRCNN`` (``self.detector``) whose RoI head is ``SelsaRoIHead``; module and
parameter names follow mmtracking 0.14, so an mmtracking SELSA/TRoI checkpoint loads with only the
``auxiliary.*`` keys missing. ``auxiliary`` (a ``ContrastiveHead``) exists only when configured: without it
the model is exactly the TRoI baseline.

Training (``forward_train``), for N clips of one key frame and T reference frames each::

    x,  c_key = extract_feat(img)                      # x[0]: (N,C,h,w); c_key: (N,C_tap,h',w') or None
    rx, c_ref = extract_feat(ref_img.flatten(0, 1))    # rx[0]: (N*T,C,h,w), sample by sample
    rpn losses + key proposals  (train_cfg.rpn_proposal: <= 600 per key frame)
    reference proposals         (test_cfg.rpn: <= 300 per reference frame, no gradient, as published)
    roi_head.forward_train(x, rx, ...) -> loss_cls, loss_bbox, acc
    auxiliary.forward_train(c_key, c_ref) -> loss_cab, w_cab      (only with the branch)

Testing (``simple_test``, one frame at a time in video order) never runs the branch, so a CLAB model and a
TRoI model with the same detector weights give identical detections at identical cost.

Deliberate differences from the published code (README "Differences"):
* the detector runs with any N >= 1 clips per device (the published path crashes at N == 1, SPEC 0.1);
* with ``test_cfg.cache_ref_proposals=True`` (default) everything about the fixed references of a video
  that does not depend on the current frame (their proposals and the RoI head's reference cache) is
  computed once per video instead of once per frame; ``False`` gives the published per-frame path;
* at test time the backbone and neck run on a channels-last copy of the image (``test_cfg.channels_last``,
  default True; the neck output is returned to contiguous NCHW for the RoI ops): the same numbers up to the
  order of float sums, 0.75x to 0.79x the backbone time at 608x1008 on a 2-core CPU
  (benchmarks/README.md);
* at test time (eval mode, no gradient, no forward hooks on them) the backbone and neck run as copies
  with each batch norm folded into the convolution before it (``test_cfg.fold_batchnorm``, default True;
  :mod:`clab.models.folding`): the same numbers up to the rounding of the folded weights and the order of
  float sums, without the batch norms' passes over the feature maps (benchmarks/README.md);
* ``test_with_fix_stride`` keeps a window of exactly ``2 * num_left_ref_imgs + 1`` frames and refuses a
  duplicated lone reference (SPEC 1.11) instead of letting the window grow.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.distributed as dist
from mmcv.runner import BaseModule, auto_fp16
from mmdet.models.builder import MODELS, build_detector
from torch import Tensor, nn

from .folding import FoldedCopies, foldable_now

__all__ = ["SELSA"]

_TEST_CFG_KEYS = {"cache_ref_proposals": bool, "embed_taps": bool, "channels_last": bool,
                  "fold_batchnorm": bool}


@dataclass
class _VideoMemo:
    """What the detector keeps about the video it is testing.

    ``feats``: one tensor per neck level, (K, C, h, w); ``img_metas``: K dicts; ``proposals``: K tensors
    (k, 5) or None when caching is off; ``roi_cache``: the RoI head's reference cache (adaptive stride only).
    """

    mode: str                                   # 'adaptive' or 'fix'
    feats: list[Tensor]
    img_metas: list[dict]
    proposals: list[Tensor] | None = None
    roi_cache: Any = None
    frame_ids: list[int] = field(default_factory=list)  # frame ids processed so far (for error messages)
    video: Any = None                           # identity of the video (see _video_identity); None: unknown

    @property
    def last_frame_id(self) -> int:
        """The frame id tested last (-1 before the first)."""
        return self.frame_ids[-1] if self.frame_ids else -1


def _video_identity(meta: dict) -> Any:
    """What names the video of a frame: its ``video_id`` meta when the pipeline collects it, else the folder of
    its ``filename`` (ImageNet VID: one folder per video), else None (unknown, e.g. an ndarray frame)."""
    import os
    if meta.get("video_id") is not None:
        return ("video_id", meta["video_id"])
    filename = meta.get("filename")
    if isinstance(filename, str) and filename:
        return ("folder", os.path.dirname(filename))
    return None


def _stage_out_channels(backbone: nn.Module, stage: int) -> int | None:
    """Output channels of backbone stage ``stage`` (0-based) of an mmdet ResNet/ResNeXt, else None."""
    names = getattr(backbone, "res_layers", None)
    if not names or stage >= len(names):
        return None
    layer = getattr(backbone, names[stage])
    channels = None
    for m in layer.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            channels = m.num_features
    return channels


def _auxiliary_in_channels(aux: nn.Module) -> int | None:
    value = getattr(aux, "in_channels", None)
    if isinstance(value, int):
        return value
    for m in aux.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


@MODELS.register_module()
class SELSA(BaseModule):
    """SELSA + TRoI video detector; CLAB when ``auxiliary`` is given.

    Args:
        detector: mmdet config of a two-stage detector (``FasterRCNN`` with a ``SelsaRoIHead``). Its backbone
            ``out_indices`` must end with the last stage (detection uses the last output only, through the
            one-input ``ChannelMapper`` neck) and, with the branch, contain ``cab_stage``.
        auxiliary: config of the contrastive branch (``ContrastiveHead``), or None for the TRoI baseline.
        cab_stage: 0-based backbone stage the branch taps (2 = layer3 = C4 of a ResNet).
        pretrains: deprecated mmtracking form ``dict(detector='path or url')``; use ``init_cfg``.
        init_cfg: mmcv init config of the whole model.
        frozen_modules: attribute name(s) of modules to freeze (eval mode, no gradient).
        train_cfg: unused (kept for mmtracking's signature).
        test_cfg: ``dict(cache_ref_proposals=True, embed_taps=True)``: cache the fixed references'
            proposals and RoI-head state per video (False: recompute them every frame, the published path);
            ``embed_taps`` also precomputes the TRoI embed conv's taps on the cached maps (a win at R-50
            sizes, a loss on tiny maps); ``channels_last`` (default True) runs the backbone and neck on a
            channels-last image at test time (off where they hold an mmcv op, which reads contiguous NCHW
            memory, checked when the model is built; training is unchanged); ``fold_batchnorm`` (default
            True) runs the backbone and neck at test time (eval mode, no gradient, no forward hooks on
            them) as copies with each batch norm folded into the convolution before it
            (:mod:`clab.models.folding`).
    """

    def __init__(self, detector: dict, auxiliary: dict | None = None, cab_stage: int = 2,
                 pretrains: dict | None = None, init_cfg: dict | None = None,
                 frozen_modules: str | Sequence[str] | None = None, train_cfg: dict | None = None,
                 test_cfg: dict | None = None):
        super().__init__(init_cfg)
        if not isinstance(detector, dict):
            raise TypeError(f"SELSA: 'detector' must be a config dict, got {type(detector).__name__}")
        detector = detector.copy()
        if isinstance(pretrains, dict):
            warnings.warn("SELSA: 'pretrains' is deprecated, use 'init_cfg'", DeprecationWarning)
            path = pretrains.get("detector")
            detector["init_cfg"] = dict(type="Pretrained", checkpoint=path) if path else None
        elif pretrains is not None:
            raise TypeError(f"SELSA: 'pretrains' must be a dict or None, got {type(pretrains).__name__}")

        backbone_cfg = detector.get("backbone") or {}
        out_indices = tuple(backbone_cfg.get("out_indices", (3,)))
        num_stages = int(backbone_cfg.get("num_stages", 4))
        if not out_indices or out_indices[-1] != num_stages - 1:
            raise ValueError(f"SELSA: model.detector.backbone.out_indices must end with the last stage "
                             f"{num_stages - 1} (detection uses the last output), got {out_indices}")
        self.cab_stage = int(cab_stage)
        if auxiliary is not None and self.cab_stage not in out_indices:
            raise ValueError(f"SELSA: model.cab_stage={self.cab_stage} must be one of "
                             f"model.detector.backbone.out_indices={out_indices} when the auxiliary branch "
                             f"is on, e.g. out_indices=({self.cab_stage}, {num_stages - 1})")

        self.detector = build_detector(detector)
        if not hasattr(self.detector, "roi_head") or not getattr(self.detector, "with_rpn", False):
            raise ValueError("SELSA: model.detector must be a two-stage detector with an RPN and a RoI head")
        self._tap_index = out_indices.index(self.cab_stage) if auxiliary is not None else None

        if auxiliary is not None:
            self.auxiliary = MODELS.build(auxiliary)
            expected = _stage_out_channels(self.detector.backbone, self.cab_stage)
            got = _auxiliary_in_channels(self.auxiliary)
            if expected is not None and got is not None and expected != got:
                raise ValueError(f"SELSA: model.auxiliary.in_channels={got} does not match the "
                                 f"{expected} channels of backbone stage cab_stage={self.cab_stage}")

        self.train_cfg = train_cfg
        self.test_cfg = self._check_test_cfg(test_cfg)
        self.cache_ref_proposals = bool(self.test_cfg.get("cache_ref_proposals", True))
        # precompute the TRoI embed conv's taps on the cached maps: a 4x win at R-50 sizes, a loss on tiny maps
        self.embed_taps = bool(self.test_cfg.get("embed_taps", True))
        # channels-last backbone and neck at test time, unless an mmcv op in them reads NCHW memory
        self.channels_last = (bool(self.test_cfg.get("channels_last", True))
                              and not _holds_mmcv_op(self.detector.backbone)
                              and not (self.detector.with_neck and _holds_mmcv_op(self.detector.neck)))
        # test-time copies of the backbone and neck with their batch norms folded into the convolutions
        self.fold_batchnorm = bool(self.test_cfg.get("fold_batchnorm", True))
        self._folded = FoldedCopies(channels_last=self.channels_last)
        self.fp16_enabled = False
        self.memo: _VideoMemo | None = None

        if frozen_modules is not None:
            self.freeze_module(frozen_modules)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_test_cfg(test_cfg: dict | None) -> dict:
        test_cfg = dict(test_cfg or {})
        for key, value in test_cfg.items():
            if key not in _TEST_CFG_KEYS:
                raise ValueError(f"SELSA: unknown key model.test_cfg.{key}; known: {sorted(_TEST_CFG_KEYS)}")
            if not isinstance(value, _TEST_CFG_KEYS[key]):
                raise TypeError(f"SELSA: model.test_cfg.{key} must be {_TEST_CFG_KEYS[key].__name__}, "
                                f"got {value!r}")
        return test_cfg

    @property
    def with_auxiliary(self) -> bool:
        """bool: whether the contrastive branch exists (training only)."""
        return getattr(self, "auxiliary", None) is not None

    @property
    def with_detector(self) -> bool:
        return getattr(self, "detector", None) is not None

    def freeze_module(self, module: str | Sequence[str]) -> None:
        """Put the named sub-module(s) in eval mode and stop their gradients."""
        if isinstance(module, str):
            modules = [module]
        elif isinstance(module, (list, tuple)):
            modules = list(module)
        else:
            raise TypeError(f"SELSA: frozen_modules must be a str or a list of str, got {module!r}")
        for name in modules:
            m = getattr(self, name, None)
            if not isinstance(m, nn.Module):
                raise ValueError(f"SELSA: frozen_modules names {name!r}, which is not a sub-module")
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> "SELSA":
        """``nn.Module.train``; entering training also frees the folded test-time copies."""
        if mode:
            self.clear_folded()
        return super().train(mode)

    def _apply(self, *args, **kwargs):
        # to(), cuda(), cpu(), half(), ...: the folded copies stay on the old device or dtype, so free them
        self.clear_folded()
        return super()._apply(*args, **kwargs)

    def clear_folded(self) -> None:
        """Free the test-time copies with folded batch norms (``test_cfg.fold_batchnorm``); the next test
        frame builds them again. Needed only after weights were changed through ``tensor.data``, which
        the copies cannot notice (:mod:`clab.models.folding`); ``train()``, ``to()`` and the end of
        ``clab test`` call it."""
        folded = self.__dict__.get("_folded")
        if folded is not None:
            folded.clear()

    def reset_video_memo(self) -> None:
        """Forget (and free) the cached references of the current video; the next frame must be frame 0.

        ``clab test`` calls it when a test ends; call it after :func:`clab.apis.inference_vid` over a video
        to release the cache (about 0.8 GB on a GPU at 600x1000 with 14 references).
        """
        self.memo = None

    # ------------------------------------------------------------------ features
    def extract_feat(self, img: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """Backbone + neck.

        Args:
            img: Tensor[B, 3, H, W], normalised and padded.

        Returns:
            ``(x, tapped)``: ``x`` is the neck output, a tuple of one Tensor[B, C, H/s, W/s] computed from the
            last backbone output only; ``tapped`` is backbone stage ``cab_stage`` (Tensor[B, C_tap, ...]) when
            the branch is on, else None. Both are contiguous NCHW, also when the test-time backbone ran on a
            channels-last copy of ``img`` (``test_cfg.channels_last``).
        """
        channels_last = self.channels_last and not self.training
        if channels_last:
            # the same convolutions on NHWC memory: faster oneDNN / cuDNN kernels, same numbers up to the
            # order of float sums
            img = img.contiguous(memory_format=torch.channels_last)
        modules = [self.detector.backbone] + ([self.detector.neck] if self.detector.with_neck else [])
        if (self.fold_batchnorm and not self.training and not torch.is_grad_enabled()
                and not getattr(self, "_is_replica", False) and foldable_now(*modules)):
            # the folded copies (rebuilt when the weights change); with gradients, hooks, batch norms in
            # training mode, or in an nn.DataParallel replica (whose weights are new tensors at every
            # call), the modules themselves
            copies = self._folded.get(*modules)
            if copies is not None:
                modules = list(copies)
        backbone, neck = modules[0], (modules[1] if len(modules) > 1 else None)
        outs = backbone(img)
        if isinstance(outs, Tensor):
            outs = (outs,)
        last = tuple(outs[-1:])
        x = neck(last) if neck is not None else last
        tapped = outs[self._tap_index] if self._tap_index is not None else None
        if channels_last:
            # back to contiguous NCHW: mmcv's RoIAlign and NMS inputs are read as contiguous memory
            x = tuple(f.contiguous() for f in x)
            tapped = None if tapped is None else tapped.contiguous()
        return tuple(x), tapped

    # ------------------------------------------------------------------ training
    @auto_fp16(apply_to=("img", "ref_img"))
    def forward(self, img, img_metas, return_loss: bool = True, **kwargs):
        """Training losses when ``return_loss`` (see :meth:`forward_train`), else detections
        (:meth:`forward_test`)."""
        if return_loss:
            return self.forward_train(img, img_metas, **kwargs)
        return self.forward_test(img, img_metas, **kwargs)

    def forward_train(self, img: Tensor, img_metas: list[dict], gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor], ref_img: Tensor, ref_img_metas: list[list[dict]],
                      gt_bboxes_ignore: list[Tensor] | None = None, gt_masks=None, **kwargs) -> dict:
        """Losses of a batch of N clips (key frame + T references each).

        Args:
            img: Tensor[N, 3, H, W] key frames.
            img_metas: N dicts (img_shape, pad_shape, scale_factor, ...).
            gt_bboxes: N Tensor[k_i, 4], x1y1x2y2 in resized-image pixels (k_i may be 0).
            gt_labels: N Tensor[k_i] long, 0-based classes.
            ref_img: Tensor[N, T, 3, H, W] reference frames.
            ref_img_metas: N lists of T dicts.
            gt_bboxes_ignore: optional N Tensor[k, 4].
            **kwargs: other batch fields (gt_instance_ids, ref_gt_bboxes, ...) are accepted and unused.

        Returns:
            dict: ``loss_rpn_cls``, ``loss_rpn_bbox`` (mmdet's one-element lists), ``loss_cls``,
            ``loss_bbox``, ``acc`` and, with the branch, ``loss_cab`` and ``w_cab`` (the current weight).
        """
        n = self._check_train_inputs(img, img_metas, gt_bboxes, gt_labels, ref_img, ref_img_metas)
        t = ref_img.size(1)
        det = self.detector

        x, c_key = self.extract_feat(img)                          # x[0]: (N,C,h,w)
        ref_x, c_ref = self.extract_feat(ref_img.flatten(0, 1))    # ref_x[0]: (N*T,C,h,w), clip by clip
        flat_ref_metas = [meta for clip in ref_img_metas for meta in clip]

        losses: dict = {}
        proposal_cfg = det.train_cfg.get("rpn_proposal", det.test_cfg.rpn)
        rpn_losses, proposal_list = det.rpn_head.forward_train(
            x, img_metas, gt_bboxes, gt_labels=None, gt_bboxes_ignore=gt_bboxes_ignore,
            proposal_cfg=proposal_cfg)                             # N Tensor[<=600, 5], detached
        losses.update(rpn_losses)
        with torch.no_grad():  # proposals are detached anyway; skip the graph of the reference RPN pass
            ref_proposal_list = det.rpn_head.simple_test_rpn(ref_x, flat_ref_metas)  # N*T Tensor[<=300, 5]

        roi_losses = det.roi_head.forward_train(
            x, ref_x, img_metas, proposal_list, ref_proposal_list, gt_bboxes, gt_labels,
            gt_bboxes_ignore, gt_masks)
        losses.update(roi_losses)

        if self.with_auxiliary:
            assert c_key is not None and c_ref is not None
            assert c_ref.size(0) == n * t
            losses.update(self.auxiliary.forward_train(c_key, c_ref))
        return losses

    @staticmethod
    def _check_train_inputs(img, img_metas, gt_bboxes, gt_labels, ref_img, ref_img_metas) -> int:
        if not isinstance(img, Tensor) or img.dim() != 4:
            raise ValueError(f"SELSA.forward_train: img must be Tensor[N,3,H,W], got "
                             f"{getattr(img, 'shape', type(img))}")
        n = img.size(0)
        if not isinstance(ref_img, Tensor) or ref_img.dim() != 5 or ref_img.size(0) != n \
                or ref_img.shape[2:] != img.shape[1:]:
            raise ValueError(f"SELSA.forward_train: ref_img must be Tensor[N,T,3,H,W] matching img "
                             f"{tuple(img.shape)}, got {getattr(ref_img, 'shape', type(ref_img))}")
        t = ref_img.size(1)
        if t < 1:
            raise ValueError("SELSA.forward_train: every clip needs at least one reference frame (T >= 1)")
        for name, value in (("img_metas", img_metas), ("gt_bboxes", gt_bboxes), ("gt_labels", gt_labels),
                            ("ref_img_metas", ref_img_metas)):
            if len(value) != n:
                raise ValueError(f"SELSA.forward_train: {name} has {len(value)} entries for N={n} clips")
        for i, clip in enumerate(ref_img_metas):
            if len(clip) != t:
                raise ValueError(f"SELSA.forward_train: ref_img_metas[{i}] has {len(clip)} metas for T={t}")
        return n

    def _parse_losses(self, losses: dict) -> tuple[Tensor, dict]:
        """Sum every entry whose name contains 'loss'; everything else (acc, w_cab) is only logged.

        Returns ``(loss, log_vars)`` with ``log_vars`` as Python floats, averaged over processes when a
        process group exists.
        """
        log_vars: OrderedDict = OrderedDict()
        for name, value in losses.items():
            if isinstance(value, Tensor):
                log_vars[name] = value.mean()
            elif isinstance(value, (list, tuple)):
                log_vars[name] = sum(v.mean() for v in value)
            else:
                raise TypeError(f"SELSA: loss output {name!r} must be a Tensor or a list of Tensors, "
                                f"got {type(value).__name__}")
        loss = sum(v for k, v in log_vars.items() if "loss" in k)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:  # every rank must log the same keys, or all_reduce below would hang
            count = torch.tensor(len(log_vars), device=loss.device)
            dist.all_reduce(count)
            if int(count) != len(log_vars) * dist.get_world_size():
                raise RuntimeError(f"SELSA: rank {dist.get_rank()} logs {list(log_vars)}, other ranks differ")
        log_vars["loss"] = loss
        for name, value in log_vars.items():
            if distributed:
                value = value.data.clone()
                dist.all_reduce(value.div_(dist.get_world_size()))
            log_vars[name] = value.item()
        return loss, log_vars

    def train_step(self, data: dict, optimizer=None) -> dict:
        """One training iteration without the optimizer step (mmcv runner API)."""
        losses = self(**data)
        loss, log_vars = self._parse_losses(losses)
        return dict(loss=loss, log_vars=log_vars, num_samples=len(data["img_metas"]))

    def val_step(self, data: dict, optimizer=None) -> dict:
        """Same as :meth:`train_step` (losses on a validation batch)."""
        return self.train_step(data, optimizer)

    # ------------------------------------------------------------------ testing
    def forward_test(self, img, img_metas, ref_img=None, ref_img_metas=None, **kwargs) -> dict:
        """Detections of one frame from mmtracking's list-wrapped test batch.

        Args:
            img: ``[Tensor[1,3,H,W]]`` (or the tensor itself).
            img_metas: ``[[meta]]`` (or ``[meta]``); meta has ``frame_id`` and, for fixed stride,
                ``num_left_ref_imgs`` and ``frame_stride``.
            ref_img: ``[Tensor[1,T,3,H,W]]`` or None; ref_img_metas: ``[[[T metas]]]`` or None.
        """
        if isinstance(img, (list, tuple)):
            if len(img) != 1:
                raise NotImplementedError(f"SELSA: test-time augmentation is not supported ({len(img)} views)")
            img = img[0]
        if isinstance(img_metas, (list, tuple)) and img_metas and isinstance(img_metas[0], (list, tuple)):
            if len(img_metas) != 1:
                raise NotImplementedError("SELSA: test-time augmentation is not supported")
            img_metas = img_metas[0]
        return self.simple_test(img, img_metas, ref_img=ref_img, ref_img_metas=ref_img_metas, **kwargs)

    def simple_test(self, img: Tensor, img_metas: list[dict], ref_img=None, ref_img_metas=None,
                    proposals=None, ref_proposals=None, rescale: bool = False) -> dict:
        """Detect objects in one frame of a video (frames must come in order, frame 0 first).

        Args:
            img: Tensor[1, 3, H, W].
            img_metas: ``[meta]`` with ``frame_id``; with ``frame_stride >= 1`` (fixed stride) also
                ``num_left_ref_imgs``.
            ref_img: ``[Tensor[1, T, 3, H, W]]`` (mmtracking), Tensor[1, T, 3, H, W] or None. Adaptive
                stride: the video's K fixed references at frame 0, None later. Fixed stride: the
                ``2r+1`` window at frame 0, then one new frame every ``frame_stride`` frames.
            ref_img_metas: the matching metas, ``[[[T metas]]]``, ``[[T metas]]`` or ``[T metas]``.
            proposals, ref_proposals: unsupported (the RPN always runs); must be None.
            rescale: return boxes in original-image pixels (divide by ``scale_factor``).

        Returns:
            ``{'det_bboxes': [num_classes ndarrays (k, 5)]}``, rows x1, y1, x2, y2, score.
        """
        if proposals is not None or ref_proposals is not None:
            raise NotImplementedError("SELSA: precomputed proposals are not supported; the RPN always runs")
        if isinstance(img, (list, tuple)):
            img = img[0]
        if isinstance(img_metas, dict):
            img_metas = [img_metas]
        while isinstance(img_metas, (list, tuple)) and len(img_metas) == 1 \
                and isinstance(img_metas[0], (list, tuple)):
            img_metas = img_metas[0]
        if not isinstance(img, Tensor) or img.dim() != 4 or img.size(0) != 1 or len(img_metas) != 1:
            raise ValueError(f"SELSA.simple_test: expects one frame, img Tensor[1,3,H,W] and one meta; got "
                             f"img {getattr(img, 'shape', type(img))} and {len(img_metas)} metas")
        meta = img_metas[0]
        frame_id = meta.get("frame_id", -1)
        if not isinstance(frame_id, int) or frame_id < 0:
            raise ValueError(f"SELSA.simple_test: img_metas[0]['frame_id'] must be an int >= 0, got {frame_id!r}")
        refs, ref_metas = self._unwrap_test_refs(ref_img, ref_img_metas)

        frame_stride = meta.get("frame_stride", -1)
        if frame_stride is None or frame_stride < 1:
            outs = self.test_with_adaptive_stride(img, meta, refs, ref_metas, rescale)
        else:
            outs = self.test_with_fix_stride(img, meta, refs, ref_metas, rescale)
        if isinstance(outs, (list, tuple)) and outs and isinstance(outs[0], (list, tuple)):
            outs = outs[0]  # mmtracking's RoI head returns one per-class list per image
        return dict(det_bboxes=list(outs))

    @staticmethod
    def _unwrap_test_refs(ref_img, ref_img_metas) -> tuple[Tensor | None, list[dict] | None]:
        if ref_img is None:
            return None, None
        if isinstance(ref_img, (list, tuple)):
            if len(ref_img) != 1:
                raise ValueError(f"SELSA.simple_test: ref_img must wrap one tensor, got {len(ref_img)}")
            ref_img = ref_img[0]
        if isinstance(ref_img, Tensor) and ref_img.dim() == 5:
            if ref_img.size(0) != 1:
                raise ValueError(f"SELSA.simple_test: batch size must be 1, ref_img is {tuple(ref_img.shape)}")
            ref_img = ref_img[0]
        if not isinstance(ref_img, Tensor) or ref_img.dim() != 4:
            raise ValueError(f"SELSA.simple_test: ref_img must be Tensor[1,T,3,H,W], got "
                             f"{getattr(ref_img, 'shape', type(ref_img))}")
        metas = ref_img_metas
        while isinstance(metas, (list, tuple)) and len(metas) == 1 and isinstance(metas[0], (list, tuple)):
            metas = metas[0]
        if not isinstance(metas, (list, tuple)) or len(metas) != ref_img.size(0) \
                or not all(isinstance(m, dict) for m in metas):
            raise ValueError(f"SELSA.simple_test: ref_img_metas must hold {ref_img.size(0)} meta dicts, one per "
                             f"reference image")
        return ref_img, list(metas)

    def _rpn(self, x: Sequence[Tensor], metas: list[dict]) -> list[Tensor]:
        """Test-setting RPN proposals (test_cfg.rpn): one Tensor[<=max_per_img, 5] per image."""
        return self.detector.rpn_head.simple_test_rpn(tuple(x), metas)

    def _memo_for(self, mode: str, meta: dict) -> _VideoMemo:
        """The memo of the video ``meta``'s frame belongs to; a clear error when the cache holds another video
        or the frame does not continue it.

        Every video starts at frame 0 (which replaces the cache, so a new video never reuses the previous
        one's references). After that, frame ids must increase; with fixed stride they must also be
        consecutive, since the window moves by one reference every ``frame_stride`` frames and a skipped
        frame would misalign it. With adaptive stride the references are fixed for the video, so frames may
        be skipped (e.g. every 10th frame), but not repeated or reordered.
        """
        frame_id = meta["frame_id"]
        memo = self.memo
        if memo is None or memo.mode != mode:
            raise RuntimeError(f"SELSA.simple_test: frame {frame_id} arrived before frame 0 of its video "
                               f"({mode} stride): frames of a video must be tested in order, frame 0 first")
        video = _video_identity(meta)
        if memo.video is not None and video is not None and video != memo.video:
            raise RuntimeError(f"SELSA.simple_test: frame {frame_id} belongs to video {video[1]!r} but the "
                               f"reference cache holds video {memo.video[1]!r} (last frame "
                               f"{memo.last_frame_id}); a new video must start at frame 0")
        last = memo.last_frame_id
        if mode == "fix" and frame_id != last + 1:
            raise RuntimeError(f"SELSA.simple_test: fixed-stride frame {frame_id} follows frame {last} of its "
                               f"video; frames must be consecutive (a gap would misalign the reference "
                               f"window), or restart the video at frame 0")
        if frame_id <= last:
            raise RuntimeError(f"SELSA.simple_test: frame {frame_id} follows frame {last} of its video; frame "
                               f"ids must increase (start the video again at frame 0 to restart)")
        return memo

    def test_with_adaptive_stride(self, img: Tensor, meta: dict, ref_img: Tensor | None,
                                  ref_metas: list[dict] | None, rescale: bool):
        """SPEC 2.7: K fixed references per video (given at frame 0) plus the current frame.

        Frame 0 computes and keeps the references' neck maps and, with caching, their proposals and the RoI
        head's reference cache. Every frame computes its own map and proposals; the RoI head then sees the K
        references plus the current frame as the (K+1)-th reference.
        """
        frame_id = meta["frame_id"]
        if frame_id == 0:
            if ref_img is None:
                raise ValueError("SELSA.simple_test: frame 0 of a video needs its reference images "
                                 "(test_with_adaptive_stride samples them at frame 0)")
            self.memo = None                                             # free the previous video first
            ref_x, _ = self.extract_feat(ref_img)                        # ref_x[0]: (K,C,h,w)
            memo = _VideoMemo(mode="adaptive", feats=list(ref_x), img_metas=list(ref_metas),
                              video=_video_identity(meta))
            if self.cache_ref_proposals:
                memo.proposals = self._rpn(ref_x, memo.img_metas)        # K Tensor[<=300, 5]
                memo.roi_cache = self.detector.roi_head.prepare_reference_cache(
                    ref_x, memo.proposals, with_embed_taps=self.embed_taps)
            self.memo = memo
        else:
            memo = self._memo_for("adaptive", meta)
        memo.frame_ids.append(frame_id)

        x, _ = self.extract_feat(img)                                    # x[0]: (1,C,h,w)
        proposal_list = self._rpn(x, [meta])                             # 1 Tensor[<=300, 5]
        roi_head = self.detector.roi_head
        if self.cache_ref_proposals:
            return roi_head.simple_test(x, None, proposal_list, None, [meta], rescale=rescale,
                                        ref_cache=memo.roi_cache)
        ref_x = tuple(torch.cat((r, k), dim=0) for r, k in zip(memo.feats, x))   # (K+1,C,h,w)
        ref_metas_all = memo.img_metas + [meta]
        ref_proposal_list = self._rpn(ref_x, ref_metas_all)             # K+1 Tensor[<=300, 5]
        return roi_head.simple_test(x, ref_x, proposal_list, ref_proposal_list, [meta], rescale=rescale)

    def test_with_fix_stride(self, img: Tensor, meta: dict, ref_img: Tensor | None,
                             ref_metas: list[dict] | None, rescale: bool):
        """SPEC 2.7 fixed stride: a sliding window of ``2r+1`` frames with the current frame at index r.

        Frame 0 fills the window from the references (r+1 copies of frame 0, then frames s, 2s, ..., rs);
        every ``frame_stride``-th frame pushes its one new reference and drops the oldest. As in mmtracking,
        the current frame's map (and meta) is written into the window centre, where it stays.
        """
        frame_id = meta["frame_id"]
        r = meta.get("num_left_ref_imgs", -1)
        stride = meta["frame_stride"]
        if not isinstance(r, int) or r < 0:
            raise ValueError(f"SELSA.simple_test: fixed-stride meta needs 'num_left_ref_imgs' >= 0, got {r!r}")
        if frame_id == 0:
            if ref_img is None or ref_img.size(0) != 2 * r + 1:
                got = None if ref_img is None else ref_img.size(0)
                raise ValueError(f"SELSA.simple_test: frame 0 (fixed stride, num_left_ref_imgs={r}) needs a "
                                 f"window of {2 * r + 1} reference images, got {got}")
            self.memo = None                                             # free the previous video first
            ref_x, _ = self.extract_feat(ref_img)                        # (2r+1,C,h,w)
            memo = _VideoMemo(mode="fix", feats=list(ref_x), img_metas=list(ref_metas),
                              video=_video_identity(meta))
            if self.cache_ref_proposals:
                memo.proposals = self._rpn(ref_x, memo.img_metas)
            self.memo = memo
            x = tuple(f[r:r + 1].clone() for f in memo.feats)
        elif frame_id % stride == 0:
            if ref_img is None or ref_img.size(0) != 1:
                got = None if ref_img is None else ref_img.size(0)
                raise ValueError(f"SELSA.simple_test: fixed-stride frame {frame_id} must bring exactly one new "
                                 f"reference image, got {got} (a duplicated lone reference would shift the "
                                 f"window, SPEC 1.11)")
            memo = self._memo_for("fix", meta)
            new_x, _ = self.extract_feat(ref_img)                        # (1,C,h,w)
            memo.feats = [torch.cat((old[1:], new), dim=0) for old, new in zip(memo.feats, new_x)]
            memo.img_metas = memo.img_metas[1:] + list(ref_metas)
            if memo.proposals is not None:
                memo.proposals = memo.proposals[1:] + self._rpn(new_x, list(ref_metas))
            x = tuple(f[r:r + 1].clone() for f in memo.feats)
        else:
            if ref_img is not None:
                raise ValueError(f"SELSA.simple_test: fixed-stride frame {frame_id} is not a multiple of "
                                 f"frame_stride={stride} and must come without reference images")
            memo = self._memo_for("fix", meta)
            x, _ = self.extract_feat(img)
        if len(memo.img_metas) != 2 * r + 1:
            raise RuntimeError(f"SELSA.simple_test: fixed-stride window holds {len(memo.img_metas)} frames, "
                               f"expected {2 * r + 1}")
        memo.frame_ids.append(frame_id)

        # the current frame sits at the window centre
        for level, feat in zip(memo.feats, x):
            level[r:r + 1] = feat
        memo.img_metas[r] = meta
        proposal_list = self._rpn(x, [meta])
        if memo.proposals is not None:
            memo.proposals[r] = proposal_list[0]
            ref_proposal_list = list(memo.proposals)
        else:
            ref_proposal_list = self._rpn(memo.feats, memo.img_metas)
        return self.detector.roi_head.simple_test(x, tuple(memo.feats), proposal_list, ref_proposal_list,
                                                  [meta], rescale=rescale)

    def aug_test(self, imgs, img_metas, **kwargs):
        raise NotImplementedError("SELSA: test-time augmentation is not supported")


def _holds_mmcv_op(module: nn.Module) -> bool:
    """Whether ``module`` contains a module of ``mmcv.ops`` (e.g. a deformable convolution), whose kernels
    read their input as contiguous NCHW memory."""
    return any(type(m).__module__.startswith("mmcv.ops") for m in module.modules())
