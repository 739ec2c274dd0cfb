"""Tests of the SELSA + Temporal RoI Align RoI head (SPEC 1.9, 1.10, 2.4-2.7, 5) on real mmdet/mmcv code.

Tiny sizes (64 channels, fc 128, 4 classes, 12x16 maps of a 192x256 image) except the state-dict check,
which builds the R-50 TRoI sizes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.core import bbox2roi
from mmdet.models.builder import MODELS

from clab.models.reference_cache import ReferenceCache
from clab.models.selsa_aggregator import SelsaAggregator
from clab.models.selsa_bbox_head import SelsaBBoxHead
from clab.models.selsa_roi_head import SelsaRoIHead
from clab.models import native, temporal_roi_align
from clab.models.temporal_roi_align import TemporalRoIAlign

C, FC, NUM_CLASSES = 64, 128, 4
MAP_H, MAP_W, STRIDE = 12, 16, 16
IMG_H, IMG_W = MAP_H * STRIDE, MAP_W * STRIDE


def extractor_cfg(channels: int = C, blocks: int = 4, epsilon: float = 1e-10,
                  chunk: int = 2**22) -> dict:
    return dict(type='TemporalRoIAlign', num_most_similar_points=2,
                num_temporal_attention_blocks=blocks, epsilon=epsilon, similarity_chunk_elements=chunk,
                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2),
                out_channels=channels, featmap_strides=[STRIDE])


def roi_head_cfg(channels: int = C, fc: int = FC, num_classes: int = NUM_CLASSES,
                 sampler_num: int = 64) -> dict:
    return dict(
        type='SelsaRoIHead',
        bbox_roi_extractor=extractor_cfg(channels),
        bbox_head=dict(
            type='SelsaBBoxHead', in_channels=channels, fc_out_channels=fc, roi_feat_size=7,
            num_classes=num_classes, num_shared_fcs=3,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[0.2] * 4),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
            aggregator=dict(type='SelsaAggregator', in_channels=fc, num_attention_blocks=16)),
        train_cfg=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                          ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=sampler_num, pos_fraction=0.25, neg_pos_ub=-1,
                         add_gt_as_proposals=True),
            pos_weight=-1, debug=False),
        test_cfg=dict(score_thr=0.0001, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))


def random_boxes(gen: torch.Generator, num: int, with_score: bool = True) -> torch.Tensor:
    """Tensor[num, 5] (or 4) x1y1x2y2[score] inside the IMG_W x IMG_H image."""
    wh = 16 + torch.rand(num, 2, generator=gen) * 80
    xy = torch.rand(num, 2, generator=gen) * (torch.tensor([IMG_W, IMG_H]) - wh)
    boxes = torch.cat([xy, xy + wh], dim=1)
    if with_score:
        boxes = torch.cat([boxes, torch.rand(num, 1, generator=gen)], dim=1)
    return boxes


def random_maps(gen: torch.Generator, num: int, channels: int = C) -> torch.Tensor:
    """Non-negative maps (like the neck output after ReLU), Tensor[num, channels, MAP_H, MAP_W]."""
    return torch.rand(num, channels, MAP_H, MAP_W, generator=gen)


def reference_troi(extractor: TemporalRoIAlign, roi_feats: torch.Tensor,
                   ref_maps: torch.Tensor) -> torch.Tensor:
    """SPEC 2.4 written out directly: the whole similarity matrix at once, then top-2, attention."""
    eps = extractor.epsilon
    n, channels, rh, rw = roi_feats.shape
    k_maps, _, h, w = ref_maps.shape
    r_hat = roi_feats / (roi_feats.norm(dim=1, keepdim=True) + eps)
    f_hat = ref_maps / (ref_maps.norm(dim=1, keepdim=True) + eps)
    sim = r_hat.permute(0, 2, 3, 1).reshape(-1, channels) @ f_hat.permute(1, 0, 2, 3).reshape(channels, -1)
    values, idx = sim.view(-1, k_maps, h * w).topk(2, dim=2)  # (n*49, K, 2)
    weights = values.softmax(dim=2)
    raw = ref_maps.permute(0, 2, 3, 1).reshape(k_maps, h * w, channels)
    ms = torch.stack([(raw[k][idx[:, k]] * weights[:, k, :, None]).sum(1) for k in range(k_maps)])
    ms = ms.view(k_maps, n, rh, rw, channels).permute(0, 1, 4, 2, 3)
    x = torch.cat([roi_feats[None], ms])  # (K+1, n, C, 7, 7)
    blocks = extractor.num_temporal_attention_blocks
    if blocks == 0:
        return x.mean(0)
    conv = extractor.embed_network.conv
    emb = F.conv2d(x.flatten(0, 1), conv.weight, conv.bias, padding=1)
    d = channels // blocks
    emb = emb.view(k_maps + 1, n, blocks, d, rh, rw)
    alpha = ((emb * emb[:1]).sum(3, keepdim=True) / math.sqrt(d)).softmax(0)  # over the K+1 frames
    return (x.view(k_maps + 1, n, blocks, d, rh, rw) * alpha).sum(0).view(n, channels, rh, rw)


@pytest.fixture(scope='module')
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ---------------------------------------------------------------------------- TemporalRoIAlign
@pytest.mark.parametrize('blocks', [4, 0])
def test_troi_matches_unchunked_reference_for_several_chunk_sizes(gen, blocks):
    extractor = MODELS.build(extractor_cfg(blocks=blocks))
    feats = random_maps(gen, 1)
    ref_maps = random_maps(gen, 3)
    rois = bbox2roi([random_boxes(gen, 9)])
    with torch.no_grad():
        roi_feats = extractor((feats,), rois)
        expected = reference_troi(extractor, roi_feats, ref_maps)
        positions = 49 * MAP_H * MAP_W
        outs = {}
        for chunk in (1, positions * 2, positions * 4 + 7, 2**30):  # 1, 2, 4 and all 9 RoIs a chunk
            extractor.similarity_chunk_elements = chunk
            outs[chunk] = extractor((feats,), rois, ref_feats=[ref_maps])
    assert expected.shape == (9, C, 7, 7)
    for chunk, out in outs.items():
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5, msg=f'chunk {chunk}')
    # the aggregation changes the features (not the identity on the key RoI features)
    assert (expected - roi_feats).abs().max() > 1e-2


def test_troi_gradients_match_the_unchunked_reference(gen):
    extractor = MODELS.build(extractor_cfg(chunk=49 * MAP_H * MAP_W * 3))
    conv = extractor.embed_network.conv
    feats, refs = random_maps(gen, 1), random_maps(gen, 2)
    rois = bbox2roi([random_boxes(gen, 7)])
    with torch.no_grad():
        roi_feats = extractor((feats,), rois)
    probe = torch.randn(roi_feats.shape, generator=gen)
    grads = []
    for run in ('chunked', 'reference'):
        r, f = roi_feats.clone().requires_grad_(), refs.clone().requires_grad_()
        conv.zero_grad()
        if run == 'chunked':
            out = extractor.aggregate(r, [extractor.prepare_reference_maps(f)])
        else:
            out = reference_troi(extractor, r, f)
        (out * probe).sum().backward()
        grads.append((r.grad, f.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
    for ours, expected in zip(*grads):
        assert expected.abs().max() > 0
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_troi_each_clip_attends_only_to_its_own_reference_maps(gen):
    extractor = MODELS.build(extractor_cfg(chunk=49 * MAP_H * MAP_W * 2))
    feats = random_maps(gen, 2)
    maps_a, maps_b = random_maps(gen, 2), random_maps(gen, 2)
    # interleaved clip order in rois: the output keeps the row order
    boxes = random_boxes(gen, 10, with_score=False)
    clip = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1, 1, 0], dtype=torch.float32)
    rois = torch.cat([clip[:, None], boxes], dim=1)
    with torch.no_grad():
        roi_feats = extractor((feats,), rois)
        out = extractor((feats,), rois, ref_feats=[maps_a, maps_b])
        for i, maps in enumerate((maps_a, maps_b)):
            rows = clip == i
            torch.testing.assert_close(out[rows], reference_troi(extractor, roi_feats[rows], maps),
                                       rtol=1e-5, atol=1e-5)
        # one clip and a bare tensor for N == 1
        single = extractor((feats[:1],), rois[clip == 0].clone().index_fill_(1, torch.tensor([0]), 0),
                           ref_feats=maps_a)
    torch.testing.assert_close(single, out[clip == 0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='batch indices'):
        extractor((feats,), rois, ref_feats=[maps_a])


def test_troi_precomputed_embed_taps_equal_the_embed_conv(gen):
    extractor = MODELS.build(extractor_cfg(chunk=49 * MAP_H * MAP_W * 3))
    key = random_maps(gen, 1)
    refs = random_maps(gen, 3)
    rois = bbox2roi([random_boxes(gen, 8)])
    with torch.no_grad():
        roi_feats = extractor((key,), rois)
        expected = reference_troi(extractor, roi_feats, torch.cat([refs, key]))
        ref_maps = extractor.prepare_reference_maps(refs, with_embed_taps=True)
        key_maps = extractor.prepare_reference_maps(key, with_embed_taps=False)
        out = extractor.aggregate(roi_feats, [ref_maps, key_maps])  # taps, then the conv
        # gathering the taps of a weighted sum of map vectors is the conv of that sum, border included
        idx = torch.randint(0, MAP_H * MAP_W, (8, 7, 7, 2), generator=gen)
        weights = torch.rand(8, 7, 7, 2, generator=gen)
        points = ref_maps.points[1]  # (h*w, C)
        summed = (points[idx] * weights[..., None]).sum(3).permute(0, 3, 1, 2)  # (8, C, 7, 7)
        conv = extractor.embed_network.conv
        torch.testing.assert_close(
            extractor._embed_from_taps(ref_maps.embed_taps[1], idx, weights),
            F.conv2d(summed, conv.weight, conv.bias, padding=1).permute(0, 2, 3, 1).reshape(-1, C),
            rtol=1e-4, atol=1e-4)
    assert ref_maps.embed_taps.shape == (3, MAP_H * MAP_W, 9 * C)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_troi_epsilon_keeps_all_zero_features_finite():
    rois = bbox2roi([torch.tensor([[10.0, 10.0, 90.0, 70.0, 1.0]])])
    zeros_key, zeros_ref = torch.zeros(1, C, MAP_H, MAP_W), torch.zeros(2, C, MAP_H, MAP_W)
    with torch.no_grad():
        clab = MODELS.build(extractor_cfg(epsilon=1e-10))((zeros_key,), rois, ref_feats=[zeros_ref])
        upstream = MODELS.build(extractor_cfg(epsilon=0.0))((zeros_key,), rois, ref_feats=[zeros_ref])
    assert torch.isfinite(clab).all()
    assert torch.isnan(upstream).any()  # upstream's 0 / 0


def test_troi_rejects_bad_parameters():
    with pytest.raises(ValueError, match='num_temporal_attention_blocks'):
        MODELS.build(extractor_cfg(blocks=5))
    with pytest.raises(ValueError, match='similarity_chunk_elements'):
        MODELS.build(extractor_cfg(chunk=0))
    with pytest.raises(ValueError, match='featmap_strides'):
        MODELS.build(dict(extractor_cfg(), featmap_strides=[8, 16]))


# ---------------------------------------------------------------------------- aggregator / bbox head
@pytest.mark.parametrize('channels, groups', [(FC, 2), (FC, 16), (48, 4)])  # sqrt(d) = 8, 2.83, 3.46
@pytest.mark.parametrize('block', [None, 1, 7 * 11 * 3])  # all groups at once, one, three (uneven end)
def test_selsa_aggregator_equals_the_direct_formula(gen, monkeypatch, channels, groups, block):
    from clab.models import selsa_aggregator
    if block is not None:
        monkeypatch.setattr(selsa_aggregator, 'ATTENTION_BLOCK_ELEMENTS', block)
    agg = MODELS.build(dict(type='SelsaAggregator', in_channels=channels, num_attention_blocks=groups))
    assert isinstance(agg, SelsaAggregator)
    x = torch.randn(7, channels, generator=gen)
    r = torch.randn(11, channels, generator=gen)
    with torch.no_grad():
        q, k, v = agg.fc_embed(x), agg.ref_fc_embed(r), agg.ref_fc(r)
        d = channels // groups
        parts = []
        for g in range(groups):
            s = slice(g * d, (g + 1) * d)
            attention = torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(d), dim=1)  # (7, 11)
            parts.append(attention @ v[:, s])
        expected = agg.fc(torch.cat(parts, dim=1))
        out = agg(x, r)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_selsa_bbox_head_forward_equals_the_spec_loop(gen):
    head = MODELS.build(roi_head_cfg()).bbox_head
    assert isinstance(head, SelsaBBoxHead) and len(head.shared_fcs) == 3 and len(head.aggregator) == 3
    x = torch.randn(5, C, 7, 7, generator=gen)
    r = torch.randn(13, C, 7, 7, generator=gen)
    with torch.no_grad():
        xf, rf = x.flatten(1), r.flatten(1)
        for fc, agg in zip(head.shared_fcs, head.aggregator):
            xf, rf = fc(xf), fc(rf)
            xf = xf + agg(xf, rf)
            xf, rf = F.relu(xf), F.relu(rf)
        cls, reg = head(x, r)
        # encodings of two halves, concatenated, are the encodings of the whole reference set
        split = head.concat_encodings(head.encode_references(r[:6]), head.encode_references(r[6:]))
        cls_split, reg_split = head.forward_encoded(x, split)
    assert cls.shape == (5, NUM_CLASSES + 1) and reg.shape == (5, 4 * NUM_CLASSES)
    torch.testing.assert_close(cls, head.fc_cls(xf), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reg, head.fc_reg(xf), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls_split, cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reg_split, reg, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='aggregator'):
        MODELS.build(dict(roi_head_cfg()['bbox_head'], aggregator_cfg=dict(type='SelsaAggregator',
                                                                           in_channels=FC)))


# ---------------------------------------------------------------------------- RoI head training
def make_train_batch(gen: torch.Generator, num_clips: int, num_refs: int = 2,
                     gts_per_image=(3, 2)) -> dict:
    gt_bboxes = [random_boxes(gen, gts_per_image[i], with_score=False) for i in range(num_clips)]
    gt_labels = [torch.randint(0, NUM_CLASSES, (len(b),), generator=gen) for b in gt_bboxes]
    proposals = []
    for boxes in gt_bboxes:
        jitter = boxes + torch.randn(boxes.shape, generator=gen) * 3
        props = torch.cat([jitter, random_boxes(gen, 20, with_score=False)])
        proposals.append(torch.cat([props, torch.rand(len(props), 1, generator=gen)], dim=1))
    metas = [dict(img_shape=(IMG_H, IMG_W, 3), pad_shape=(IMG_H, IMG_W, 3),
                  scale_factor=np.ones(4, dtype=np.float32)) for _ in range(num_clips)]
    return dict(
        x=(random_maps(gen, num_clips),),
        ref_x=(random_maps(gen, num_clips * num_refs),),
        img_metas=metas,
        proposal_list=proposals,
        ref_proposal_list=[random_boxes(gen, 5 + j) for j in range(num_clips * num_refs)],
        gt_bboxes=gt_bboxes,
        gt_labels=gt_labels)


@pytest.mark.parametrize('num_clips', [1, 2])
def test_forward_train_losses_and_gradients_reach_every_parameter(gen, num_clips):
    head = MODELS.build(roi_head_cfg())
    head.init_weights()
    head.train()
    batch = make_train_batch(gen, num_clips)
    key_maps, ref_maps = batch['x'][0].requires_grad_(), batch['ref_x'][0].requires_grad_()
    losses = head.forward_train(**batch)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'acc'}
    assert losses['loss_cls'].item() > 0 and losses['loss_bbox'].item() > 0
    assert all(torch.isfinite(v).all() for v in losses.values())
    (losses['loss_cls'] + losses['loss_bbox']).backward()
    no_grad = [name for name, p in head.named_parameters()
               if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []
    # and on to the key and reference feature maps (the backbone in the detector)
    assert key_maps.grad.abs().max() > 0 and ref_maps.grad.abs().max() > 0


def test_key_image_without_gt_gives_zero_box_loss(gen):
    head = MODELS.build(roi_head_cfg())
    batch = make_train_batch(gen, 1, gts_per_image=(0,))
    assert batch['gt_bboxes'][0].shape == (0, 4)
    losses = head.forward_train(**batch)
    assert losses['loss_bbox'].item() == 0.0
    assert torch.isfinite(losses['loss_cls']) and losses['loss_cls'].item() > 0


def test_each_clip_attends_only_to_its_own_references(gen):
    head = MODELS.build(roi_head_cfg()).eval()
    batch = make_train_batch(gen, 2, num_refs=2)
    x, ref_x, ref_props = batch['x'], batch['ref_x'], batch['ref_proposal_list']
    rois = bbox2roi([p[:6] for p in batch['proposal_list']])  # 6 RoIs per clip
    with torch.no_grad():
        cls, reg = head._bbox_forward(x, ref_x, rois, bbox2roi(ref_props), 2)
        # clip 2 (index 1): new reference maps and proposals
        ref_maps = ref_x[0].clone()
        ref_maps[2:] = random_maps(gen, 2)
        new_props = ref_props[:2] + [random_boxes(gen, 9), random_boxes(gen, 4)]
        cls2, reg2 = head._bbox_forward(x, (ref_maps,), rois, bbox2roi(new_props), 2)
    torch.testing.assert_close(cls2[:6], cls[:6], rtol=0, atol=1e-6)
    torch.testing.assert_close(reg2[:6], reg[:6], rtol=0, atol=1e-6)
    assert (cls2[6:] - cls[6:]).abs().max() > 1e-4


def test_forward_train_rejects_mismatched_references(gen):
    head = MODELS.build(roi_head_cfg())
    batch = make_train_batch(gen, 2)
    batch['ref_proposal_list'] = batch['ref_proposal_list'][:3]
    with pytest.raises(ValueError, match='ref_proposal_list has 3 entries'):
        head.forward_train(**batch)


# ---------------------------------------------------------------------------- RoI head testing
@pytest.mark.parametrize('with_taps', [False, True])
def test_cached_simple_test_equals_uncached(gen, with_taps):
    head = MODELS.build(roi_head_cfg()).eval()
    head.init_weights()
    # larger class logits than the init gives, so detections differ in score
    torch.nn.init.normal_(head.bbox_head.fc_cls.weight, std=0.1)
    head.bbox_roi_extractor.similarity_chunk_elements = 49 * MAP_H * MAP_W * 4
    cached_maps = random_maps(gen, 3)
    key = random_maps(gen, 1)
    ref_props = [random_boxes(gen, n) for n in (5, 7, 6)]
    key_props = random_boxes(gen, 12)
    meta = dict(img_shape=(IMG_H, IMG_W, 3), ori_shape=(IMG_H // 2, IMG_W // 2, 3),
                scale_factor=np.full(4, 2.0, dtype=np.float32))
    with torch.no_grad():
        cache = head.prepare_reference_cache((cached_maps,), ref_props, with_embed_taps=with_taps)
        assert isinstance(cache, ReferenceCache)
        assert cache.num_frames == 3 and cache.num_rois == 18
        assert (cache.maps.embed_taps is not None) == with_taps
        uncached = head.simple_test((key,), (torch.cat([cached_maps, key]),), [key_props],
                                    ref_props + [key_props], [meta], rescale=True)
        cached = head.simple_test((key,), None, [key_props], None, [meta], rescale=True,
                                  ref_cache=cache)
        rois = bbox2roi([key_props])
        cls_u, reg_u = head._bbox_forward((key,), (torch.cat([cached_maps, key]),), rois,
                                          bbox2roi(ref_props + [key_props]), 4)
        cls_c, reg_c = head._bbox_forward_cached((key,), rois, cache)
    torch.testing.assert_close(cls_c, cls_u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reg_c, reg_u, rtol=1e-5, atol=1e-5)
    assert len(uncached) == len(cached) == NUM_CLASSES
    assert sum(len(a) for a in uncached) > 0
    for a, b in zip(uncached, cached):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)
    # rescale divides by the scale factor: boxes lie in the half-size original image
    boxes = np.concatenate(uncached)
    assert boxes[:, 2].max() <= IMG_W / 2 + 1e-3 and boxes[:, 3].max() <= IMG_H / 2 + 1e-3


def test_simple_test_argument_errors(gen):
    head = MODELS.build(roi_head_cfg()).eval()
    key = random_maps(gen, 1)
    meta = dict(img_shape=(IMG_H, IMG_W, 3), scale_factor=np.ones(4, dtype=np.float32))
    cache = head.prepare_reference_cache((random_maps(gen, 2),), [random_boxes(gen, 3)] * 2)
    with pytest.raises(ValueError, match='must be None'):
        head.simple_test((key,), (key,), [random_boxes(gen, 4)], [random_boxes(gen, 4)], [meta],
                         ref_cache=cache)
    with pytest.raises(ValueError, match='one key frame'):
        head.simple_test((random_maps(gen, 2),), None, [random_boxes(gen, 4)], None, [meta],
                         ref_cache=cache)
    empty = head.simple_test((key,), None, [torch.zeros(0, 5)], None, [meta], ref_cache=cache)
    assert [a.shape for a in empty] == [(0, 5)] * NUM_CLASSES


# ---------------------------------------------------------------------------- checkpoint layout
def test_state_dict_matches_the_mmtracking_troi_r50_layout():
    head = MODELS.build(roi_head_cfg(channels=512, fc=1024, num_classes=30, sampler_num=256))
    assert isinstance(head, SelsaRoIHead)
    head.init_weights()
    expected = {
        'bbox_roi_extractor.embed_network.conv.weight': (512, 512, 3, 3),
        'bbox_roi_extractor.embed_network.conv.bias': (512,),
        'bbox_head.fc_cls.weight': (31, 1024),
        'bbox_head.fc_cls.bias': (31,),
        'bbox_head.fc_reg.weight': (120, 1024),
        'bbox_head.fc_reg.bias': (120,),
        'bbox_head.shared_fcs.0.weight': (1024, 25088),
        'bbox_head.shared_fcs.0.bias': (1024,),
    }
    for i in (1, 2):
        expected[f'bbox_head.shared_fcs.{i}.weight'] = (1024, 1024)
        expected[f'bbox_head.shared_fcs.{i}.bias'] = (1024,)
    for i in range(3):
        for layer in ('fc_embed', 'ref_fc_embed', 'fc', 'ref_fc'):
            expected[f'bbox_head.aggregator.{i}.{layer}.weight'] = (1024, 1024)
            expected[f'bbox_head.aggregator.{i}.{layer}.bias'] = (1024,)
    state = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert state == expected
    # SPEC 2.4 / 2.5 initialisation
    conv = head.bbox_roi_extractor.embed_network.conv
    assert conv.bias.abs().max() == 0
    assert abs(conv.weight.std().item() - math.sqrt(2 / (512 * 9))) < 2e-3  # kaiming fan_out, relu
    bbox_head = head.bbox_head
    assert abs(bbox_head.fc_cls.weight.std().item() - 0.01) < 1e-3
    assert abs(bbox_head.fc_reg.weight.std().item() - 0.001) < 1e-4
    fc0 = bbox_head.shared_fcs[0].weight
    bound = math.sqrt(6 / (25088 + 1024))  # xavier uniform
    assert fc0.abs().max() <= bound and fc0.abs().max() > 0.9 * bound
    for module in (bbox_head.fc_cls, bbox_head.fc_reg, *bbox_head.shared_fcs):
        assert module.bias.abs().max() == 0
    assert bbox_head.aggregator[0].fc.bias.abs().max() > 0  # PyTorch default Linear init


# ---------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_troi_half_precision_features_are_computed_in_fp32(gen, dtype):
    """fp16 / bf16 features with fp32 weights: the search runs in fp32 and the output has the input dtype.

    Tolerances: against the fp32 path on the same (rounded) values, equal up to the final rounding to
    ``dtype`` (one unit of it); against the fp32 path on the unrounded features, a mean absolute
    difference below 4 units of ``dtype`` at the output's scale (the inputs' own rounding).
    """
    extractor = MODELS.build(extractor_cfg(chunk=49 * MAP_H * MAP_W * 3 * 4))
    feats, refs = random_maps(gen, 1), random_maps(gen, 3)
    rois = bbox2roi([random_boxes(gen, 9)])
    half_feats, half_refs = feats.to(dtype), refs.to(dtype)
    with torch.no_grad():
        out = extractor((half_feats,), rois, ref_feats=[half_refs])
        rounded = extractor((half_feats.float(),), rois, ref_feats=[half_refs.float()])
        full = extractor((feats,), rois, ref_feats=[refs])
        # the cached path: float32 layouts from half maps, half RoI features in, half out; against
        # the references followed by the key map, as the uncached test path
        cache = extractor.prepare_reference_maps(half_refs, with_embed_taps=True)
        key_maps = extractor.prepare_reference_maps(half_feats)
        cached = extractor.aggregate(extractor((half_feats,), rois), [cache, key_maps])
        uncached = extractor((half_feats,), rois, ref_feats=[torch.cat([half_refs, half_feats])])
    eps = torch.finfo(dtype).eps
    assert out.dtype == cached.dtype == uncached.dtype == dtype and cache.points.dtype == torch.float32
    torch.testing.assert_close(out.float(), rounded.to(dtype).float(), rtol=eps, atol=0)
    # the cached path's key RoI features pass through ``dtype`` once more
    assert (cached.float() - uncached.float()).abs().mean() < 4 * eps * uncached.float().abs().mean()
    assert (out.float() - full).abs().mean() < 4 * eps * full.abs().mean()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_roi_head_under_autocast_matches_fp32(gen, dtype):
    """The RoI head (TRoI + SELSA box head, cached and uncached) under CPU autocast with half neck maps
    and fp32 weights: class probabilities within 2e-2 of the fp32 path (the box head's fcs run in
    ``dtype``), cached equal to uncached within the same tolerance."""
    head = MODELS.build(roi_head_cfg()).eval()
    head.init_weights()
    torch.nn.init.normal_(head.bbox_head.fc_cls.weight, std=0.1)
    refs, key = random_maps(gen, 3), random_maps(gen, 1)
    ref_props = [random_boxes(gen, n) for n in (5, 7, 6)]
    key_props = random_boxes(gen, 12)
    rois, all_rois = bbox2roi([key_props]), bbox2roi(ref_props + [key_props])
    maps = torch.cat([refs, key])
    with torch.no_grad():
        cls32, reg32 = head._bbox_forward((key,), (maps,), rois, all_rois, 4)
        with torch.autocast('cpu', dtype=dtype):
            cls_u, reg_u = head._bbox_forward((key.to(dtype),), (maps.to(dtype),), rois, all_rois, 4)
            cache = head.prepare_reference_cache((refs.to(dtype),), ref_props)
            cls_c, reg_c = head._bbox_forward_cached((key.to(dtype),), rois, cache)
    assert cls_u.dtype == cls_c.dtype == dtype
    probs32 = cls32.softmax(1)
    for cls, reg in ((cls_u, reg_u), (cls_c, reg_c)):
        torch.testing.assert_close(cls.float().softmax(1), probs32, rtol=0, atol=2e-2)
        torch.testing.assert_close(reg.float(), reg32, rtol=0, atol=2e-2)
    assert (cls_u.float().softmax(1) - probs32).abs().max() > 0  # the fcs did run in half precision


# ---------------------------------------------------------------------------- paper-sized maps
def test_cached_equals_uncached_at_608x1008_map_size(gen):
    """38x63 neck maps (a 608x1008 frame at stride 16) with 14 cached references, small widths."""
    channels, fc = 16, 32
    head = MODELS.build(roi_head_cfg(channels=channels, fc=fc)).eval()
    head.init_weights()
    torch.nn.init.normal_(head.bbox_head.fc_cls.weight, std=0.1)
    map_h, map_w, img_h, img_w = 38, 63, 608, 1008
    maps = torch.rand(15, channels, map_h, map_w, generator=gen)
    refs, key = maps[:14], maps[14:]

    def boxes(num):
        wh = 16 + torch.rand(num, 2, generator=gen) * 300
        xy = torch.rand(num, 2, generator=gen) * (torch.tensor([img_w, img_h]) - wh)
        return torch.cat([xy, xy + wh, torch.rand(num, 1, generator=gen)], dim=1)

    ref_props = [boxes(20) for _ in range(14)]
    key_props = boxes(60)
    meta = dict(img_shape=(img_h, img_w, 3), scale_factor=np.ones(4, dtype=np.float32))
    rois = bbox2roi([key_props])
    with torch.no_grad():
        cache = head.prepare_reference_cache((refs,), ref_props)
        cls_u, reg_u = head._bbox_forward((key,), (maps,), rois, bbox2roi(ref_props + [key_props]), 15)
        cls_c, reg_c = head._bbox_forward_cached((key,), rois, cache)
        uncached = head.simple_test((key,), (maps,), [key_props], ref_props + [key_props], [meta])
        cached = head.simple_test((key,), None, [key_props], None, [meta], ref_cache=cache)
    torch.testing.assert_close(cls_c, cls_u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reg_c, reg_u, rtol=1e-5, atol=1e-5)
    assert sum(len(a) for a in uncached) > 0
    for a, b in zip(uncached, cached):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)


def test_default_chunk_is_chosen_for_the_device():
    from clab.models.temporal_roi_align import CPU_CHUNK_ELEMENTS, default_chunk_elements
    extractor = MODELS.build(dict(extractor_cfg(), similarity_chunk_elements=None))
    assert extractor.similarity_chunk_elements is None
    assert extractor.chunk_elements('cpu') == default_chunk_elements('cpu') == CPU_CHUNK_ELEMENTS
    assert MODELS.build(extractor_cfg(chunk=12345)).chunk_elements('cpu') == 12345


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [1, 2])
def test_roi_align_taps_reproduce_mmcv_roi_align(gen, aligned, sampling_ratio):
    """The taps of roi_align_taps, summed over a map, are mmcv's RoIAlign of it, border RoIs included."""
    from mmcv.ops import RoIAlign

    from clab.models.roi_taps import roi_align_like_kernel, roi_align_taps
    feat = torch.randn(1, 8, MAP_H, MAP_W, generator=gen)
    boxes = torch.cat([random_boxes(gen, 20, with_score=False), torch.tensor([
        [0.0, 0.0, IMG_W, IMG_H],               # the whole image
        [-40.0, -40.0, 10.0, 10.0],              # partly outside, top left
        [IMG_W - 5.0, IMG_H - 5.0, IMG_W + 60.0, IMG_H + 60.0],  # mostly outside, bottom right
        [30.0, 30.0, 30.0, 30.0],                # zero size
        [IMG_W - 1.0, 0.0, IMG_W, IMG_H]])])     # one pixel wide at the right edge
    rois = bbox2roi([boxes])
    expected = RoIAlign(7, 1.0 / STRIDE, sampling_ratio, aligned=aligned)(feat, rois)  # (n, 8, 7, 7)
    index, weight = roi_align_taps(rois, MAP_H, MAP_W, (7, 7), 1.0 / STRIDE, sampling_ratio, aligned)
    assert index.shape == weight.shape == (len(boxes), 7, 7, 4 * sampling_ratio**2)
    assert int(index.min()) >= 0 and int(index.max()) < MAP_H * MAP_W
    summed = F.embedding_bag(index.view(-1, index.size(-1)), feat[0].flatten(1).t(),
                             per_sample_weights=weight.view(-1, weight.size(-1)), mode='sum')
    torch.testing.assert_close(summed.view(len(boxes), 7, 7, 8).permute(0, 3, 1, 2), expected,
                               rtol=1e-5, atol=1e-6)
    # the mostly-outside RoI has samples outside the map: zero weight there
    assert float(weight[-3].min()) == 0.0
    with pytest.raises(ValueError, match='sampling_ratio'):
        roi_align_taps(rois, MAP_H, MAP_W, (7, 7), 1.0 / STRIDE, 0, aligned)
    # the kernel's own weights, summed in the kernel's order: bitwise mmcv's RoIAlign on this build
    index, weight = roi_align_taps(rois, MAP_H, MAP_W, (7, 7), 1.0 / STRIDE, sampling_ratio, aligned,
                                   average=False)
    taps = 4 * sampling_ratio**2
    for block in (7, 512):  # several blocks and one
        points = roi_align_like_kernel(feat[0].flatten(1).t().contiguous(), index.view(-1, taps),
                                       weight.view(-1, taps), block=block)
        assert torch.equal(points.view(len(boxes), 7, 7, 8).permute(0, 3, 1, 2), expected)


def test_key_rois_aligned_from_the_prepared_map_bitwise(gen, monkeypatch):
    """align_key_rois is extractor(feats, rois) bit for bit, through the taps where the build allows it
    (checked here to be this build), and falls back to mmcv's op where it does not."""
    extractor = MODELS.build(extractor_cfg(channels=32))
    feat = torch.randn(1, 32, MAP_H, MAP_W, generator=gen)
    rois = bbox2roi([torch.cat([random_boxes(gen, 30, with_score=False),
                                torch.tensor([[0.0, 0.0, IMG_W, IMG_H], [-40.0, -40.0, 10.0, 10.0]])])])
    key_maps = extractor.prepare_reference_maps(feat)
    expected = extractor((feat,), rois)
    temporal_roi_align._kernel_order_reproduced.cache_clear()
    calls = []
    from clab.models import roi_taps
    real = roi_taps.roi_align_like_kernel
    monkeypatch.setattr(roi_taps, 'roi_align_like_kernel',
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    got = extractor.align_key_rois((feat,), rois, key_maps)
    assert got.shape == expected.shape and got.is_contiguous()
    assert torch.equal(got, expected)
    assert len(calls) == 2  # the build check, then the RoIs
    # a build whose kernel rounds otherwise (here: one ulp added to every output) keeps mmcv's op
    temporal_roi_align._kernel_order_reproduced.cache_clear()
    monkeypatch.setattr(roi_taps, 'roi_align_like_kernel',
                        lambda *a, **k: torch.nextafter(real(*a, **k), torch.tensor(math.inf)))
    assert torch.equal(extractor.align_key_rois((feat,), rois, key_maps), expected)
    temporal_roi_align._kernel_order_reproduced.cache_clear()
    # RoIs of another image than the key map's: mmcv's op (the map has one image)
    monkeypatch.setattr(roi_taps, 'roi_align_like_kernel', real)
    feats2 = torch.cat([feat, feat.flip(3)])
    rois2 = rois.clone()
    rois2[::2, 0] = 1
    assert torch.equal(extractor.align_key_rois((feats2,), rois2, key_maps), extractor((feats2,), rois2))


def _position_first_case(gen, map_h, map_w, channels, num_rois, num_refs, layer=None):
    """A TRoI extractor, key RoI features, the prepared cached stack and key map, and the RoIs."""
    cfg = extractor_cfg(channels=channels, chunk=2**20)
    if layer is not None:
        cfg['roi_layer'] = layer
    extractor = MODELS.build(cfg)
    key = torch.rand(1, channels, map_h, map_w, generator=gen)
    refs = torch.rand(num_refs, channels, map_h, map_w, generator=gen)
    img_w, img_h = map_w * STRIDE, map_h * STRIDE
    wh = 16 + torch.rand(num_rois, 2, generator=gen) * min(img_w, img_h) / 2
    xy = torch.rand(num_rois, 2, generator=gen) * (torch.tensor([img_w, img_h]) - wh)
    rois = bbox2roi([torch.cat([xy, xy + wh], dim=1)])
    with torch.no_grad():
        roi_feats = extractor((key,), rois)
        cache = extractor.prepare_reference_maps(refs, with_embed_taps=True)
        key_maps = extractor.prepare_reference_maps(key, with_embed_taps=True)
    return extractor, roi_feats, cache, key_maps, rois


def _direct_similarities(extractor, roi_feats, maps):
    """The published search's cosine similarities of every RoI point with every position of a stack,
    Tensor[K, n*49, h*w]."""
    points = roi_feats.permute(0, 2, 3, 1).reshape(-1, roi_feats.size(1))
    key_hat = points / (points.norm(dim=1, keepdim=True) + extractor.epsilon)
    return torch.matmul(key_hat, maps.normed)


def _assert_keeps_the_direct_top(sim, rows):
    """The kept positions ``rows`` (Tensor[K, n*49, top]) hold the direct search's top values (of its
    similarities ``sim``, :func:`_direct_similarities`): its own positions, or others with exactly equal
    direct similarities (at an exact tie either is the top)."""
    top = sim.topk(rows.size(2), dim=2).values
    assert torch.equal(sim.gather(2, rows).sort(dim=2).values, top.sort(dim=2).values)


def _spy_compiled_top(monkeypatch) -> list:
    """Record, per call of the tiled search's top-k, whether the compiled kernel ran (skips the test on a CPU
    that runs neither of the kernel's instruction sets; where it runs one, the kernel must build)."""
    tra = temporal_roi_align
    if not native.cpu_isas():
        pytest.skip('this CPU runs neither AVX-512 nor AVX2: the search runs on torch ops')
    assert native.tiled_top() is not None
    used = []
    choose = tra._compiled_top

    def spied(*args):
        kernel = choose(*args)
        used.append(kernel is not None)
        return kernel

    monkeypatch.setattr(tra, '_compiled_top', spied)
    return used


@pytest.fixture(params=['tiles', 'tiles-torch', 'blocks'])
def search_layout(request, monkeypatch):
    """The position-first search with its CPU table tiles (the default; the test must have used them), pass
    1 and 2 in one pass by the compiled kernel (the default where it builds) and by torch ops, and with
    whole-width blocks (as on other devices)."""
    tra = temporal_roi_align
    if request.param == 'blocks':
        monkeypatch.setattr(tra, 'CPU_TABLE_TILE', 0)
        yield request.param
        return
    if not tra._bags_are_elementwise('cpu', torch.float32, tra.CPU_TABLE_TILE):
        pytest.skip("this build's embedding_bag does not sum columns independently: the search keeps "
                    "whole-width blocks")
    if request.param == 'tiles-torch':
        monkeypatch.setattr(tra, 'CPU_NATIVE_SEARCH', False)
        kernel_used = None
    else:
        kernel_used = _spy_compiled_top(monkeypatch)
    calls = []
    search = tra.TemporalRoIAlign._search_stack_by_tiles

    def counted(*args, **kwargs):
        calls.append(1)
        return search(*args, **kwargs)

    monkeypatch.setattr(tra.TemporalRoIAlign, '_search_stack_by_tiles', counted)
    yield request.param
    assert calls, 'the tiled search was not used'
    if kernel_used is not None:
        assert kernel_used and all(kernel_used), 'the tiled search did not run the compiled kernel'


def test_position_first_search_equals_the_direct_search_at_608x1008_map_size(search_layout):
    """38x63 maps, 14 cached + the key map: the same top positions as searching the RoI points directly.

    Uniform random features make the similarities crowd together, so many pairs are near ties: those
    are searched again directly, and no kept set may differ from the direct search's. (The data comes
    from its own generator: the same for both layouts, and without exact ties between a kept and the
    next direct similarity, where the published aggregation itself depends on topk's order among
    equal values.)"""
    extractor, roi_feats, cache, key_maps, rois = _position_first_case(torch.Generator().manual_seed(0),
                                                                       38, 63, 16, 40, 14)
    stacks = [cache, key_maps]
    k = extractor.num_most_similar_points
    with torch.no_grad():
        taps = extractor._roi_taps(rois, key_maps, torch.float32)
        found = extractor._search_by_positions(roi_feats, taps, key_maps, stacks)
        for maps, (values, rows) in zip(stacks, found):
            sim = _direct_similarities(extractor, roi_feats, maps)
            direct_values = sim.topk(k + 1, dim=2).values
            assert bool((direct_values[..., k - 1] > direct_values[..., k]).all())
            # the kept positions are the direct search's (or hold exactly its values, at exact ties;
            # their order may differ where the two values are equal)
            _assert_keeps_the_direct_top(sim, rows)
            torch.testing.assert_close(values, direct_values[..., :k], rtol=0, atol=1e-6)
            del sim
        counts = extractor.last_search
        assert counts['pairs'] == 40 * 49 * 15 and 0 < counts['near_ties'] < counts['pairs']
        # the whole aggregation (position-first search, key embed from taps) against the direct one
        fast = extractor.aggregate(roi_feats, stacks, rois=rois, key_maps=key_maps)
        direct = extractor.aggregate(roi_feats, stacks)
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('channels', [16, 64])
def test_cached_attention_by_maps_and_bags_equals_the_chunked_frame_by_frame_attention(gen, monkeypatch, channels):
    """The cached path's attention logits taken one map at a time (in blocks of 3 RoIs, or all at once:
    bitwise the same) and the attention summed as bags give the output of the chunk-by-chunk, frame-by-
    frame computation within float rounding; several chunks here. With 64 channels (blocks of 16) the
    logits come from the compiled kernel where it builds, with 16 from torch ops."""
    extractor, roi_feats, cache, key_maps, rois = _position_first_case(gen, 12, 17, channels, 11, 3)
    extractor.similarity_chunk_elements = 49 * 4 * 3 * 12 * 17  # 4 RoIs per chunk: 3 chunks
    calls = []
    by_maps = TemporalRoIAlign._logits_by_maps

    def counted(self, *args, **kwargs):
        calls.append(1)
        return by_maps(self, *args, **kwargs)

    kernel_calls = []
    kernel = native.bag_logits()
    if kernel is not None:
        def counted_kernel(*args):
            kernel_calls.append(1)
            return kernel(*args)
        monkeypatch.setattr(native, 'bag_logits', lambda: counted_kernel)
    outs = []
    with torch.no_grad():
        monkeypatch.setattr(TemporalRoIAlign, '_logits_by_maps', counted)
        for block_points in (49 * 3, 49 * 1000):
            monkeypatch.setattr(temporal_roi_align, 'CPU_EMBED_BLOCK_POINTS', block_points)
            outs.append(extractor.aggregate(roi_feats, [cache, key_maps], rois=rois, key_maps=key_maps))
        assert calls == [1, 1]
        monkeypatch.setattr(TemporalRoIAlign, '_logits_by_maps', lambda self, *args, **kwargs: None)
        chunked = extractor.aggregate(roi_feats, [cache, key_maps], rois=rois, key_maps=key_maps)
        direct = extractor.aggregate(roi_feats, [cache, key_maps])
    assert torch.equal(outs[0], outs[1])
    assert bool(kernel_calls) == (kernel is not None and channels == 64)
    torch.testing.assert_close(outs[0], chunked, rtol=0, atol=2e-6 * float(chunked.abs().max()))
    torch.testing.assert_close(outs[0], direct, rtol=1e-5, atol=1e-5)


def test_merged_taps_sum_the_weights_of_each_row(gen):
    """Taps on the same row become one tap of their summed weight, distinct rows first in increasing
    order, the other slots weight 0; a bag over the merged taps is the bag over the taps up to rounding."""
    index = torch.tensor([[3, 1, 3, 1, 2, 2, 2, 4], [5, 5, 5, 5, 5, 5, 5, 5]])
    weight = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [1.0] * 8])
    rows, weights = temporal_roi_align._merge_taps(index, weight)
    assert rows.tolist() == [[1, 2, 3, 4, 1, 1, 1, 1], [5, 1, 1, 1, 1, 1, 1, 1]]
    torch.testing.assert_close(weights, torch.tensor([[0.6, 1.8, 0.4, 0.8, 0, 0, 0, 0], [8.0, 0, 0, 0, 0, 0, 0, 0]]))
    index = torch.randint(0, 9, (500, 16), generator=gen)
    weight = torch.rand(500, 16, generator=gen)
    rows, weights = temporal_roi_align._merge_taps(index, weight)
    table = torch.randn(9, 40, generator=gen)
    torch.testing.assert_close(F.embedding_bag(rows, table, per_sample_weights=weights, mode='sum'),
                               F.embedding_bag(index, table, per_sample_weights=weight, mode='sum'))
    distinct = torch.tensor([len(set(r)) for r in index.tolist()])
    assert torch.equal((weights != 0).sum(dim=1), distinct)


def test_grouped_topk_equals_topk(gen):
    """The top-k on the groups with the largest maxima gives torch.topk's values, and indices that hold
    them, also with many equal values and with fewer groups than k (plain topk)."""
    group = temporal_roi_align.TOPK_GROUP
    cases = [torch.rand(7, 3, 38 * group, generator=gen),
             # small integers: many equal values, also across groups
             torch.randint(0, 4, (50, 5 * group), generator=gen).float(),
             # the k largest all in one group
             torch.cat([torch.full((4, group), 2.0), torch.rand(4, 6 * group, generator=gen)], dim=1),
             torch.rand(3, 2 * group, generator=gen)]  # 2 groups, k = 3: plain topk
    for x in cases:
        for k in (1, 3):
            values, index = temporal_roi_align._topk_by_groups(x, k)
            expected = x.topk(k, dim=-1).values
            assert values.shape == index.shape == expected.shape
            assert torch.equal(values, expected)
            assert torch.equal(x.gather(-1, index), values)
            # no index twice
            assert bool((index.sort(dim=-1).values.diff(dim=-1) > 0).all())
    with pytest.raises(ValueError, match='whole groups'):
        temporal_roi_align._topk_by_groups(torch.rand(2, group + 1), 2)


@pytest.mark.parametrize('compiled', [True, False])
def test_top_of_table_tiles_is_the_grouped_topk_of_the_whole_table(gen, compiled, monkeypatch):
    """Pass 1 (group maxima a tile at a time) and pass 2 (the chosen groups summed again) give bit for
    bit the grouped top-k of the bags over the tiles laid side by side: on 38x63 maps (2,394 positions:
    19 tiles of 128, the last with 90 real columns and pad columns), on a 1x2 map (one partial tile), with
    tiles of 64 and 128 columns, kept = 3 and kept = 70 (more than the 38 groups), points whose tap
    weights are all zero among them, float32 and float64; by the compiled one-pass kernel (float32 with
    128-column tiles) and by torch ops. (Uniform random data: no exact ties, so the columns are the same
    under both tie orders.)"""
    tra = temporal_roi_align
    if compiled:
        kernel_used = _spy_compiled_top(monkeypatch)
    else:
        monkeypatch.setattr(tra, 'CPU_NATIVE_SEARCH', False)
    for (map_h, map_w), dtype, tile in [((38, 63), torch.float32, 128), ((38, 63), torch.float64, 128),
                                        ((38, 63), torch.float32, tra.TOPK_GROUP), ((1, 2), torch.float32, 128)]:
        assert tra._bags_are_elementwise('cpu', dtype, tile)
        units, channels, points = 300, 16, 500
        positions = map_h * map_w
        key_rows = torch.rand(units, channels, generator=gen, dtype=dtype)
        normed = torch.rand(channels, positions, generator=gen, dtype=dtype)
        local = torch.randint(0, units, (points, 16), generator=gen)
        weight = torch.rand(points, 16, generator=gen, dtype=dtype)
        weight[:7] = 0
        table = tra._table_tiles(key_rows, normed, tile)
        assert table.shape == (-(-positions // tile), units, tile)
        whole = table.permute(1, 0, 2).reshape(units, -1)
        # the tiles' real columns are the products of the key rows with the map's positions
        torch.testing.assert_close(whole[:, :positions], key_rows.mm(normed))
        assert bool((whole[:, positions:] == torch.finfo(dtype).min / 4).all())
        sims = F.embedding_bag(local, whole, per_sample_weights=weight, mode='sum')
        for kept in (3, 70):
            kept = min(kept, positions)
            values, index = tra._top_of_tiles(table, local, weight, kept)
            expected, _ = tra._topk_by_groups(sims.view(points, 1, -1), kept)
            assert torch.equal(values, expected.view(points, kept))
            assert torch.equal(sims.gather(1, index), values)
            assert bool((index.sort(dim=1).values.diff(dim=1) > 0).all())
    with pytest.raises(ValueError, match='multiple of'):
        tra._table_tiles(key_rows, normed, 100)
    if compiled:
        # float32 with 128-column tiles: the kernel (2 maps x 2 kept values); float64 and 64-column tiles:
        # torch ops
        assert kernel_used == [True, True, False, False, False, False, True, True]


def test_position_first_search_outside_the_map_and_pad_columns(gen, search_layout):
    """Pad columns (the search's table is padded to whole top-k groups) never become kept positions:
    not when every similarity is negative (38x63 maps, references of the opposite sign), and not when a
    RoI wholly outside the map has zero tap weights, so that all its similarities tie with the pads at 0
    (there the points are searched again directly), also on a 1x2 map, where the top 2 are every position
    and no near tie can be seen; with the CPU's table tiles and with whole-width blocks."""
    for map_h, map_w in ((38, 63), (1, 2)):
        extractor, _, _, key_maps, rois = _position_first_case(gen, map_h, map_w, 16, 6, 1)
        img_w, img_h = map_w * STRIDE, map_h * STRIDE
        outside = bbox2roi([torch.tensor([[img_w + 40.0, img_h + 40.0, img_w + 120.0, img_h + 90.0]])])
        rois = torch.cat([rois, outside])
        positions = map_h * map_w
        with torch.no_grad():
            # (the key map itself, contiguous: mmcv's CPU RoIAlign reads its memory as contiguous)
            key = key_maps.points[0].t().reshape(1, 16, map_h, map_w).contiguous()
            roi_feats = extractor((key,), rois)
            assert float(roi_feats[-1].abs().max()) == 0.0
            taps = extractor._roi_taps(rois, key_maps, torch.float32)
            assert float(taps[1][-1].abs().max()) == 0.0
            # negative references: every cosine with the (non-negative) key points is negative
            opposite = extractor.prepare_reference_maps(-torch.rand(2, 16, map_h, map_w, generator=gen))
            stacks = [opposite, key_maps]
            found = extractor._search_by_positions(roi_feats, taps, key_maps, stacks)
            for maps, (values, rows) in zip(stacks, found):
                assert int(rows.max()) < positions
                sim = _direct_similarities(extractor, roi_feats, maps)
                direct_values = sim.topk(extractor.num_most_similar_points, dim=2).values
                torch.testing.assert_close(values, direct_values, rtol=0, atol=1e-6)
                _assert_keeps_the_direct_top(sim, rows)
                assert torch.equal(values[:, -49:], torch.zeros_like(values[:, -49:]))
            assert float(found[0][0][:, :-49].max()) < 0
            # at least the outside RoI's points of all three maps were searched again: their zero
            # similarities tie (on the 1x2 map every position is kept and there is no next value: there a
            # pad column kept is what sends a point to the direct search, and the tiled search's top-k
            # may keep the real positions among the equal values instead)
            if positions > extractor.num_most_similar_points:
                assert extractor.last_search['near_ties'] >= 49 * 3


def test_position_first_search_is_skipped_for_adaptive_sampling(gen):
    """sampling_ratio=0 (taps vary per RoI) and max pooling are searched on the RoI points directly."""
    for layer in (dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                  dict(type='RoIAlign', output_size=7, sampling_ratio=2, pool_mode='max')):
        extractor, roi_feats, cache, key_maps, rois = _position_first_case(gen, MAP_H, MAP_W, C, 6, 2,
                                                                           layer=layer)
        assert not extractor._roi_layer_is_linear()
        with torch.no_grad():
            out = extractor.aggregate(roi_feats, [cache, key_maps], rois=rois, key_maps=key_maps)
            expected = extractor.aggregate(roi_feats, [cache, key_maps])
        assert extractor.last_search is None  # the position-first search did not run
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
