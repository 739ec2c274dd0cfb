"""Checkpoint loading and saving (SPEC 5; DESIGN.md "Results and provenance").

A checkpoint is ``{'meta': {...}, 'state_dict': {name: Tensor}, 'optimizer'?: {...}}`` with keys named as
mmtracking names them (``detector.backbone.conv1.weight``, ..., ``auxiliary.proj.2.bias``), no
``module.`` prefix.

* :func:`load_checkpoint` reads with ``torch.load(weights_only=True)`` unless ``trust=True``: a file that
  holds anything but tensors and plain Python values (an older checkpoint with numpy values in ``meta``,
  say) is refused with an error that names the file; pass ``trust=True`` only for a file whose origin you
  trust, since full unpickling can run code. A file that is not a checkpoint at all (random bytes, a
  truncated download) is called corrupt and named (:class:`CorruptCheckpointError`). It accepts
  mmtracking's SELSA/TRoI checkpoints: loading one into a CLAB model leaves only the contrastive branch
  (``auxiliary.*``) uninitialised, which is the one mismatch ``strict=True`` tolerates.
* :func:`save_checkpoint` writes atomically (temporary file in the same folder, then ``os.replace``) and
  refuses a ``meta`` that holds anything but primitives, so the file stays readable with
  ``weights_only=True``.
"""
from __future__ import annotations

import logging
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlparse

import torch
from torch import nn

from .io import atomic_open

__all__ = ["StateDictReport", "CorruptCheckpointError", "compare_state_dict", "load_checkpoint", "save_checkpoint",
           "check_primitive", "TOLERATED_MISSING_PREFIXES"]

logger = logging.getLogger(__name__)

#: keys that may be missing from a checkpoint even when ``strict=True``: the contrastive branch, which
#: mmtracking's TRoI checkpoints do not have and which does not take part in inference.
TOLERATED_MISSING_PREFIXES = ("auxiliary.",)


@dataclass
class StateDictReport:
    """How a checkpoint's ``state_dict`` matches a model's.

    Attributes:
        missing: model keys absent from the checkpoint.
        unexpected: checkpoint keys the model does not have.
        mismatched: ``(key, checkpoint shape, model shape)`` for keys present in both with other shapes.
        loaded: number of tensors copied into the model.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    loaded: int = 0

    @property
    def missing_not_tolerated(self) -> list[str]:
        """Missing keys outside :data:`TOLERATED_MISSING_PREFIXES`."""
        return [k for k in self.missing if not k.startswith(TOLERATED_MISSING_PREFIXES)]

    @property
    def strict_ok(self) -> bool:
        """True when only tolerated keys are missing and nothing is unexpected or mis-shaped."""
        return not (self.missing_not_tolerated or self.unexpected or self.mismatched)

    def summary(self, limit: int = 10) -> str:
        def show(keys):
            keys = list(keys)
            more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(str(k) for k in keys[:limit]) + more
        lines = [f"loaded {self.loaded} tensors"]
        if self.missing:
            lines.append(f"missing keys ({len(self.missing)}): {show(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected keys ({len(self.unexpected)}): {show(self.unexpected)}")
        if self.mismatched:
            lines.append(f"shape mismatches ({len(self.mismatched)}): "
                         + show(f"{k} checkpoint {a} vs model {b}" for k, a, b in self.mismatched))
        return "; ".join(lines)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> "OrderedDict[str, Any]":
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def compare_state_dict(model: nn.Module, state_dict: Mapping[str, Any]) -> StateDictReport:
    """Compare checkpoint ``state_dict`` with ``model.state_dict()`` (names and shapes, no copy)."""
    own = _unwrap(model).state_dict()
    report = StateDictReport()
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
    report.missing = [k for k in own if k not in state_dict]
    return report


def _is_url(name: str) -> bool:
    return urlparse(name).scheme in ("http", "https")


class CorruptCheckpointError(ValueError):
    """A file that is not a checkpoint at all: random bytes, a truncated download, another file type."""


#: the first bytes of a checkpoint in torch's legacy (non-zip) format: a pickle (protocol 2) whose first
#: object is torch's magic number 0x1950a86a20f9469cfc6c
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950a86a20f9469cfc6c).to_bytes(10, "little")


def _whole_archive(path: str) -> bool:
    """True when ``path`` is a complete torch checkpoint container: a zip archive whose members all pass
    their CRC check and that holds a ``data.pkl``, or a file in torch's legacy format (its magic number)."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_HEAD))
    if head == _LEGACY_HEAD:
        return True
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in names) and archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _read(filename: str, map_location, trust: bool) -> Any:
    """``torch.load`` a local file or an http(s) URL (downloaded once into torch hub's cache).

    A local file that is not a readable checkpoint container at all raises :class:`CorruptCheckpointError`
    naming it; a complete checkpoint that holds objects other than tensors and plain values (refused by
    ``weights_only=True``) raises ``pickle.UnpicklingError`` with the ``trust=True`` advice.
    """
    weights_only = not trust
    if not _is_url(filename) and not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint file not found: {filename}")
    try:
        if _is_url(filename):
            return torch.hub.load_state_dict_from_url(filename, map_location=map_location, progress=True,
                                                      weights_only=weights_only)
        return torch.load(filename, map_location=map_location, weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        if not _is_url(filename) and not _whole_archive(filename):
            size = os.path.getsize(filename)
            raise CorruptCheckpointError(
                f"checkpoint {filename} is corrupt: it is not a complete torch checkpoint ({size} bytes, neither "
                f"an intact zip archive holding data.pkl nor torch's legacy format); a truncated download or a "
                f"file of another kind? Download or train it again. ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})") from e
        if isinstance(e, pickle.UnpicklingError) and weights_only:
            raise pickle.UnpicklingError(
                f"checkpoint {filename} holds objects other than tensors and plain Python values, so it cannot "
                f"be read with torch.load(weights_only=True). If you trust where the file comes from, load it "
                f"with trust=True (full unpickling can run code). Original error: {e}") from e
        raise


def _extract_state_dict(checkpoint: Any, filename: str) -> "OrderedDict[str, torch.Tensor]":
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
    elif isinstance(checkpoint, Mapping) and "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        state_dict = checkpoint["model"]
    elif isinstance(checkpoint, Mapping) and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict = checkpoint
    else:
        raise ValueError(f"checkpoint {filename}: expected a dict with a 'state_dict' entry (or a plain "
                         f"state dict), got {type(checkpoint).__name__}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise ValueError(f"checkpoint {filename}: 'state_dict' must map names to tensors")
    return _strip_prefix(state_dict)


def load_checkpoint(model: nn.Module, filename_or_url: str, strict: bool = False,
                    map_location: Any = "cpu", trust: bool = False) -> dict:
    """Load a checkpoint (local path or http(s) URL) into ``model``.

    Args:
        model: the model (a DataParallel wrapper is unwrapped).
        filename_or_url: a ``.pth`` file, or a URL downloaded once into torch hub's checkpoint cache.
        strict: raise ``RuntimeError`` (before copying anything) on unexpected keys, shape mismatches or
            missing keys other than ``auxiliary.*``. When False, matching tensors are copied and every
            mismatch is logged.
        map_location: as ``torch.load``.
        trust: allow full unpickling (``weights_only=False``) for older files you trust; off by default.

    Returns:
        The checkpoint as a dict (``meta``, ...) whose ``state_dict`` is the one loaded (``module.``
        prefix removed), plus ``_load_report``: the :class:`StateDictReport` of the comparison.
    """
    checkpoint = _read(filename_or_url, map_location, trust)
    state_dict = _extract_state_dict(checkpoint, filename_or_url)
    report = compare_state_dict(model, state_dict)
    if strict and not report.strict_ok:
        raise RuntimeError(f"checkpoint {filename_or_url} does not match {type(_unwrap(model)).__name__} "
                           f"(strict): {report.summary()}")
    target = _unwrap(model)
    own = target.state_dict()
    bad = {k for k, _, _ in report.mismatched}
    loadable = OrderedDict((k, v) for k, v in state_dict.items() if k in own and k not in bad)
    target.load_state_dict(loadable, strict=False)
    report.loaded = len(loadable)
    tolerated = [k for k in report.missing if k.startswith(TOLERATED_MISSING_PREFIXES)]
    if report.strict_ok:
        msg = f"loaded checkpoint {filename_or_url}: {report.loaded} tensors"
        if tolerated:
            msg += f"; {len(tolerated)} auxiliary.* keys not in the file (the contrastive branch keeps its init)"
        logger.info(msg)
    else:
        logger.warning(f"checkpoint {filename_or_url}: {report.summary()}")
    wrapped = "state_dict" in checkpoint or isinstance(checkpoint.get("model"), Mapping)
    checkpoint = dict(checkpoint) if wrapped else {}   # a bare state dict has no meta to keep
    checkpoint["state_dict"] = state_dict
    checkpoint["_load_report"] = report
    return checkpoint


_PRIMITIVES = (str, int, float, bool, type(None))


def check_primitive(value: Any, where: str = "meta") -> None:
    """Raise ``TypeError`` naming the field if ``value`` holds anything but str/int/float/bool/None in
    (nested) lists, tuples and str-keyed dicts."""
    if isinstance(value, _PRIMITIVES) and type(value).__module__ == "builtins":
        return
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_primitive(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {k!r}")
            check_primitive(item, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__name__} ({value!r:.60}); checkpoint "
                    f"meta may hold only str, int, float, bool, None, lists and dicts (convert numpy values "
                    f"with .item() / .tolist()) so that torch.load(weights_only=True) can read it")


def save_checkpoint(model: nn.Module, path: str, meta: dict | None = None, optimizer=None) -> None:
    """Write ``{'meta', 'state_dict', 'optimizer'?}`` to ``path`` atomically.

    Args:
        model: the model (a DataParallel wrapper is unwrapped); tensors are saved on the CPU.
        path: destination file; parent folders are created.
        meta: primitives only (see :func:`check_primitive`).
        optimizer: a ``torch.optim.Optimizer`` or a dict of them, saved with ``state_dict()``.
    """
    meta = dict(meta or {})
    check_primitive(meta)
    state_dict = OrderedDict((k, v.detach().cpu()) for k, v in _unwrap(model).state_dict().items())
    checkpoint: dict = {"meta": meta, "state_dict": state_dict}
    if optimizer is not None:
        if isinstance(optimizer, dict):
            checkpoint["optimizer"] = {name: opt.state_dict() for name, opt in optimizer.items()}
        else:
            checkpoint["optimizer"] = optimizer.state_dict()
    with atomic_open(path, "wb") as f:
        torch.save(checkpoint, f)
