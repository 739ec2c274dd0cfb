"""SELSA detector (clab.models.selsa): training losses and gradients, test-time reference handling, API.

Tiny configs (configs/*tiny_synthetic.py), random weights, frames of 64x96 on the CPU.
"""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from mmcv import Config
from mmdet.models import build_detector

import clab  # noqa: F401  (registries)
from clab.models import selsa as selsa_module
from clab.models.selsa import SELSA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLAB_TINY = os.path.join(ROOT, "configs", "clab_selsa-troi_faster-rcnn_tiny_synthetic.py")
BASE_TINY = os.path.join(ROOT, "configs", "selsa-troi_faster-rcnn_tiny_synthetic.py")
H, W = 64, 96
NUM_CLASSES = 6


def build(path: str, backbone: dict | None = None, **test_cfg) -> SELSA:
    cfg = Config.fromfile(path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.detector.backbone.update(backbone or {})
    if test_cfg:
        model_cfg.test_cfg = dict(model_cfg.get("test_cfg") or {}, **test_cfg)
    model = build_detector(model_cfg)
    model.init_weights()
    return model


def meta(frame_id: int = 0, **extra) -> dict:
    m = dict(filename=f"{frame_id:06d}.JPEG", ori_filename=f"{frame_id:06d}.JPEG", ori_shape=(H, W, 3),
             img_shape=(H, W, 3), pad_shape=(H, W, 3), scale_factor=np.ones(4, dtype=np.float32), flip=False,
             flip_direction=None, frame_id=frame_id, is_video_data=True,
             img_norm_cfg=dict(mean=np.zeros(3, np.float32), std=np.ones(3, np.float32), to_rgb=False))
    m.update(extra)
    return m


def train_batch(n: int, t: int = 2, num_boxes: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    gt_bboxes, gt_labels = [], []
    for _ in range(n):
        xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([W - 40.0, H - 40.0])
        wh = 14 + torch.rand(num_boxes, 2, generator=g) * 24
        gt_bboxes.append(torch.cat([xy, xy + wh], 1))
        gt_labels.append(torch.randint(0, NUM_CLASSES, (num_boxes,), generator=g))
    return dict(img=torch.randn(n, 3, H, W, generator=g), img_metas=[meta(5 + i) for i in range(n)],
                gt_bboxes=gt_bboxes, gt_labels=gt_labels,
                ref_img=torch.randn(n, t, 3, H, W, generator=g),
                ref_img_metas=[[meta(3 + j) for j in range(t)] for _ in range(n)],
                gt_instance_ids=[torch.arange(num_boxes) for _ in range(n)])


@pytest.fixture(scope="module")
def clab_model() -> SELSA:
    torch.manual_seed(0)
    # the paper's freezing (the tiny configs train everything from scratch)
    return build(CLAB_TINY, backbone=dict(frozen_stages=1, norm_eval=True))


@pytest.fixture(scope="module")
def base_model() -> SELSA:
    torch.manual_seed(1)
    return build(BASE_TINY)


def loss_sum(value) -> float:
    return float(sum(v.sum() for v in value)) if isinstance(value, (list, tuple)) else float(value.sum())


# ---------------------------------------------------------------------------------------------- build
def test_branch_presence_and_keys(clab_model, base_model):
    assert clab_model.with_auxiliary and not base_model.with_auxiliary
    clab_keys = set(clab_model.state_dict())
    base_keys = set(base_model.state_dict())
    assert {k for k in clab_keys - base_keys} == {k for k in clab_keys if k.startswith("auxiliary.")}
    assert {k.split(".")[1] for k in clab_keys if k.startswith("auxiliary.")} == {"channel", "proj"}
    assert base_keys <= clab_keys
    assert not any(k.startswith("auxiliary.") for k in base_keys)


def test_bad_configs_raise_early():
    cfg = Config.fromfile(CLAB_TINY).model
    bad = copy.deepcopy(cfg)
    bad.detector.backbone.out_indices = (3,)
    with pytest.raises(ValueError, match="cab_stage"):
        build_detector(bad)
    bad = copy.deepcopy(cfg)
    bad.detector.backbone.out_indices = (2,)
    with pytest.raises(ValueError, match="out_indices must end"):
        build_detector(bad)
    bad = copy.deepcopy(cfg)
    bad.auxiliary.in_channels = 32
    with pytest.raises(ValueError, match="auxiliary.in_channels"):
        build_detector(bad)
    bad = copy.deepcopy(cfg)
    bad.test_cfg = dict(cache_ref_proposal=True)
    with pytest.raises(ValueError, match="cache_ref_proposal"):
        build_detector(bad)


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("n", [1, 2])
def test_train_losses_and_gradients(clab_model, n):
    model = clab_model
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model(**train_batch(n), return_loss=True)
    for key in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc", "loss_cab", "w_cab"):
        assert key in losses, key
    assert float(losses["w_cab"]) == pytest.approx(0.005)
    # one clip in one process has no negatives, so NT-Xent is 0 (SPEC 1.7); two clips give a real loss
    assert (float(losses["loss_cab"].detach()) > 0) == (n > 1)
    loss, log_vars = model._parse_losses(losses)
    expected = sum(loss_sum(losses[k]) for k in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox",
                                                 "loss_cab"))
    assert float(loss) == pytest.approx(expected, rel=1e-5)        # acc and w_cab are logged, not summed
    assert set(log_vars) >= {"loss", "acc", "w_cab"}
    loss.backward()

    frozen = ("detector.backbone.conv1.", "detector.backbone.bn1.", "detector.backbone.layer1.")
    for name, p in model.named_parameters():
        if name.startswith(frozen):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad, name
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # every trainable part receives signal, the branch and the tapped stage included (with negatives)
    branch = ("auxiliary.channel", "auxiliary.proj") if n > 1 else ()
    for prefix in branch + ("detector.backbone.layer3", "detector.backbone.layer4",
                   "detector.neck", "detector.rpn_head", "detector.roi_head.bbox_roi_extractor.embed_network",
                   "detector.roi_head.bbox_head.shared_fcs", "detector.roi_head.bbox_head.aggregator",
                   "detector.roi_head.bbox_head.fc_cls", "detector.roi_head.bbox_head.fc_reg"):
        total = sum(float(p.grad.abs().sum()) for k, p in model.named_parameters() if k.startswith(prefix))
        assert total > 0, prefix


def test_train_step_returns_runner_outputs(base_model):
    base_model.train()
    out = base_model.train_step(train_batch(2), None)
    assert set(out) == {"loss", "log_vars", "num_samples"} and out["num_samples"] == 2
    assert "loss_cab" not in out["log_vars"] and "w_cab" not in out["log_vars"]
    assert out["loss"].requires_grad


def test_zero_gt_boxes_give_zero_box_losses(clab_model):
    clab_model.train()
    batch = train_batch(2, num_boxes=0)
    assert all(b.shape == (0, 4) for b in batch["gt_bboxes"])
    losses = clab_model(**batch)
    assert loss_sum(losses["loss_rpn_bbox"]) == 0.0
    assert loss_sum(losses["loss_bbox"]) == 0.0
    assert loss_sum(losses["loss_rpn_cls"]) > 0 and loss_sum(losses["loss_cls"]) > 0


def test_train_input_errors(base_model):
    batch = train_batch(2)
    batch["ref_img_metas"] = batch["ref_img_metas"][:1]
    with pytest.raises(ValueError, match="ref_img_metas"):
        base_model(**batch)
    batch = train_batch(2)
    batch["ref_img"] = batch["ref_img"][:1]
    with pytest.raises(ValueError, match="ref_img"):
        base_model(**batch)


# ---------------------------------------------------------------------------------------------- testing
def video(num_frames: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 3, H, W, generator=g)
    return torch.stack([base + 0.3 * torch.randn(1, 3, H, W, generator=g) for _ in range(num_frames)])


def run_adaptive(model: SELSA, frames: torch.Tensor, ref_ids: list[int]) -> list[list[np.ndarray]]:
    """Test a video frame by frame with K fixed references given at frame 0 (mmtracking's batch form)."""
    model.eval()
    outs = []
    with torch.no_grad():
        for f in range(frames.size(0)):
            kwargs = {}
            if f == 0:
                kwargs = dict(ref_img=[frames[ref_ids, 0][None]],
                              ref_img_metas=[[[meta(i) for i in ref_ids]]])
            res = model(img=[frames[f]], img_metas=[[meta(f)]], return_loss=False, rescale=True, **kwargs)
            assert set(res) == {"det_bboxes"} and len(res["det_bboxes"]) == NUM_CLASSES
            outs.append(res["det_bboxes"])
    return outs


def assert_same_detections(a, b, exact: bool):
    total = 0
    for frame_a, frame_b in zip(a, b, strict=True):
        for cls_a, cls_b in zip(frame_a, frame_b, strict=True):
            assert cls_a.shape == cls_b.shape
            total += len(cls_a)
            if exact:
                np.testing.assert_array_equal(cls_a, cls_b)
            else:
                np.testing.assert_allclose(cls_a, cls_b, rtol=1e-4, atol=1e-4)
    assert total > 0  # the comparison is about real detections


def test_branch_does_not_change_test_outputs(clab_model):
    base = build(BASE_TINY)
    base.load_state_dict({k: v for k, v in clab_model.state_dict().items() if not k.startswith("auxiliary.")},
                         strict=True)
    frames = video(3)
    ref_ids = [0, 2]
    assert_same_detections(run_adaptive(clab_model, frames, ref_ids), run_adaptive(base, frames, ref_ids),
                           exact=True)


def test_reference_caching_matches_published_path(clab_model):
    uncached = build(CLAB_TINY, cache_ref_proposals=False)
    uncached.load_state_dict(clab_model.state_dict())
    assert clab_model.cache_ref_proposals and not uncached.cache_ref_proposals
    frames = video(3, seed=5)
    ref_ids = [0, 1, 2]
    cached_out = run_adaptive(clab_model, frames, ref_ids)
    assert clab_model.memo.roi_cache is not None and len(clab_model.memo.proposals) == 3
    uncached_out = run_adaptive(uncached, frames, ref_ids)
    assert uncached.memo.roi_cache is None and uncached.memo.proposals is None
    assert_same_detections(cached_out, uncached_out, exact=False)
    assert clab_model.memo.frame_ids == [0, 1, 2]


def test_channels_last_backbone_at_test_time(base_model):
    """At test time the backbone runs on NHWC memory and the neck output comes back as contiguous NCHW;
    detections equal those of the NCHW backbone up to float order; training and backbones holding an
    mmcv op keep NCHW."""
    from mmcv.ops import DeformConv2dPack

    nchw = build(BASE_TINY, channels_last=False)
    nchw.load_state_dict(base_model.state_dict())
    assert base_model.channels_last and not nchw.channels_last
    seen = []
    hook = base_model.detector.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        frames = video(3, seed=7)
        base_model.eval()
        with torch.no_grad():
            x, _ = base_model.extract_feat(frames[0])
        assert seen == [True] and all(f.is_contiguous() for f in x)
        assert_same_detections(run_adaptive(base_model, frames, [0, 2]), run_adaptive(nchw, frames, [0, 2]),
                               exact=False)
    finally:
        hook.remove()
    # training keeps NCHW (a fresh model: a training forward updates the BN statistics)
    trained = build(BASE_TINY)
    assert trained.channels_last
    seen.clear()
    hook = trained.detector.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        trained.train()
        trained.extract_feat(frames[0])
        assert seen == [False]
    finally:
        hook.remove()
    # a backbone with deformable convolutions (mmcv.ops) is built with channels-last off
    dcn = build(BASE_TINY, backbone=dict(depth=50, dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=False),
                                         stage_with_dcn=(False, False, False, True)))
    assert any(isinstance(m, DeformConv2dPack) for m in dcn.detector.backbone.modules())
    assert selsa_module._holds_mmcv_op(dcn.detector.backbone) and not dcn.channels_last
    assert not selsa_module._holds_mmcv_op(base_model.detector.backbone)


def test_frames_must_start_at_zero(base_model):
    base_model.reset_video_memo()
    frames = video(2)
    with pytest.raises(RuntimeError, match="before frame 0"):
        base_model(img=[frames[1]], img_metas=[[meta(1)]], return_loss=False)
    with pytest.raises(ValueError, match="reference images"):
        base_model(img=[frames[0]], img_metas=[[meta(0)]], return_loss=False)


def fix_stride_refs(frame_id: int, num_frames: int, r: int, stride: int) -> list[int]:
    """Reference frame ids that test_with_fix_stride samples (SPEC 2.7), written out independently."""
    if frame_id == 0:
        return [0] * (r + 1) + [min(i * stride, num_frames - 1) for i in range(1, r + 1)]
    if frame_id % stride == 0:
        return [min(frame_id + r * stride, num_frames - 1)]
    return []


def run_fix_stride(model: SELSA, frames: torch.Tensor, r: int, stride: int) -> list[list[np.ndarray]]:
    """Test a video with the fixed-stride sampler's references, checking the window after every frame."""
    num_frames = frames.size(0)
    model.eval()
    outs = []
    with torch.no_grad():
        for f in range(num_frames):
            refs = fix_stride_refs(f, num_frames, r, stride)
            kwargs = {}
            if refs:
                kwargs = dict(ref_img=[frames[refs, 0][None]],
                              ref_img_metas=[[[meta(i, num_left_ref_imgs=r, frame_stride=stride) for i in refs]]])
            res = model(img=[frames[f]], img_metas=[[meta(f, num_left_ref_imgs=r, frame_stride=stride)]],
                        return_loss=False, rescale=True, **kwargs)
            assert len(res["det_bboxes"]) == NUM_CLASSES
            outs.append(res["det_bboxes"])
            window = [m["frame_id"] for m in model.memo.img_metas]
            assert len(window) == 2 * r + 1 and window[r] == f       # the key sits at the window centre
            if stride == 1:
                assert window == [min(max(f + k, 0), num_frames - 1) for k in range(-r, r + 1)]
            else:  # the right half holds the frames `stride` apart after the last push
                pushed = f - f % stride
                assert window[r + 1:] == [min(pushed + k * stride, num_frames - 1) for k in range(1, r + 1)]
    return outs


def test_fix_stride_sliding_window(base_model):
    num_frames, r = 5, 2
    frames = video(num_frames, seed=7)
    cached = run_fix_stride(base_model, frames, r, stride=1)
    # the centre feature map is the current (last) frame's own map
    x, _ = base_model.extract_feat(frames[-1])
    torch.testing.assert_close(base_model.memo.feats[0][r:r + 1], x[0], rtol=1e-5, atol=1e-5)
    uncached = build(BASE_TINY, cache_ref_proposals=False)
    uncached.load_state_dict(base_model.state_dict())
    assert_same_detections(cached, run_fix_stride(uncached, frames, r, stride=1), exact=False)


def test_fix_stride_with_stride_two(base_model):
    frames = video(5, seed=8)
    outs = run_fix_stride(base_model, frames, r=1, stride=2)
    assert len(outs) == 5
    with pytest.raises(ValueError, match="without reference images"):   # frame 1 is not a multiple of 2
        base_model(img=[frames[1]], img_metas=[[meta(1, num_left_ref_imgs=1, frame_stride=2)]],
                   ref_img=[frames[[3], 0][None]], ref_img_metas=[[[meta(3, num_left_ref_imgs=1, frame_stride=2)]]],
                   return_loss=False)


def test_fix_stride_refuses_duplicated_lone_reference(base_model):
    frames = video(4)
    r = 1
    base_model.eval()
    with torch.no_grad():
        base_model(img=[frames[0]], img_metas=[[meta(0, num_left_ref_imgs=r, frame_stride=1)]],
                   ref_img=[frames[[0, 0, 1], 0][None]],
                   ref_img_metas=[[[meta(i, num_left_ref_imgs=r, frame_stride=1) for i in (0, 0, 1)]]],
                   return_loss=False)
        with pytest.raises(ValueError, match="exactly one new reference"):
            base_model(img=[frames[1]], img_metas=[[meta(1, num_left_ref_imgs=r, frame_stride=1)]],
                       ref_img=[frames[[2, 2], 0][None]],
                       ref_img_metas=[[[meta(2, num_left_ref_imgs=r, frame_stride=1)] * 2]],
                       return_loss=False)


# ---------------------------------------------------------------------------------------------- API
def test_init_model_and_inference_vid(tmp_path, clab_model):
    import cv2

    from clab.apis import inference_vid, init_model
    from clab.checkpoint import save_checkpoint

    ckpt = tmp_path / "tiny.pth"
    save_checkpoint(clab_model, str(ckpt), meta=dict(CLASSES=["a", "b", "c", "d", "e", "f"]))
    model = init_model(CLAB_TINY, str(ckpt), device="cpu")
    assert model.CLASSES == ("a", "b", "c", "d", "e", "f") and not model.training
    for k, v in clab_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(96, 160, 3), dtype=np.uint8)
    path = tmp_path / "000001.jpg"
    cv2.imwrite(str(path), frame)
    res0 = inference_vid(model, frame, frame_id=0, ref_img_sampler=dict(frame_stride=2, num_left_ref_imgs=2))
    assert len(model.memo.img_metas) == 2                              # frame 0 repeated as 2 references
    res1 = inference_vid(model, str(path), frame_id=1)
    for res in (res0, res1):
        assert len(res["det_bboxes"]) == NUM_CLASSES
        boxes = np.concatenate(res["det_bboxes"])
        assert boxes.shape[1] == 5 and len(boxes) > 0
        assert boxes[:, [0, 2]].max() <= 160 + 1e-3 and boxes[:, [1, 3]].max() <= 96 + 1e-3  # original pixels
    with pytest.raises(FileNotFoundError):
        inference_vid(model, str(tmp_path / "missing.jpg"), frame_id=2)
