"""The contrastive auxiliary branch (CAB) and its NT-Xent loss (SPEC 1.6, 1.7; SPEC 0 item 4).

``ContrastiveHead`` maps an intermediate backbone feature map (C4 of the dilated ResNet, 1024 channels at
stride 16) to a 128-d embedding:

    conv 3x3 (in -> 512, bias) -> ReLU -> global average pool over the whole padded map -> flatten
    -> Linear(512, 256) -> ReLU -> Linear(256, 128)

with PyTorch's default initialisation and the published parameter names (``channel.0.*``, ``proj.0.*``,
``proj.2.*``; ``auxiliary.*`` inside SELSA). There is no normalisation: the cosine similarity of the loss
normalises.

The loss is pytorch-metric-learning's ``NTXentLoss(temperature)`` (cosine similarity, mean over positive
pairs): with labels equal to the clip index, a key frame and its T reference frames are positives and
every frame of another clip is a negative. For every ordered pair (a, p), a != p, with the same label,

    l_ap = -log( exp(s_ap / τ) / (exp(s_ap / τ) + Σ_{n: y_n != y_a} exp(s_an / τ)) ),

and the loss is the mean of ``l_ap``, multiplied by ``loss_weight`` (a plain float that ``CabWeightHook``
overwrites every iteration).

Across processes (``torch.distributed`` initialised, world size W > 1) the loss is wrapped in PML's
``DistributedLossWrapper``: it all-gathers embeddings and labels (labels offset by ``rank * N`` so clips
are unique) and returns ``W * NT-Xent(global batch)``; DDP's gradient averaging divides by W again, so the
parameter gradient is that of one NT-Xent over the global batch, as in the published code. The published
code also *logged* that W-times value. Here the returned ``loss_cab`` has the gradient of
``W * loss_weight * NT-Xent(global batch)`` but the *value* ``loss_weight * NT-Xent(global batch)``: the
number logged is the one a single process holding the whole global batch would log, independent of W.
In one process (no process group, or W = 1) the plain loss is used and ``torch.distributed`` is not called.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from mmcv.runner import BaseModule
from mmdet.models.builder import MODELS
from pytorch_metric_learning.losses import NTXentLoss
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
from torch import Tensor, nn

__all__ = ["ContrastiveHead", "clip_labels"]


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def clip_labels(num_clips: int, num_refs: int, offset: int = 0, device=None) -> Tensor:
    """Labels of ``[keys..., refs of clip 0..., refs of clip 1..., ...]``: the clip index plus ``offset``.

    Returns:
        Tensor[num_clips * (1 + num_refs)] long, e.g. ``[0, 1, 0, 0, 1, 1]`` for 2 clips with 2 references.
    """
    clips = torch.arange(num_clips, device=device, dtype=torch.long)
    return torch.cat([clips, clips.repeat_interleave(num_refs)]) + offset


@MODELS.register_module()
class ContrastiveHead(BaseModule):
    """Contrastive auxiliary branch: feature map -> embedding, and its weighted NT-Xent loss.

    Args:
        in_channels: channels C of the tapped backbone stage (1024 for ResNet C4).
        mid_channels: output channels of the 3x3 conv (512).
        hidden_channels: hidden width of the projection MLP (256).
        out_channels: embedding size (128).
        temperature: NT-Xent temperature τ (0.1).
        loss_weight: initial weight λ of the loss (0.005); a plain float the schedule hook overwrites.
        init_cfg: mmcv init config; ``None`` keeps PyTorch's default initialisation, as published.
    """

    def __init__(self, in_channels: int = 1024, mid_channels: int = 512, hidden_channels: int = 256,
                 out_channels: int = 128, temperature: float = 0.1, loss_weight: float = 0.005,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        for name, value in (("in_channels", in_channels), ("mid_channels", mid_channels),
                            ("hidden_channels", hidden_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ContrastiveHead: '{name}' must be a positive int, got {value!r}")
        if not float(temperature) > 0:
            raise ValueError(f"ContrastiveHead: 'temperature' must be > 0, got {temperature!r}")
        if not float(loss_weight) >= 0:
            raise ValueError(f"ContrastiveHead: 'loss_weight' must be >= 0, got {loss_weight!r}")
        self.in_channels = in_channels
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.channel = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 3, stride=1, padding=1, bias=True),
                                     nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Sequential(nn.Linear(mid_channels, hidden_channels), nn.ReLU(inplace=True),
                                  nn.Linear(hidden_channels, out_channels))
        self.ntxent = NTXentLoss(temperature=self.temperature)

    def _check_feats(self, feats: Tensor, name: str) -> None:
        if not isinstance(feats, Tensor) or feats.dim() != 4:
            shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
            raise ValueError(f"ContrastiveHead: {name} must be a Tensor[M, C, h, w], got {shape}")
        if feats.shape[1] != self.in_channels:
            raise ValueError(f"ContrastiveHead: {name} has {feats.shape[1]} channels but the head was built "
                             f"with in_channels={self.in_channels}; set auxiliary.in_channels to the "
                             f"channels of the tapped backbone stage")

    def forward(self, feats: Tensor) -> Tensor:
        """Embed feature maps.

        Args:
            feats: Tensor[M, C=in_channels, h, w].

        Returns:
            Tensor[M, out_channels], not normalised.
        """
        self._check_feats(feats, "feats")
        x = self.channel(feats)              # (M, mid, h, w)
        x = self.pool(x).flatten(1)          # (M, mid): mean over the whole (padded) map
        return self.proj(x)                  # (M, out)

    def embed(self, feats: Tensor) -> Tensor:
        """Alias of ``self(feats)``: Tensor[M, C, h, w] -> Tensor[M, out_channels]."""
        return self(feats)

    def loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Weighted NT-Xent of this process's embeddings.

        Args:
            embeddings: Tensor[M, D].
            labels: Tensor[M] long; equal labels are positives. Across processes the labels must already be
                unique per clip globally (see :func:`clip_labels` with ``offset=rank * N``), and every process
                must pass the same M.

        Returns:
            Tensor[] float32 = ``loss_weight * NT-Xent`` over the global batch (its value), computed in fp32
            with autocast off, also under mixed precision; in W > 1 processes the gradient is W times that of
            the value (see the module docstring).
        """
        if embeddings.dim() != 2 or labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"ContrastiveHead.loss: expected embeddings Tensor[M, D] and labels Tensor[M], "
                             f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}")
        _, world_size = _world()
        # NT-Xent in fp32 whatever the forward ran in: under --amp (autocast) the embeddings are fp16, and the
        # exp(s / 0.1) of fp16 similarities loses the precision the loss needs (and can overflow)
        embeddings = embeddings.float()
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            if world_size > 1:
                scaled = DistributedLossWrapper(self.ntxent)(embeddings, labels)   # W * NT-Xent(global)
                # value NT-Xent(global), gradient of W * NT-Xent(global)
                value = scaled - scaled.detach() * (1.0 - 1.0 / world_size)
            else:
                value = self.ntxent(embeddings, labels)
        return value * self.loss_weight

    def forward_train(self, key_feats: Tensor, ref_feats: Tensor | Sequence[Tensor]) -> dict[str, Tensor]:
        """Embed the key and reference frames of N clips and return the weighted contrastive loss.

        Args:
            key_feats: Tensor[N, C, h, w], the tapped stage of the N key frames.
            ref_feats: Tensor[N*T, C, h', w'] ordered sample by sample (the T references of clip 0, then of
                clip 1, ...), or a sequence of N tensors [T, C, h', w'] that is concatenated in that order.

        Returns:
            ``dict(loss_cab=Tensor[], w_cab=Tensor[])``: the loss (already multiplied by ``loss_weight``) and
            the current weight, for logging.
        """
        if isinstance(ref_feats, (list, tuple)):
            ref_feats = torch.cat(list(ref_feats), dim=0)
        self._check_feats(key_feats, "key_feats")
        self._check_feats(ref_feats, "ref_feats")
        num_clips, num_ref_total = key_feats.shape[0], ref_feats.shape[0]
        if num_clips == 0 or num_ref_total == 0 or num_ref_total % num_clips != 0:
            raise ValueError(f"ContrastiveHead.forward_train: ref_feats must hold T >= 1 reference maps per "
                             f"key frame (N*T rows for N = {num_clips} key frames), got {num_ref_total} rows")
        num_refs = num_ref_total // num_clips

        if key_feats.shape[2:] == ref_feats.shape[2:]:
            embeddings = self(torch.cat([key_feats, ref_feats], dim=0))   # (N + N*T, D)
        else:
            embeddings = torch.cat([self(key_feats), self(ref_feats)], dim=0)
        rank, _ = _world()
        labels = clip_labels(num_clips, num_refs, offset=rank * num_clips, device=embeddings.device)
        loss = self.loss(embeddings, labels)
        weight = torch.tensor(float(self.loss_weight), device=embeddings.device)
        return dict(loss_cab=loss, w_cab=weight)
