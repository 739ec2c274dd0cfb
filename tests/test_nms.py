"""The NMS that stops at max_num (clab.models.nms) against mmcv's and mmdet's, and PrefixNMSRPNHead against
mmdet's RPNHead: the same kept boxes, in the same order, bit for bit."""
from __future__ import annotations

import types

import numpy as np
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


@pytest.fixture
def early_stops(monkeypatch) -> list:
    """Counts the runs of the early-stop loop (nms._greedy_prefix)."""
    runs = []
    loop = nms._greedy_prefix

    def counted(*args):
        runs.append(args[-1])
        return loop(*args)

    nms._reproduces_mmcv()  # the build check runs the loop too: before counting
    monkeypatch.setattr(nms, '_greedy_prefix', counted)
    return runs


@pytest.mark.parametrize('cfg, fast', [(dict(type='nms', iou_threshold=0.5), True),
                                       (dict(type='nms', iou_threshold=0.6, max_num=30), True),
                                       (dict(type='nms', iou_threshold=0.5, offset=1), True),
                                       (dict(type='nms', iou_threshold=0.5, score_threshold=0.3), False),
                                       (dict(type='nms', iou_threshold=0.5, split_thr=100), False),
                                       (dict(type='nms', iou_threshold=0.5, class_agnostic=True), False),
                                       (dict(type='soft_nms', iou_threshold=0.5), False),
                                       (None, False)])
@pytest.mark.parametrize('max_num', [-1, 1, 40])
def test_batched_nms_is_mmcvs_truncated(cfg, fast, max_num, early_stops):
    """The same dets and indices as mmcv's batched_nms cut to max_num; the early-stop loop runs for plain
    NMS below split_thr with a limit, and mmcv's functions for the rest (score threshold, per-class split,
    class-agnostic, soft-NMS, no NMS)."""
    boxes, scores, ids = _clustered_boxes(1200, seed=4, classes=7)
    dets, keep = mmcv_batched_nms(boxes, scores, ids, cfg)
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    got_dets, got_keep = nms.batched_nms(boxes, scores, ids, cfg, max_num)
    assert torch.equal(got_keep, keep)
    assert torch.equal(got_dets, dets)
    limited = max_num > 0 or (cfg or {}).get('max_num', -1) > 0
    assert len(early_stops) == int(fast and limited)


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


@pytest.mark.parametrize('max_per_img', [300, 20, -1])
def test_prefix_nms_rpn_head_gives_rpn_heads_proposals(max_per_img, early_stops):
    """PrefixNMSRPNHead's proposals are RPNHead's with the same weights, also for max_per_img = -1, where
    RPNHead's slice drops the last proposal (kept as it is)."""
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
        assert w.size(0) == max_per_img if max_per_img > 0 else w.size(0) > 300
        assert torch.equal(g, w)
    # the early-stop loop ran once per image where there is a limit
    assert early_stops == ([max_per_img] * 2 if max_per_img > 0 else [])


@pytest.mark.parametrize('rescale', [False, True])
@pytest.mark.parametrize('num_rois, score_thr', [(300, 0.0001), (300, 1.5), (400, 0.0001)])
def test_roi_head_detections_are_get_bboxes_with_its_nms(rescale, num_rois, score_thr):
    """SelsaRoIHead.detections (get_bboxes without NMS, then clab's multiclass NMS) against mmdet's
    get_bboxes with the test config: 300 RoIs x 30 classes, also with nothing above score_thr, and 400 RoIs
    (12,000 boxes: mmcv's per-class split)."""
    from clab.models import SelsaRoIHead
    head_cfg = dict(type='SelsaBBoxHead', in_channels=8, fc_out_channels=16, roi_feat_size=7, num_classes=30,
                    bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[0.1] * 4),
                    aggregator=dict(type='SelsaAggregator', in_channels=16, num_attention_blocks=4))
    head = build_head(head_cfg)
    test_cfg = ConfigDict(score_thr=score_thr, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    gen = torch.Generator().manual_seed(7)
    boxes, _, _ = _clustered_boxes(num_rois, seed=8)
    rois = torch.cat([torch.zeros(num_rois, 1), boxes.clamp(0, 600)], dim=1)
    cls_score = torch.randn(num_rois, 31, generator=gen) * 2
    bbox_pred = torch.randn(num_rois, 120, generator=gen)
    meta = dict(img_shape=(608, 1008, 3), scale_factor=np.array([1.6, 1.5, 1.6, 1.5], dtype=np.float32))
    owner = types.SimpleNamespace(bbox_head=head, test_cfg=test_cfg)
    got = SelsaRoIHead.detections(owner, rois, cls_score, bbox_pred, meta, rescale)
    want = head.get_bboxes(rois, cls_score, bbox_pred, meta['img_shape'], meta['scale_factor'], rescale=rescale,
                           cfg=test_cfg)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert got[0].size(0) == (0 if score_thr > 1 else 100)


def test_threshold_sweep_straddles_the_threshold():
    """The build check's sweep really decides pairs both ways: mmcv keeps the second box of some pairs and
    suppresses it in others, at both thresholds."""
    gen = torch.Generator().manual_seed(0)
    for threshold in (0.5, 0.7):
        boxes, scores = nms._threshold_sweep(threshold, gen)
        kept = set(mmcv_nms(boxes, scores, threshold)[1].tolist())
        second_kept = sum(2 * i + 1 in kept for i in range(boxes.size(0) // 2))
        assert 20 < second_kept < boxes.size(0) // 2 - 20
