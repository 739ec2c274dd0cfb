"""Test-time copies of the backbone and neck with each batch norm folded into the convolution before it.

In eval mode a batch norm is a per-channel affine map, ``y = x * s + t`` with ``s = gamma / sqrt(var + eps)``
and ``t = beta - mean * s``. When it reads the output of a convolution, the pair is one convolution with
weight ``W * s`` (per output channel) and bias ``b * s + t``: the batch norm's pass over the whole feature
map disappears. The results are the same up to the rounding of ``W * s`` and the order of float sums (at
608x1008 on random ResNet-50 weights with random batch-norm statistics: about 5e-6 of the output's
largest value); benchmarks/README.md gives the time and the detections' difference.

Only pairs whose order is known are folded:

* in an ``nn.Sequential``, a ``Conv2d`` directly followed by a batch norm (mmdet's downsample shortcuts,
  the deep stem of ResNetV1d);
* in mmdet's ``ResNet`` (its stem) and its ``BasicBlock`` and ``Bottleneck`` (also ResNeXt's), ``conv{i}``
  with ``norm{i}``, which their ``forward`` applies one after the other.

Every other batch norm stays as it is, so a backbone of another family is still right, only not folded.
Deformable convolutions (mmcv ops) are not ``Conv2d`` and keep their batch norm. Forward hooks are not
copied; :class:`clab.models.selsa.SELSA` keeps the original modules while any of them has a hook.

:class:`FoldedCopies` keeps one folded copy per set of weights: it is rebuilt when any parameter or buffer
of the originals changes (a new ``data_ptr``, device or dtype, or an in-place update, which raises the
tensor's version: loading a checkpoint, an optimizer step).
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["fold_batchnorm", "FoldedCopies", "has_hooks"]


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros" and isinstance(norm, _BatchNorm)
            and norm.running_mean is not None and norm.running_var is not None
            and norm.num_features == conv.out_channels)


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, norm: _BatchNorm) -> None:
    """Fold eval-mode ``norm`` into ``conv`` in place (computed in float64, stored in the conv's dtype)."""
    var = norm.running_var.double()
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    weight = conv.weight
    conv.weight = nn.Parameter((weight.double() * scale.view(-1, 1, 1, 1)).to(weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=False)


def _pairs(module: nn.Module) -> Iterable[tuple[nn.Module, str, str]]:
    """(parent, conv attribute, norm attribute) of every pair of ``module``'s tree applied in that order."""
    for parent in module.modules():
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for a, b in zip(names, names[1:]):
                yield parent, a, b
        if isinstance(parent, (BasicBlock, Bottleneck)):
            for i in (1, 2, 3):
                norm_name = getattr(parent, f"norm{i}_name", None)
                if norm_name is not None and hasattr(parent, f"conv{i}"):
                    yield parent, f"conv{i}", norm_name
        if isinstance(parent, ResNet) and not parent.deep_stem:
            yield parent, "conv1", parent.norm1_name


def fold_batchnorm(module: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``module`` with its known conv + batch-norm pairs folded (module docstring).

    The folded batch norms become ``nn.Identity`` in the copy (their attribute names stay, so ``norm1``
    style properties still resolve); ``module`` itself is not changed.

    Returns:
        (the copy, the number of batch norms folded).
    """
    folded = copy.deepcopy(module)
    folded.eval()  # (mmdet's ResNet.train returns None)
    count = 0
    for parent, conv_name, norm_name in list(_pairs(folded)):
        conv, norm = parent._modules.get(conv_name), parent._modules.get(norm_name)
        if conv is None or norm is None or not _foldable(conv, norm):
            continue
        _fold_pair(conv, norm)
        parent._modules[norm_name] = nn.Identity()
        count += 1
    for m in folded.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded, count


def _signature(modules: Iterable[nn.Module]) -> tuple:
    """What identifies the current weights of ``modules``: each tensor's storage, device, dtype and version."""
    sig = []
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            sig.append((t.data_ptr(), t.device, t.dtype, t.shape, t._version))
    return tuple(sig)


def has_hooks(*modules: nn.Module) -> bool:
    """Whether any module in the trees of ``modules`` has a forward hook or forward pre-hook (a copy would
    not see hooks added to the originals later, so the callers keep the originals then)."""
    return any(m._forward_hooks or m._forward_pre_hooks for root in modules for m in root.modules())


class FoldedCopies:
    """Folded copies of a few modules, rebuilt only when the originals' weights change.

    Args:
        channels_last: store the copies' 4-d weights channels-last (for channels-last inputs: no
            reordering of the weights at each call).
    """

    def __init__(self, channels_last: bool = False) -> None:
        self.channels_last = channels_last
        self._key: tuple | None = None
        self._copies: tuple[nn.Module, ...] = ()
        self.folded = 0

    def get(self, *modules: nn.Module) -> tuple[nn.Module, ...]:
        """Folded copies of ``modules`` (in order) for their current weights."""
        key = (tuple(id(m) for m in modules), _signature(modules))
        if key != self._key:
            self._copies, self._key = (), None  # free the old copies before building new ones
            copies, count = [], 0
            for m in modules:
                c, n = fold_batchnorm(m)
                if self.channels_last:
                    c = c.to(memory_format=torch.channels_last)
                copies.append(c)
                count += n
            self._copies, self._key, self.folded = tuple(copies), key, count
        return self._copies

    def clear(self) -> None:
        """Drop the copies (their memory)."""
        self._copies, self._key, self.folded = (), None, 0

