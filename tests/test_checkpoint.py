"""Checkpoints (clab.checkpoint): mmtracking TRoI key layout (SPEC 5), weights_only round trips, atomic saves."""
from __future__ import annotations

import copy
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from mmcv import Config
from mmdet.models import build_detector

import clab  # noqa: F401  (registries)
from clab.checkpoint import CorruptCheckpointError, compare_state_dict, load_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def mmtracking_troi_r50_shapes() -> "OrderedDict[str, tuple]":
    """Key -> shape of the official mmtracking SELSA+TRoI R-50 checkpoint, written from SPEC 5 alone."""
    shapes: OrderedDict = OrderedDict()
    for k, v in torchvision.models.resnet50(weights=None).state_dict().items():
        if not k.startswith("fc."):
            shapes[f"detector.backbone.{k}"] = tuple(v.shape)
    shapes["detector.neck.convs.0.conv.weight"] = (512, 2048, 3, 3)
    shapes["detector.neck.convs.0.conv.bias"] = (512,)
    shapes["detector.rpn_head.rpn_conv.weight"] = (512, 512, 3, 3)
    shapes["detector.rpn_head.rpn_conv.bias"] = (512,)
    shapes["detector.rpn_head.rpn_cls.weight"] = (12, 512, 1, 1)
    shapes["detector.rpn_head.rpn_cls.bias"] = (12,)
    shapes["detector.rpn_head.rpn_reg.weight"] = (48, 512, 1, 1)
    shapes["detector.rpn_head.rpn_reg.bias"] = (48,)
    shapes["detector.roi_head.bbox_roi_extractor.embed_network.conv.weight"] = (512, 512, 3, 3)
    shapes["detector.roi_head.bbox_roi_extractor.embed_network.conv.bias"] = (512,)
    shapes["detector.roi_head.bbox_head.shared_fcs.0.weight"] = (1024, 25088)
    shapes["detector.roi_head.bbox_head.shared_fcs.0.bias"] = (1024,)
    for i in (1, 2):
        shapes[f"detector.roi_head.bbox_head.shared_fcs.{i}.weight"] = (1024, 1024)
        shapes[f"detector.roi_head.bbox_head.shared_fcs.{i}.bias"] = (1024,)
    for i in range(3):
        for part in ("fc_embed", "ref_fc_embed", "fc", "ref_fc"):
            shapes[f"detector.roi_head.bbox_head.aggregator.{i}.{part}.weight"] = (1024, 1024)
            shapes[f"detector.roi_head.bbox_head.aggregator.{i}.{part}.bias"] = (1024,)
    shapes["detector.roi_head.bbox_head.fc_cls.weight"] = (31, 1024)
    shapes["detector.roi_head.bbox_head.fc_cls.bias"] = (31,)
    shapes["detector.roi_head.bbox_head.fc_reg.weight"] = (120, 1024)
    shapes["detector.roi_head.bbox_head.fc_reg.bias"] = (120,)
    return shapes


AUXILIARY_SHAPES = {"auxiliary.channel.0.weight": (512, 1024, 3, 3), "auxiliary.channel.0.bias": (512,),
                    "auxiliary.proj.0.weight": (256, 512), "auxiliary.proj.0.bias": (256,),
                    "auxiliary.proj.2.weight": (128, 256), "auxiliary.proj.2.bias": (128,)}


def build_r50(name: str):
    cfg = Config.fromfile(os.path.join(CONFIGS, name))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.detector.backbone.init_cfg = None   # nothing downloads
    return build_detector(model_cfg)


@pytest.fixture(scope="module")
def troi_checkpoint(tmp_path_factory) -> str:
    """A file in the official layout: meta + state_dict with every key filled with its own index."""
    state = OrderedDict()
    for i, (k, shape) in enumerate(mmtracking_troi_r50_shapes().items()):
        dtype = torch.int64 if k.endswith("num_batches_tracked") else torch.float32
        state[k] = torch.full(shape, float(i % 97), dtype=dtype)
    path = tmp_path_factory.mktemp("ckpt") / "selsa_troialign_r50.pth"
    torch.save({"meta": {"mmcv_version": "1.7.1", "CLASSES": ["airplane"] * 30, "epoch": 7}, "state_dict": state},
               path)
    return str(path)


@pytest.fixture(scope="module")
def r50_models():
    torch.manual_seed(0)
    return build_r50("clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py"), \
        build_r50("selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py")


def test_r50_model_has_the_mmtracking_layout(r50_models):
    clab_model, base_model = r50_models
    expected = mmtracking_troi_r50_shapes()
    base = {k: tuple(v.shape) for k, v in base_model.state_dict().items()}
    assert base == dict(expected)
    full = {k: tuple(v.shape) for k, v in clab_model.state_dict().items()}
    assert full == {**expected, **AUXILIARY_SHAPES}


def test_troi_checkpoint_loads_strictly_except_auxiliary(r50_models, troi_checkpoint):
    clab_model, base_model = r50_models
    aux_before = {k: v.clone() for k, v in clab_model.state_dict().items() if k.startswith("auxiliary.")}
    ckpt = load_checkpoint(clab_model, troi_checkpoint, strict=True)
    report = ckpt["_load_report"]
    assert sorted(report.missing) == sorted(AUXILIARY_SHAPES)
    assert not report.unexpected and not report.mismatched
    assert ckpt["meta"]["epoch"] == 7
    state = clab_model.state_dict()
    for i, k in enumerate(mmtracking_troi_r50_shapes()):
        assert float(state[k].flatten()[0]) == float(i % 97), k
    for k, v in aux_before.items():                       # the branch keeps its own initialisation
        torch.testing.assert_close(state[k], v)

    report = load_checkpoint(base_model, troi_checkpoint, strict=True)["_load_report"]
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []


def test_strict_refuses_other_mismatches(r50_models, troi_checkpoint, tmp_path):
    _, base_model = r50_models
    state = torch.load(troi_checkpoint, weights_only=True)["state_dict"]
    missing = OrderedDict(state)
    del missing["detector.roi_head.bbox_head.fc_cls.bias"]
    path = tmp_path / "missing.pth"
    torch.save({"state_dict": missing}, path)
    with pytest.raises(RuntimeError, match="fc_cls.bias"):
        load_checkpoint(base_model, str(path), strict=True)
    report = load_checkpoint(base_model, str(path), strict=False)["_load_report"]   # non-strict: logged
    assert report.missing == ["detector.roi_head.bbox_head.fc_cls.bias"]

    reshaped = OrderedDict(state)
    reshaped["detector.roi_head.bbox_head.fc_cls.weight"] = torch.zeros(7, 1024)
    reshaped["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": reshaped}, path)
    with pytest.raises(RuntimeError, match="shape mismatches"):
        load_checkpoint(base_model, str(path), strict=True)
    before = base_model.state_dict()["detector.roi_head.bbox_head.fc_cls.weight"].clone()
    report = load_checkpoint(base_model, str(path))["_load_report"]
    assert report.unexpected == ["extra.weight"] and len(report.mismatched) == 1
    torch.testing.assert_close(base_model.state_dict()["detector.roi_head.bbox_head.fc_cls.weight"], before)


def test_module_prefix_is_stripped(r50_models, troi_checkpoint, tmp_path):
    _, base_model = r50_models
    state = torch.load(troi_checkpoint, weights_only=True)["state_dict"]
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": OrderedDict((f"module.{k}", v) for k, v in state.items())}, path)
    report = compare_state_dict(base_model, load_checkpoint(base_model, str(path), strict=True)["state_dict"])
    assert report.strict_ok and not report.missing


# ---------------------------------------------------------------------------------------------- save
def tiny_model():
    cfg = Config.fromfile(os.path.join(CONFIGS, "clab_selsa-troi_faster-rcnn_tiny_synthetic.py"))
    model = build_detector(cfg.model)
    model.init_weights()
    return model


def test_save_load_round_trip_weights_only(tmp_path):
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    loss = sum(p.sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    optimizer.step()                                  # momentum buffers in the optimizer state
    path = tmp_path / "run" / "epoch_1.pth"
    meta = dict(epoch=1, iter=10, CLASSES=("disc", "square"), config="model = dict()", seed=None,
                nested={"lr": [0.01, 0.001]})
    save_checkpoint(model, str(path), meta=meta, optimizer=optimizer)
    assert sorted(os.listdir(path.parent)) == ["epoch_1.pth"]                # no temporary file left

    raw = torch.load(path, weights_only=True)                              # plain torch, safe mode
    assert raw["meta"] == meta and set(raw) == {"meta", "state_dict", "optimizer"}
    assert raw["optimizer"]["state"]

    torch.manual_seed(1)
    other = tiny_model()
    assert not torch.equal(other.state_dict()["detector.neck.convs.0.conv.weight"],
                           model.state_dict()["detector.neck.convs.0.conv.weight"])
    ckpt = load_checkpoint(other, str(path), strict=True)
    assert ckpt["meta"]["epoch"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_meta_must_hold_primitives(tmp_path):
    model = tiny_model()
    path = tmp_path / "bad.pth"
    with pytest.raises(TypeError, match=r"meta\['epoch'\]"):
        save_checkpoint(model, str(path), meta=dict(epoch=np.int64(3)))
    with pytest.raises(TypeError, match=r"meta\['stats'\]\[1\]"):
        save_checkpoint(model, str(path), meta=dict(stats=[1.0, np.float32(2.0)]))
    assert not path.exists()


def test_failed_save_leaves_previous_file_intact(tmp_path):
    model = tiny_model()
    path = tmp_path / "latest.pth"
    save_checkpoint(model, str(path), meta=dict(epoch=1))
    before = path.read_bytes()

    class Unpicklable:
        def state_dict(self):
            return {"state": {}, "hook": lambda: None}      # torch.save cannot pickle a lambda

    with pytest.raises(Exception):
        save_checkpoint(model, str(path), meta=dict(epoch=2), optimizer=Unpicklable())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["latest.pth"]


def test_untrusted_pickles_are_refused_unless_trusted(tmp_path):
    model = tiny_model()
    path = tmp_path / "old.pth"
    torch.save({"meta": {"epoch": np.int64(1)}, "state_dict": model.state_dict()}, path)
    with pytest.raises(pickle.UnpicklingError, match="trust=True"):
        load_checkpoint(model, str(path))
    ckpt = load_checkpoint(model, str(path), trust=True, strict=True)
    assert int(ckpt["meta"]["epoch"]) == 1


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tiny_model(), str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("damage", ["random", "truncated", "empty", "text"])
def test_a_file_that_is_not_a_checkpoint_is_called_corrupt(tmp_path, damage):
    model = tiny_model()
    good = tmp_path / "good.pth"
    save_checkpoint(model, str(good), meta=dict(epoch=1))
    data = good.read_bytes()
    bad = tmp_path / "bad.pth"
    bad.write_bytes({"random": np.random.default_rng(0).bytes(4096), "truncated": data[: len(data) // 2],
                     "empty": b"", "text": b"<html>404 Not Found</html>\n"}[damage])
    with pytest.raises(CorruptCheckpointError) as info:
        load_checkpoint(model, str(bad))
    message = str(info.value)
    assert f"checkpoint {bad} is corrupt" in message and "trust=True" not in message
    with pytest.raises(CorruptCheckpointError):            # trusting it does not help either
        load_checkpoint(model, str(bad), trust=True)
    assert load_checkpoint(model, str(good), strict=True)["meta"]["epoch"] == 1


def test_legacy_format_with_numpy_meta_still_gets_the_trust_advice(tmp_path):
    model = tiny_model()
    path = tmp_path / "legacy.pth"
    torch.save({"meta": {"epoch": np.int64(2)}, "state_dict": model.state_dict()}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(pickle.UnpicklingError, match="trust=True") as info:
        load_checkpoint(model, str(path))
    assert not isinstance(info.value, CorruptCheckpointError)
    assert int(load_checkpoint(model, str(path), trust=True)["meta"]["epoch"]) == 2
