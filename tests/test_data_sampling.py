"""Reference-frame sampling (clab.data.ref_sampling): exact frame ids of every method (SPEC 3.5, 2.7, 1.11)."""
from __future__ import annotations

import random
import warnings

import pytest

from clab.data import ref_sampling as rs


# ------------------------------------------------------------------------------------------ frame_range
def test_frame_range_int_is_symmetric_and_pairs_are_checked():
    assert rs.frame_range_bounds(9) == (-9, 9)
    assert rs.frame_range_bounds(0) == (0, 0)
    assert rs.frame_range_bounds([-7, 7]) == (-7, 7)
    assert rs.frame_range_bounds((-15, 3)) == (-15, 3)
    with pytest.raises(ValueError, match="frame_range"):
        rs.frame_range_bounds(-1)
    with pytest.raises(ValueError, match="lo <= 0 <= hi"):
        rs.frame_range_bounds([1, 3])
    with pytest.raises(TypeError, match="frame_range"):
        rs.frame_range_bounds([-1])
    with pytest.raises(TypeError, match="frame_range"):
        rs.frame_range_bounds(1.5)


def test_test_methods_warn_and_reset_num_ref_imgs():
    with pytest.warns(UserWarning, match="num_ref_imgs=14"):
        assert rs.resolve_num_ref_imgs("test_with_adaptive_stride", [-7, 7], 10) == 14
    with pytest.warns(UserWarning, match="num_ref_imgs=30"):
        assert rs.resolve_num_ref_imgs("test_with_fix_stride", 15, 31) == 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rs.resolve_num_ref_imgs("test_with_adaptive_stride", [-7, 7], 14) == 14
        assert rs.resolve_num_ref_imgs("bilateral_uniform", 9, 2) == 2  # training methods: unchanged
    with pytest.raises(ValueError, match="unknown reference sampling method 'bilateral'"):
        rs.resolve_num_ref_imgs("bilateral", 9, 2)


# ---------------------------------------------------------------------------- test_with_adaptive_stride
def test_adaptive_stride_rounds_half_to_even():
    # stride 1.5: 1.5 -> 2, 4.5 -> 4, 7.5 -> 8 (Python round, half to even)
    assert rs.test_with_adaptive_stride(10, 0, 7) == [0, 2, 3, 4, 6, 8, 9]
    # stride 1.25: 2.5 -> 2, 3.75 -> 4
    assert rs.test_with_adaptive_stride(6, 0, 5) == [0, 1, 2, 4, 5]


def test_adaptive_stride_spans_the_video_and_keeps_duplicates():
    refs = rs.test_with_adaptive_stride(300, 0, 14)
    assert len(refs) == 14 and refs[0] == 0 and refs[-1] == 299
    assert refs == [round(i * 299 / 13) for i in range(14)]
    # a video shorter than num_ref_imgs: duplicates kept, sorted
    assert rs.test_with_adaptive_stride(3, 0, 14) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert rs.test_with_adaptive_stride(1, 0, 14) == [0] * 14  # single-frame video
    assert rs.test_with_adaptive_stride(15, 0, 14) == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14]


def test_adaptive_stride_gives_references_only_at_frame_zero():
    assert rs.test_with_adaptive_stride(20, 1, 14) == []
    assert rs.test_with_adaptive_stride(20, 19, 14) == []
    with pytest.raises(ValueError, match="num_ref_imgs >= 2"):
        rs.test_with_adaptive_stride(20, 0, 1)
    with pytest.raises(ValueError, match="frame_id 20"):
        rs.test_with_adaptive_stride(20, 20, 14)


# --------------------------------------------------------------------------------- test_with_fix_stride
def test_fix_stride_first_frame_fills_the_left_half_with_frame_zero():
    assert rs.test_with_fix_stride(20, 0, [-3, 3]) == [0, 0, 0, 0, 1, 2, 3]
    window = rs.test_with_fix_stride(100, 0, [-15, 15])
    assert window == [0] * 16 + list(range(1, 16)) and len(window) == 31  # SPEC 2.7: 31-frame window
    assert rs.test_with_fix_stride(20, 0, [-3, 3], stride=2) == [0, 0, 0, 0, 2, 4, 6]
    assert rs.test_with_fix_stride(3, 0, [-3, 3]) == [0, 0, 0, 0, 1, 2, 2]  # clipped to the last frame


def test_fix_stride_later_frames_add_exactly_one_new_frame_never_duplicated():
    assert rs.test_with_fix_stride(20, 5, [-3, 3]) == [8]
    assert rs.test_with_fix_stride(20, 18, [-3, 3]) == [19]  # clipped
    assert rs.test_with_fix_stride(20, 19, [-3, 3]) == [19]
    assert rs.test_with_fix_stride(20, 4, [-3, 3], stride=2) == [10]
    assert rs.test_with_fix_stride(20, 3, [-3, 3], stride=2) == []  # 3 % 2 != 0
    # CLAB's published code would return [8, 8] here (SPEC 1.11); clab keeps the single new frame
    assert len(rs.sample_ref_frames("test_with_fix_stride", 20, 5, [-3, 3], num_ref_imgs=6)) == 1


# ------------------------------------------------------------------------------------ bilateral_uniform
def test_bilateral_uniform_draws_one_frame_per_side_in_draw_order_of_the_rng():
    for seed in range(20):
        refs = rs.bilateral_uniform(30, 12, 9, 2, rng=random.Random(seed))
        twin = random.Random(seed)  # the same draws by hand: left side first, then right side
        left = twin.sample(list(range(3, 12)), 1)
        right = twin.sample(list(range(13, 22)), 1)
        assert refs == left + right
        assert 3 <= refs[0] <= 11 and 13 <= refs[1] <= 21


def test_bilateral_uniform_covers_all_frames_of_each_side_not_only_key_frames():
    rng = random.Random(0)
    seen = set()
    for _ in range(400):
        seen.update(rs.bilateral_uniform(30, 12, 9, 2, rng=rng))
    assert seen == set(range(3, 12)) | set(range(13, 22))


def test_bilateral_uniform_duplicates_a_lone_reference_at_video_boundaries():
    rng = random.Random(1)
    for _ in range(20):
        first = rs.bilateral_uniform(30, 0, 9, 2, rng=rng)
        assert len(first) == 2 and first[0] == first[1] and 1 <= first[0] <= 9
        last = rs.bilateral_uniform(30, 29, 9, 2, rng=rng)
        assert len(last) == 2 and last[0] == last[1] and 20 <= last[0] <= 28
    assert rs.bilateral_uniform(2, 0, 9, 2, rng=rng) == [1, 1]
    assert rs.bilateral_uniform(2, 1, 9, 2, rng=rng) == [0, 0]
    # switched off: the published mmtracking behaviour (one reference)
    one = rs.bilateral_uniform(30, 0, 9, 2, rng=rng, duplicate_single_ref=False)
    assert len(one) == 1 and 1 <= one[0] <= 9


def test_bilateral_uniform_short_videos_and_key_filtering():
    rng = random.Random(2)
    assert rs.bilateral_uniform(1, 0, 9, 2, rng=rng) == []  # single-frame video: nothing to duplicate
    assert rs.bilateral_uniform(1, 0, 9, 2, filter_key_img=False, rng=rng) == [0, 0]
    refs = rs.bilateral_uniform(30, 12, 9, 4, rng=rng)
    assert len(refs) == 4 and refs == sorted(refs) and 12 not in refs
    assert sum(r < 12 for r in refs) == 2
    with pytest.raises(ValueError, match="even num_ref_imgs"):
        rs.bilateral_uniform(30, 12, 9, 3, rng=rng)


# --------------------------------------------------------------------------------------------- uniform
def test_uniform_samples_without_replacement_around_the_key():
    rng = random.Random(3)
    seen = set()
    for _ in range(200):
        refs = rs.uniform(10, 5, 2, 2, rng=rng)
        assert len(refs) == 2 and refs[0] < refs[1] and set(refs) <= {3, 4, 6, 7}
        seen.update(refs)
    assert seen == {3, 4, 6, 7}
    assert len(rs.uniform(10, 5, 2, 1, rng=rng)) == 1  # one asked, one given: no duplication
    assert rs.uniform(2, 0, 5, 2, rng=rng) == [1, 1]  # lone reference duplicated
    assert rs.uniform(2, 0, 5, 2, rng=rng, duplicate_single_ref=False) == [1]
    assert rs.uniform(5, 2, [0, 0], 2, filter_key_img=False, rng=rng) == [2, 2]


def test_dispatch_and_unknown_method():
    assert rs.sample_ref_frames("test_with_adaptive_stride", 10, 0, [-3, 3], num_ref_imgs=7) == [
        0, 2, 3, 4, 6, 8, 9]
    assert rs.sample_ref_frames("bilateral_uniform", 2, 0, 9, num_ref_imgs=2, rng=random.Random(0)) == [1, 1]
    with pytest.raises(ValueError, match="unknown reference sampling method"):
        rs.sample_ref_frames("random", 10, 0, 3)
