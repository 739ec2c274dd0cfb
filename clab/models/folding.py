"""Test-time copies of the backbone and neck with each batch norm folded into the convolution before it.

In eval mode a batch norm is a per-channel affine map, ``y = x * s + t`` with ``s = gamma / sqrt(var + eps)``
and ``t = beta - mean * s``. When it reads the output of a convolution, the pair is one convolution with
weight ``W * s`` (per output channel) and bias ``b * s + t``: the batch norm's pass over the whole feature
map disappears. The results are the same up to the rounding of ``W * s`` and the order of float sums (at
608x1008 on random ResNet-50 weights with random batch-norm statistics, float32 on a CPU: about 5e-6 of the
neck output's largest value; ``benchmarks/bench_fold.py``, whose numbers are in benchmarks/README.md).

Only pairs whose order is known are folded:

* in a plain ``nn.Sequential`` (one that keeps ``Sequential.forward``), a convolution directly followed by a
  batch norm (mmdet's downsample shortcuts, the deep stem of ResNetV1d);
* in mmdet's ``ResNet`` (its stem) and its ``BasicBlock`` and ``Bottleneck`` (also ResNeXt's), as long as
  they keep mmdet's ``forward``: ``conv{i}`` with ``norm{i}``, which that ``forward`` applies one after the
  other (plugins come after the activation).

A convolution qualifies only if it computes a plain convolution with its ``weight`` and ``bias``: torch's
``nn.Conv2d`` and mmcv's ``Conv2d`` (empty-input wrapper) and ``Conv2dAdaptivePadding``. Weight-standardised
convolutions (``ConvWS``, ``ConvAWS``, ``SAConv``), masked and deformable ones keep their batch norm, as does
any batch norm in training mode. Every other batch norm stays as it is, so a backbone of another family is
still right, only not folded. Forward hooks are not copied; :class:`clab.models.selsa.SELSA` keeps the
original modules while any of them has one.

:class:`FoldedCopies` keeps one folded copy per set of weights: it is rebuilt when any parameter or buffer
of the originals is another tensor (``data_ptr``, device, dtype, shape) or was changed in place through
autograd's view of it (its version: ``load_state_dict``, an optimizer step). A change made through
``tensor.data`` does not raise the version; call :meth:`FoldedCopies.clear` (``SELSA.clear_folded``) after
one. ``SELSA`` also clears it on ``train()``, ``to()``/``cuda()``/``half()`` and at the end of a test.
"""
from __future__ import annotations

import copy
import threading
import warnings
from typing import Iterable

import torch
from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding
from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["fold_batchnorm", "FoldedCopies", "foldable_now"]

#: forward functions that compute F.conv2d(x, self.weight, self.bias) (after padding or an empty-input check)
_PLAIN_CONV_FORWARDS = (nn.Conv2d.forward, MMCVConv2d.forward, Conv2dAdaptivePadding.forward)
#: mmdet forward functions that apply conv{i} and norm{i} one after the other
_KNOWN_BLOCK_FORWARDS = (BasicBlock.forward, Bottleneck.forward)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and type(conv).forward in _PLAIN_CONV_FORWARDS
            and isinstance(norm, _BatchNorm) and not norm.training
            and norm.running_mean is not None and norm.running_var is not None
            and norm.num_features == conv.out_channels)


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, norm: _BatchNorm) -> None:
    """Fold eval-mode ``norm`` into ``conv`` in place (computed in float64 where the device has it, stored
    in the conv's dtype)."""
    wide = torch.float32 if conv.weight.device.type == "mps" else torch.float64
    scale = torch.rsqrt(norm.running_var.to(wide) + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.to(wide)
    shift = -norm.running_mean.to(wide) * scale
    if norm.bias is not None:
        shift = shift + norm.bias.to(wide)
    if conv.bias is not None:
        shift = shift + conv.bias.to(wide) * scale
    weight = conv.weight
    conv.weight = nn.Parameter((weight.to(wide) * scale.view(-1, 1, 1, 1)).to(weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=False)


def _pairs(module: nn.Module) -> Iterable[tuple[nn.Module, str, str]]:
    """(parent, conv attribute, norm attribute) of every pair of ``module``'s tree applied in that order."""
    for parent in module.modules():
        if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
            names = list(parent._modules)
            for a, b in zip(names, names[1:]):
                yield parent, a, b
        if isinstance(parent, (BasicBlock, Bottleneck)) and type(parent).forward in _KNOWN_BLOCK_FORWARDS:
            for i in (1, 2, 3):
                norm_name = getattr(parent, f"norm{i}_name", None)
                if norm_name is not None and hasattr(parent, f"conv{i}"):
                    yield parent, f"conv{i}", norm_name
        if isinstance(parent, ResNet) and type(parent).forward is ResNet.forward and not parent.deep_stem:
            yield parent, "conv1", parent.norm1_name


def fold_batchnorm(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` in eval mode with its known conv + batch-norm pairs folded (module docstring).

    Batch norms in training mode are not folded (the copy's eval mode would change what they compute, so
    :func:`foldable_now` keeps the originals then). The folded batch norms become ``nn.Identity`` in the
    copy (their attribute names stay, so ``norm1`` style properties still resolve); ``module`` itself is
    not changed. The copy has no forward hooks and no gradients.

    Returns:
        (the copy, the number of batch norms folded).
    """
    folded = copy.deepcopy(module)
    count, seen = 0, set()
    for parent, conv_name, norm_name in list(_pairs(folded)):
        conv, norm = parent._modules.get(conv_name), parent._modules.get(norm_name)
        if conv is None or norm is None or id(conv) in seen or not _foldable(conv, norm):
            continue
        _fold_pair(conv, norm)
        parent._modules[norm_name] = nn.Identity()
        seen.add(id(conv))
        count += 1
    folded.eval()  # (mmdet's ResNet.train returns None)
    for m in folded.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded, count


def foldable_now(*modules: nn.Module) -> bool:
    """Whether copies of ``modules`` may stand in for them now: no module in their trees has a forward hook
    or pre-hook (a copy would not see hooks added later), no batch norm is in training mode (it would use
    batch statistics), and no weight is an inference tensor (its version is not tracked)."""
    for root in modules:
        for m in root.modules():
            if m._forward_hooks or m._forward_pre_hooks or (isinstance(m, _BatchNorm) and m.training):
                return False
        for t in root.parameters():
            if t.is_inference():
                return False
    return True


def _signature(modules: Iterable[nn.Module]) -> tuple:
    """What identifies the current weights of ``modules``: each tensor's storage, device, dtype, shape and
    version."""
    return tuple((t.data_ptr(), t.device, t.dtype, t.shape, t._version)
                 for m in modules for t in (*m.parameters(), *m.buffers()))


class FoldedCopies:
    """Folded copies of a few modules, rebuilt only when the originals' weights change.

    Args:
        channels_last: store the copies' 4-d weights channels-last (for channels-last inputs: no
            reordering of the weights at each call).
    """

    def __init__(self, channels_last: bool = False) -> None:
        self.channels_last = channels_last
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._copies: tuple[nn.Module, ...] = ()
        self.folded = 0

    def get(self, *modules: nn.Module) -> tuple[nn.Module, ...] | None:
        """Folded copies of ``modules`` (in order) for their current weights; None where the copies cannot
        be built (out of device memory: a warning, and the caller runs the originals)."""
        key = (tuple(id(m) for m in modules), _signature(modules))
        with self._lock:
            if key == self._key:
                return self._copies
            self._copies, self._key, self.folded = (), None, 0  # free the old copies before building
            try:
                with torch.inference_mode(False), torch.no_grad():
                    copies, count = [], 0
                    for m in modules:
                        c, n = fold_batchnorm(m)
                        if self.channels_last:
                            c = c.to(memory_format=torch.channels_last)
                        copies.append(c)
                        count += n
            except torch.cuda.OutOfMemoryError:
                warnings.warn("clab: no device memory for the batch-norm-folded backbone copy; running the "
                              "unfolded backbone", RuntimeWarning, stacklevel=3)
                return None
            self._copies, self._key, self.folded = tuple(copies), key, count
            return self._copies

    def clear(self) -> None:
        """Drop the copies (their memory)."""
        with self._lock:
            self._copies, self._key, self.folded = (), None, 0

    # the copies are a cache: a copied or unpickled model starts without them
    def __deepcopy__(self, memo) -> "FoldedCopies":
        return FoldedCopies(self.channels_last)

    def __getstate__(self) -> dict:
        return {"channels_last": self.channels_last}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["channels_last"])
