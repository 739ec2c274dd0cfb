"""Every config in configs/ loads with mmcv and describes the run SPEC 1.2 / 2.8 asks for."""
from __future__ import annotations

import copy
import glob
import os

import pytest
import torch
from mmcv import Config
from mmdet.models import build_detector

import clab  # noqa: F401  (registries)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
TOP_LEVEL = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.py")))
PAPER = [f"{m}selsa-troi_faster-rcnn_{b}-dc5_8xb2-7e_imagenetvid.py" for m in ("", "clab_")
         for b in ("r50", "r101", "x101")]
MMTRACKING = [f"selsa-troi_faster-rcnn_{b}-dc5_8xb1-7e_imagenetvid.py" for b in ("r50", "r101", "x101")]
TINY = ["selsa-troi_faster-rcnn_tiny_synthetic.py", "clab_selsa-troi_faster-rcnn_tiny_synthetic.py"]


def load(name: str) -> Config:
    return Config.fromfile(os.path.join(CONFIGS, name))


def flat(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: node}


def test_expected_configs_exist():
    assert set(PAPER + MMTRACKING + TINY) <= set(TOP_LEVEL)
    assert not [n for n in TOP_LEVEL if n.endswith("_7e_imagenetvid.py")], "old names without the batch"


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_config_loads_and_has_a_full_run(name):
    cfg = load(name)
    assert cfg.model.type == "SELSA"
    assert cfg.custom_imports == dict(imports=["clab"], allow_failed_imports=False)
    for key in ("data", "optimizer", "optimizer_config", "lr_config", "runner", "log_config",
                "checkpoint_config", "workflow"):
        assert key in cfg, key
    assert cfg.data.samples_per_gpu == (1 if "_8xb1-" in name else 2)
    assert "evaluation" not in cfg  # never read: testing is `clab test`
    if "_imagenetvid" in name:  # the name states the global batch: 8 GPUs x samples_per_gpu
        assert cfg.auto_scale_lr.base_batch_size == 8 * cfg.data.samples_per_gpu
    hooks = [h.type for h in cfg.log_config.hooks]
    assert hooks == ["TextLoggerHook", "TensorboardLoggerHook"]
    backbone = cfg.model.detector.backbone
    if name.startswith("clab_"):
        assert backbone.out_indices == (2, 3) and cfg.model.cab_stage == 2
        assert cfg.model.auxiliary.type == "ContrastiveHead"
        assert [h.type for h in cfg.custom_hooks] == ["CabWeightHook"]
    else:
        assert backbone.out_indices == (3,) and "auxiliary" not in cfg.model
        assert "custom_hooks" not in cfg


@pytest.mark.parametrize("backbone", ["r50", "r101", "x101", "tiny"])
def test_clab_differs_from_its_baseline_only_by_the_branch(backbone):
    suffix = "tiny_synthetic.py" if backbone == "tiny" else f"{backbone}-dc5_8xb2-7e_imagenetvid.py"
    base = flat(load(f"selsa-troi_faster-rcnn_{suffix}")._cfg_dict.to_dict())
    clab_cfg = flat(load(f"clab_selsa-troi_faster-rcnn_{suffix}")._cfg_dict.to_dict())
    changed = {k for k in set(base) | set(clab_cfg) if base.get(k, "<absent>") != clab_cfg.get(k, "<absent>")}
    changed = {k for k in changed if not k.startswith("model.auxiliary.")}
    assert changed == {"model.detector.backbone.out_indices", "model.cab_stage", "custom_hooks"}


def test_paper_values():
    cfg = load("clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py")
    det = cfg.model.detector
    assert det.backbone.strides == (1, 2, 2, 1) and det.backbone.dilations == (1, 1, 1, 2)
    assert det.backbone.frozen_stages == 1 and det.backbone.norm_eval
    assert det.backbone.init_cfg == dict(type="Pretrained", checkpoint="torchvision://resnet50")
    assert det.neck.in_channels == [2048] and det.neck.out_channels == 512
    assert det.rpn_head.anchor_generator.scales == [4, 8, 16, 32]
    assert det.train_cfg.rpn_proposal.nms_pre == 6000 and det.train_cfg.rpn_proposal.max_per_img == 600
    assert det.test_cfg.rpn.nms_pre == 6000 and det.test_cfg.rpn.max_per_img == 300
    assert det.train_cfg.rcnn.sampler.num == 256 and det.train_cfg.rcnn.sampler.pos_fraction == 0.25
    assert det.test_cfg.rcnn.score_thr == 0.0001 and det.test_cfg.rcnn.max_per_img == 100
    roi = det.roi_head
    assert roi.bbox_roi_extractor.num_most_similar_points == 2
    assert roi.bbox_roi_extractor.num_temporal_attention_blocks == 4
    assert roi.bbox_head.num_shared_fcs == 3 and roi.bbox_head.num_classes == 30
    assert roi.bbox_head.bbox_coder.target_stds == [0.2, 0.2, 0.2, 0.2]
    assert cfg.model.auxiliary == dict(type="ContrastiveHead", in_channels=1024, mid_channels=512,
                                       hidden_channels=256, out_channels=128, temperature=0.1,
                                       loss_weight=0.005)
    # the published 25,000 of about 49,000 iterations at batch 16, as a fraction of training
    assert cfg.custom_hooks[0].schedule == dict(type="linear", start=0.005, end=0.0, length=0.51, unit="fraction")
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    assert cfg.optimizer == dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0001)
    assert cfg.optimizer_config.grad_clip == dict(max_norm=35, norm_type=2)
    assert cfg.lr_config.step == [2, 5] and cfg.lr_config.warmup_iters == 500
    assert cfg.lr_config.warmup_ratio == pytest.approx(1 / 3)
    assert cfg.runner == dict(type="EpochBasedRunner", max_epochs=7)
    assert cfg.checkpoint_config.interval == 1 and cfg.dist_params.backend == "nccl"


@pytest.mark.parametrize("prefix", ["", "clab_"])
def test_deeper_backbones(prefix):
    r101 = load(f"{prefix}selsa-troi_faster-rcnn_r101-dc5_8xb2-7e_imagenetvid.py").model.detector.backbone
    assert r101.type == "ResNet" and r101.depth == 101
    assert r101.init_cfg.checkpoint == "torchvision://resnet101"
    x101 = load(f"{prefix}selsa-troi_faster-rcnn_x101-dc5_8xb2-7e_imagenetvid.py").model.detector.backbone
    assert x101.type == "ResNeXt" and x101.depth == 101 and x101.groups == 64 and x101.base_width == 4
    assert x101.init_cfg.checkpoint == "open-mmlab://resnext101_64x4d"
    for b in (r101, x101):
        assert b.strides == (1, 2, 2, 1) and b.dilations == (1, 1, 1, 2)


def test_r50_models_build_without_download():
    for name in ("selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py",
                 "clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py"):
        model_cfg = copy.deepcopy(load(name).model)
        model_cfg.detector.backbone.init_cfg = None
        model = build_detector(model_cfg)
        params = sum(p.numel() for p in model.parameters())
        aux = sum(p.numel() for n, p in model.named_parameters() if n.startswith("auxiliary."))
        # SPEC: the published R-50 CLAB model has 83.1 M parameters
        assert (params / 1e6 == pytest.approx(83.1, abs=0.05)) == name.startswith("clab_"), (name, params)
        assert (aux > 0) == name.startswith("clab_")


@pytest.mark.parametrize("name", TINY)
def test_tiny_configs_build_and_run(name):
    cfg = load(name)
    model = build_detector(cfg.model)
    model.init_weights()
    assert cfg.model.detector.backbone.init_cfg is None
    assert cfg.model.detector.roi_head.bbox_head.num_classes == len(cfg.classes) == 6
    if name.startswith("clab_"):
        sched = cfg.custom_hooks[0].schedule
        assert sched.unit == "fraction" and sched.length == 0.5
    # a 160x96 frame (kept at its size by the pipeline, already a multiple of 16) gives a stride-8 map
    assert cfg.img_scale == (160, 96)
    x, tapped = model.extract_feat(torch.zeros(1, 3, 96, 160))
    assert tuple(x[0].shape) == (1, 64, 12, 20)
    assert (tapped is not None) == name.startswith("clab_")
    if tapped is not None:
        assert tapped.shape[1] == cfg.model.auxiliary.in_channels
    assert sum(p.numel() for p in model.parameters()) < 5e6


@pytest.mark.parametrize("backbone", ["r50", "r101", "x101"])
def test_mmtracking_recipe_and_fair_control(backbone):
    """8xb1: mmtracking 0.14's recipe (1 clip per GPU, 2 workers, lr 0.01, global batch 8); 8xb2: CLAB's
    batch without the branch. The two differ in the batch only, and 8xb2 from CLAB in the branch only."""
    b1 = load(f"selsa-troi_faster-rcnn_{backbone}-dc5_8xb1-7e_imagenetvid.py")
    b2 = load(f"selsa-troi_faster-rcnn_{backbone}-dc5_8xb2-7e_imagenetvid.py")
    assert (b1.data.samples_per_gpu, b1.data.workers_per_gpu, b1.optimizer.lr) == (1, 2, 0.01)
    assert (b2.data.samples_per_gpu, b2.optimizer.lr) == (2, 0.01)
    assert (b1.auto_scale_lr.base_batch_size, b2.auto_scale_lr.base_batch_size) == (8, 16)
    assert b1.lr_config == b2.lr_config and b1.runner == b2.runner and b1.optimizer_config == b2.optimizer_config
    f1, f2 = flat(b1._cfg_dict.to_dict()), flat(b2._cfg_dict.to_dict())
    changed = {k for k in set(f1) | set(f2) if f1.get(k, "<absent>") != f2.get(k, "<absent>")}
    assert changed == {"data.samples_per_gpu", "auto_scale_lr.base_batch_size"}
    # the same model, so a checkpoint of one loads into the other (and into CLAB, less auxiliary.*)
    assert b1.model == b2.model


def test_paper_parameter_files_name_their_baseline():
    import yaml
    for backbone in ("r50", "r101", "x101"):
        text = open(os.path.join(ROOT, "papermill_params", f"paper_{backbone}.yaml")).read()
        params = yaml.safe_load(text)
        assert params["CONFIG_BASELINE"] == f"configs/selsa-troi_faster-rcnn_{backbone}-dc5_8xb2-7e_imagenetvid.py"
        assert params["CONFIG_CLAB"] == f"configs/clab_selsa-troi_faster-rcnn_{backbone}-dc5_8xb2-7e_imagenetvid.py"
        assert "8xb1" in text  # the file says how to run mmtracking's recipe instead
