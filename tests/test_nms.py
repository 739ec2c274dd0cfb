"""The NMS that stops at max_num (clab.models.nms) against mmcv's and mmdet's, and PrefixNMSRPNHead against
mmdet's RPNHead: the same kept boxes, in the same order, bit for bit."""
from __future__ import annotations

import pytest
import torch
from mmcv.ops import batched_nms as mmcv_batched_nms
from mmcv.ops import nms as mmcv_nms
from mmcv.utils import ConfigDict
from mmdet.core import multiclass_nms as mmdet_multiclass_nms
from mmdet.models import build_head

from clab.models import PrefixNMSRPNHead, nms


def _clustered_boxes(n: int, seed: int, classes: int = 1):
    """n boxes around n // 25 centres (heavy overlap), a few exact duplicates, zero-size boxes and equal
    scores; Tensor[n, 4], Tensor[n], Tensor[n] long class ids."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.rand(max(1, n // 25), 2, generator=gen) * 600
    xy = centers.repeat_interleave(25, dim=0)[:n] + torch.randn(n, 2, generator=gen) * 10
    wh = torch.rand(n, 2, generator=gen) * 80 + 2
    wh[::53] = 0
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    boxes[1::40] = boxes[0::40]
    scores = torch.rand(n, generator=gen)
    scores[::9] = 0.25
    return boxes, scores, torch.randint(0, classes, (n,), generator=gen)


@pytest.mark.parametrize('threshold', [0.3, 0.5, 0.7])
@pytest.mark.parametrize('offset', [0, 1])
def test_greedy_nms_is_the_prefix_of_mmcvs(threshold, offset):
    boxes, scores, _ = _clustered_boxes(1500, seed=1)
    expected = mmcv_nms(boxes, scores, threshold, offset=offset)[1]
    assert 10 < expected.numel() < 1500
    for max_num in (1, 2, 50, expected.numel() - 1, expected.numel(), expected.numel() + 10):
        got = nms._greedy_prefix(boxes, scores, threshold, offset, max_num)
        assert torch.equal(got, expected[:max_num]), max_num
        assert torch.equal(nms.greedy_nms(boxes, scores, threshold, offset, max_num), expected[:max_num])


def test_greedy_nms_small_cases():
    empty = torch.zeros(0, 4)
    assert nms.greedy_nms(empty, torch.zeros(0), 0.5, max_num=5).numel() == 0
    one = torch.tensor([[0., 0., 10., 10.]])
    assert nms.greedy_nms(one, torch.tensor([0.3]), 0.5, max_num=5).tolist() == [0]
    # identical boxes: only the best one survives; disjoint boxes: all, in score order
    same = one.repeat(4, 1)
    assert nms.greedy_nms(same, torch.tensor([0.1, 0.9, 0.5, 0.2]), 0.5, max_num=3).tolist() == [1]
    apart = torch.tensor([[0., 0., 1., 1.], [5., 5., 6., 6.], [9., 9., 10., 10.]])
    assert nms.greedy_nms(apart, torch.tensor([0.2, 0.7, 0.4]), 0.5, max_num=10).tolist() == [1, 2, 0]


def test_greedy_nms_without_a_limit_is_mmcvs_op(monkeypatch):
    boxes, scores, _ = _clustered_boxes(200, seed=2)
    monkeypatch.setattr(nms, '_greedy_prefix', lambda *a: pytest.fail('the early-stop loop ran'))
    assert torch.equal(nms.greedy_nms(boxes, scores, 0.5, max_num=-1), mmcv_nms(boxes, scores, 0.5)[1])


def test_the_build_check_rejects_a_loop_that_differs(monkeypatch):
    """_reproduces_mmcv must fail for a loop whose IoU differs from the kernel's (here: offset ignored),
    and greedy_nms must then fall back to mmcv's op."""
    real = nms._greedy_prefix
    monkeypatch.setattr(nms, '_greedy_prefix', lambda b, s, t, offset, m: real(b, s, t, 0, m))
    nms._reproduces_mmcv.cache_clear()
    try:
        assert nms._reproduces_mmcv() is False
        boxes, scores, _ = _clustered_boxes(300, seed=3)
        assert torch.equal(nms.greedy_nms(boxes, scores, 0.5, offset=1, max_num=20),
                           mmcv_nms(boxes, scores, 0.5, offset=1)[1][:20])
    finally:
        nms._reproduces_mmcv.cache_clear()
    monkeypatch.undo()
    assert nms._reproduces_mmcv() is True


@pytest.mark.parametrize('cfg', [dict(type='nms', iou_threshold=0.5),
                                 dict(type='nms', iou_threshold=0.6, max_num=30),
                                 dict(type='nms', iou_threshold=0.5, split_thr=100),  # mmcv's per-class loop
                                 dict(type='nms', iou_threshold=0.5, class_agnostic=True),
                                 dict(type='soft_nms', iou_threshold=0.5)])
@pytest.mark.parametrize('max_num', [-1, 1, 40])
def test_batched_nms_is_mmcvs_truncated(cfg, max_num):
    boxes, scores, ids = _clustered_boxes(1200, seed=4, classes=7)
    dets, keep = mmcv_batched_nms(boxes, scores, ids, cfg)
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    got_dets, got_keep = nms.batched_nms(boxes, scores, ids, cfg, max_num)
    assert torch.equal(got_keep, keep)
    assert torch.equal(got_dets, dets)


def test_batched_nms_of_no_boxes():
    dets, keep = nms.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                                 dict(type='nms', iou_threshold=0.5), 10)
    assert dets.shape == (0, 5) and keep.shape == (0,) and keep.dtype == torch.long


@pytest.mark.parametrize('class_specific', [True, False])
@pytest.mark.parametrize('score_thr', [0.0001, 0.05, 2.0])
def test_multiclass_nms_is_mmdets(class_specific, score_thr):
    gen = torch.Generator().manual_seed(5)
    n, classes = 300, 30
    base, _, _ = _clustered_boxes(n, seed=6)
    jitter = torch.randn(n, classes, 4, generator=gen) * 3
    bboxes = (base[:, None] + jitter).reshape(n, -1) if class_specific else base
    scores = torch.randn(n, classes + 1, generator=gen).mul_(3).softmax(dim=1)
    cfg = dict(type='nms', iou_threshold=0.5)
    want_dets, want_labels = mmdet_multiclass_nms(bboxes, scores, score_thr, cfg, 100)
    got_dets, got_labels = nms.multiclass_nms(bboxes, scores, score_thr, cfg, 100)
    assert torch.equal(got_dets, want_dets)
    assert torch.equal(got_labels, want_labels)
    if score_thr < 1:
        assert got_dets.size(0) == 100


@pytest.mark.parametrize('max_per_img', [300, 20])
def test_prefix_nms_rpn_head_gives_rpn_heads_proposals(max_per_img):
    torch.manual_seed(0)
    cfg = dict(type='RPNHead', in_channels=16, feat_channels=16,
               anchor_generator=dict(type='AnchorGenerator', scales=[4, 8, 16, 32], ratios=[0.5, 1.0, 2.0],
                                     strides=[16]),
               bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
               test_cfg=ConfigDict(nms_pre=6000, max_per_img=max_per_img, nms=dict(type='nms', iou_threshold=0.7),
                                   min_bbox_size=0))
    plain = build_head(cfg).eval()
    prefix = build_head(dict(cfg, type='PrefixNMSRPNHead')).eval()
    assert isinstance(prefix, PrefixNMSRPNHead)
    prefix.load_state_dict(plain.state_dict())
    x = (torch.randn(2, 16, 38, 63),)
    metas = [dict(img_shape=(608, 1008, 3), scale_factor=1.0, pad_shape=(608, 1008, 3))] * 2
    with torch.no_grad():
        want = plain.simple_test_rpn(x, metas)
        got = prefix.simple_test_rpn(x, metas)
    for w, g in zip(want, got):
        assert w.size(0) == max_per_img
        assert torch.equal(g, w)
