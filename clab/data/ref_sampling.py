"""Reference-frame sampling for video object detection (SPEC 3.5, 2.7 and 1.11).

Pure functions, no I/O: each takes the number of frames ``num_frames`` (L) of a video and the key frame's
``frame_id`` (0-based) and returns the **frame ids** of the reference frames, sorted by frame id with
duplicates kept. ``CocoVideoDataset`` maps them to image ids with ``CocoVID.get_img_ids_from_vid``.
Randomness comes from an explicit source (``rng``: a ``random.Random``, or the ``random`` module itself by
default, which is what data-loader workers seed), so tests can check exact ids.

Methods (mmtracking 0.14 names and semantics):

- ``uniform``: ``num_ref_imgs`` frames drawn without replacement from ``[left, right]``.
- ``bilateral_uniform`` (training on VID): ``num_ref_imgs // 2`` frames from ``[left, f]`` and as many from
  ``[f, right]``; with ``filter_key_img`` the key frame is removed from both candidate lists.
- ``test_with_adaptive_stride`` (TRoI testing): at frame 0 only,
  ``[round(i * (L - 1) / (num_ref_imgs - 1)) for i in range(num_ref_imgs)]`` with Python's
  round-half-to-even; no references at frames > 0 (the model keeps them cached for the whole video).
- ``test_with_fix_stride``: at frame 0, ``|lo| + 1`` copies of frame 0 followed by
  ``min(round(i * stride), L - 1)`` for i = 1..hi (a ``|lo| + hi + 1`` frame window); at a frame
  ``f % stride == 0`` (f > 0) the one new frame ``min(round(f + hi * stride), L - 1)``; otherwise none.

Here ``left = max(0, f + lo)`` and ``right = min(f + hi, L - 1)`` with ``frame_range = [lo, hi]``; an int
``r`` means ``[-r, r]``.

The lone-reference rule (CLAB, SPEC 1.11) and where ``clab`` differs from the published code:
the published CLAB dataset appends a second copy of the reference whenever exactly one reference was
found, for every method. That keeps T = 2 at the first/last frame of a video in ``bilateral_uniform``
training (one side is empty), which ``ref_img`` needs to stack as (N, T, 3, H, W) with N > 1, but it also
fires at every frame f > 0 of ``test_with_fix_stride``, where exactly one new frame is the intended
result: the memory window then grows by one frame per step and its centre no longer points at the
current frame. ``clab`` applies the rule only to the training samplers (``uniform`` and
``bilateral_uniform``, switch ``duplicate_single_ref``, on by default) and only when more than one
reference was asked for; the test samplers never duplicate. A video with a single frame still yields no
reference at all, as in the published code.
"""
from __future__ import annotations

import random
import warnings
from typing import Sequence

TRAIN_METHODS = ("uniform", "bilateral_uniform")
TEST_METHODS = ("test_with_adaptive_stride", "test_with_fix_stride")
METHODS = TRAIN_METHODS + TEST_METHODS


def frame_range_bounds(frame_range: int | Sequence[int]) -> tuple[int, int]:
    """Normalise ``frame_range``: an int ``r >= 0`` -> ``(-r, r)``; a pair ``[lo, hi]`` with
    ``lo <= 0 <= hi`` is returned as a tuple. Raises ``ValueError``/``TypeError`` otherwise."""
    if isinstance(frame_range, bool):
        raise TypeError(f"frame_range must be an int or a pair of ints, got {frame_range!r}")
    if isinstance(frame_range, int):
        if frame_range < 0:
            raise ValueError(f"frame_range must be >= 0 when given as an int, got {frame_range}")
        return -frame_range, frame_range
    if isinstance(frame_range, (list, tuple)):
        if len(frame_range) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in frame_range):
            raise TypeError(f"frame_range must be a pair of ints [lo, hi], got {frame_range!r}")
        lo, hi = frame_range
        if lo > 0 or hi < 0:
            raise ValueError(f"frame_range [lo, hi] needs lo <= 0 <= hi, got {list(frame_range)}")
        return lo, hi
    raise TypeError(f"frame_range must be an int or a pair of ints, got {type(frame_range).__name__}")


def resolve_num_ref_imgs(method: str, frame_range: int | Sequence[int], num_ref_imgs: int) -> int:
    """The number of references a test method really uses: ``hi - lo``.

    For the test methods mmtracking warns and resets ``num_ref_imgs`` to ``hi - lo`` when they differ;
    this function does the same (``UserWarning``) and returns the value to use. For training methods it
    returns ``num_ref_imgs`` unchanged.
    """
    if method not in METHODS:
        raise ValueError(f"unknown reference sampling method {method!r}; expected one of {METHODS}")
    lo, hi = frame_range_bounds(frame_range)
    if method in TEST_METHODS and hi - lo != num_ref_imgs:
        warnings.warn(
            f"ref_img_sampler: frame_range [{lo}, {hi}] spans {hi - lo} frames but num_ref_imgs="
            f"{num_ref_imgs}; using num_ref_imgs={hi - lo} for {method}", UserWarning, stacklevel=2)
        return hi - lo
    return num_ref_imgs


def _window(num_frames: int, frame_id: int, frame_range) -> tuple[int, int, int, int]:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if not 0 <= frame_id < num_frames:
        raise ValueError(f"frame_id {frame_id} is outside the video's frames 0..{num_frames - 1}")
    lo, hi = frame_range_bounds(frame_range)
    return lo, hi, max(0, frame_id + lo), min(frame_id + hi, num_frames - 1)


def _duplicate_lone(refs: list[int], num_ref_imgs: int, duplicate_single_ref: bool) -> list[int]:
    # CLAB's rule (SPEC 1.11), restricted to training samplers that asked for more than one reference.
    if duplicate_single_ref and num_ref_imgs > 1 and len(refs) == 1:
        return refs * 2
    return refs


def uniform(num_frames: int, frame_id: int, frame_range: int | Sequence[int], num_ref_imgs: int = 1,
            filter_key_img: bool = True, rng=None, duplicate_single_ref: bool = True) -> list[int]:
    """``min(num_ref_imgs, n)`` frames drawn without replacement from the ``n`` candidates
    ``[left, right]`` (without the key frame if ``filter_key_img``). Returns sorted frame ids; a lone
    reference is duplicated when ``duplicate_single_ref`` and ``num_ref_imgs > 1``."""
    rng = random if rng is None else rng
    _, _, left, right = _window(num_frames, frame_id, frame_range)
    candidates = list(range(left, right + 1))
    if filter_key_img and frame_id in candidates:
        candidates.remove(frame_id)
    refs = rng.sample(candidates, min(num_ref_imgs, len(candidates)))
    return _duplicate_lone(sorted(refs), num_ref_imgs, duplicate_single_ref)


def bilateral_uniform(num_frames: int, frame_id: int, frame_range: int | Sequence[int],
                      num_ref_imgs: int = 2, filter_key_img: bool = True, rng=None,
                      duplicate_single_ref: bool = True) -> list[int]:
    """``num_ref_imgs // 2`` frames drawn from ``[left, f]`` and as many from ``[f, right]`` (the key
    frame ``f`` removed from both if ``filter_key_img``; fewer if a side is short). Returns sorted frame
    ids; a lone reference (a video boundary with ``num_ref_imgs=2``) is duplicated when
    ``duplicate_single_ref``. ``num_ref_imgs`` must be even."""
    if num_ref_imgs % 2:
        raise ValueError(f"bilateral_uniform needs an even num_ref_imgs, got {num_ref_imgs}")
    rng = random if rng is None else rng
    _, _, left, right = _window(num_frames, frame_id, frame_range)
    refs: list[int] = []
    for candidates in (list(range(left, frame_id + 1)), list(range(frame_id, right + 1))):
        if filter_key_img:
            candidates.remove(frame_id)
        refs.extend(rng.sample(candidates, min(num_ref_imgs // 2, len(candidates))))
    return _duplicate_lone(sorted(refs), num_ref_imgs, duplicate_single_ref)


def test_with_adaptive_stride(num_frames: int, frame_id: int, num_ref_imgs: int) -> list[int]:
    """At frame 0: ``num_ref_imgs`` frames spread evenly over the whole video,
    ``round(i * stride)`` with ``stride = (L - 1) / (num_ref_imgs - 1)`` (Python round-half-to-even;
    duplicates kept for videos shorter than ``num_ref_imgs``). At frames > 0: ``[]``."""
    _window(num_frames, frame_id, 0)
    if num_ref_imgs < 2:
        raise ValueError(f"test_with_adaptive_stride needs num_ref_imgs >= 2, got {num_ref_imgs}")
    if frame_id != 0:
        return []
    stride = float(num_frames - 1) / (num_ref_imgs - 1)
    return sorted(round(i * stride) for i in range(num_ref_imgs))


def test_with_fix_stride(num_frames: int, frame_id: int, frame_range: int | Sequence[int],
                         stride: int = 1) -> list[int]:
    """A sliding window of ``|lo| + hi + 1`` frames.

    At frame 0: ``|lo| + 1`` copies of frame 0, then ``min(round(i * stride), L - 1)`` for i = 1..hi
    (e.g. ``[-15, 15]``: 16 zeros and frames 1..15, the model's key index being ``|lo|``). At a frame
    ``f > 0`` with ``f % stride == 0``: the single new frame ``min(round(f + hi * stride), L - 1)``.
    Otherwise ``[]``. Never duplicated (see the module docstring).
    """
    if stride <= 0:
        raise ValueError(f"test_with_fix_stride needs stride > 0, got {stride}")
    lo, hi, _, _ = _window(num_frames, frame_id, frame_range)
    last = num_frames - 1
    if frame_id == 0:
        return [0] * (-lo + 1) + [min(round(i * stride), last) for i in range(1, hi + 1)]
    if frame_id % stride == 0:
        return [min(round(frame_id + hi * stride), last)]
    return []


def sample_ref_frames(method: str, num_frames: int, frame_id: int, frame_range: int | Sequence[int],
                      num_ref_imgs: int = 1, stride: int = 1, filter_key_img: bool = True, rng=None,
                      duplicate_single_ref: bool = True) -> list[int]:
    """Dispatch to the sampler named ``method`` (see ``METHODS``); returns sorted reference frame ids.
    For the test methods ``num_ref_imgs`` should already be resolved with ``resolve_num_ref_imgs``."""
    if method == "uniform":
        return uniform(num_frames, frame_id, frame_range, num_ref_imgs, filter_key_img, rng,
                       duplicate_single_ref)
    if method == "bilateral_uniform":
        return bilateral_uniform(num_frames, frame_id, frame_range, num_ref_imgs, filter_key_img, rng,
                                 duplicate_single_ref)
    if method == "test_with_adaptive_stride":
        return test_with_adaptive_stride(num_frames, frame_id, num_ref_imgs)
    if method == "test_with_fix_stride":
        return test_with_fix_stride(num_frames, frame_id, frame_range, stride)
    raise ValueError(f"unknown reference sampling method {method!r}; expected one of {METHODS}")
