"""Batch norms folded into convolutions for the test-time backbone (clab.models.folding, SELSA.extract_feat).

mmdet ResNet / ResNeXt / ResNetV1d backbones with random weights and random batch-norm statistics, small
inputs on the CPU; the tiny SELSA config for the detector-level behaviour.
"""
from __future__ import annotations

import copy

import pytest
import torch
from mmdet.models import build_backbone
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from clab.models.folding import FoldedCopies, fold_batchnorm

from test_selsa import BASE_TINY, build, run_adaptive, video, assert_same_detections


def randomise_norms(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.3)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)


def norm_count(module: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in module.modules())


@pytest.mark.parametrize("cfg", [
    dict(type="ResNet", depth=18, out_indices=(3,)),
    dict(type="ResNet", depth=50, out_indices=(2, 3), strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
    dict(type="ResNetV1d", depth=50, out_indices=(3,)),                      # deep stem, avg-pool shortcuts
    dict(type="ResNeXt", depth=50, groups=32, base_width=4, out_indices=(3,)),
], ids=["r18", "r50-dc5", "r50-v1d", "x50"])
def test_fold_batchnorm_folds_every_norm_and_keeps_the_outputs(cfg):
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    randomise_norms(backbone)
    backbone.eval()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    folded, count = fold_batchnorm(backbone)
    assert count == norm_count(backbone) > 0 and norm_count(folded) == 0
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want, got = backbone(x), folded(x)
    for a, b in zip(want, got, strict=True):
        scale = a.abs().max().item()
        assert scale > 0 and (a - b).abs().max().item() <= 1e-5 * scale
        assert not torch.equal(a, b) or count == 0  # the fold changed the computation, not only its layout
    # the original is untouched
    assert norm_count(backbone) == count
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_fold_batchnorm_leaves_pairs_it_cannot_prove():
    # conv -> ReLU -> BN: the BN does not read the conv's output, so it stays
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 1, bias=False),
                        nn.BatchNorm2d(5), nn.Conv2d(5, 5, 1, padding_mode="zeros"), nn.BatchNorm2d(5, affine=False))
    randomise_norms(nn.Sequential(seq[2], seq[4]))
    with torch.no_grad():
        seq[6].running_mean.normal_()
    seq.eval()
    folded, count = fold_batchnorm(seq)
    assert count == 2
    assert isinstance(folded[2], nn.BatchNorm2d) and isinstance(folded[4], nn.Identity)
    assert isinstance(folded[6], nn.Identity)  # affine=False folds too
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), seq(x), rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_leaves_weight_standardised_convs_and_training_norms():
    from mmcv.cnn.bricks.conv_ws import ConvAWS2d, ConvWS2d
    seq = nn.Sequential(ConvWS2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), ConvAWS2d(4, 4, 1), nn.BatchNorm2d(4),
                        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    randomise_norms(seq)
    seq.eval()
    seq[5].train()  # a batch norm in training mode uses batch statistics: not folded
    folded, count = fold_batchnorm(seq)
    assert count == 0 and norm_count(folded) == 3
    seq[5].eval()
    folded, count = fold_batchnorm(seq)
    assert count == 1 and isinstance(folded[5], nn.Identity) and isinstance(folded[1], nn.BatchNorm2d)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), seq(x), rtol=1e-5, atol=1e-5)


def test_folded_copies_follow_the_weights():
    torch.manual_seed(0)
    backbone = build_backbone(dict(type="ResNet", depth=18, out_indices=(3,)))
    randomise_norms(backbone)
    backbone.eval()
    copies = FoldedCopies()
    x = torch.randn(1, 3, 64, 64)
    first, = copies.get(backbone)
    assert copies.get(backbone)[0] is first  # same weights: the same copy
    # a checkpoint loaded in place (copy_ raises the tensors' versions)
    other = build_backbone(dict(type="ResNet", depth=18, out_indices=(3,)))
    randomise_norms(other, seed=1)
    backbone.load_state_dict(other.state_dict())
    second, = copies.get(backbone)
    assert second is not first
    with torch.no_grad():
        other.eval()
        torch.testing.assert_close(second(x)[0], other(x)[0], rtol=1e-4, atol=1e-5)
        # an in-place change of one running statistic
        backbone.norm1.running_var.mul_(4.0)
        third, = copies.get(backbone)
        assert third is not second
        torch.testing.assert_close(third(x)[0], backbone(x)[0], rtol=1e-4, atol=1e-5)
    copies.clear()
    assert copies.folded == 0


def test_selsa_uses_folded_copies_only_for_inference():
    torch.manual_seed(2)
    model = build(BASE_TINY)
    unfolded = build(BASE_TINY, fold_batchnorm=False)
    unfolded.load_state_dict(model.state_dict())
    keys = set(model.state_dict())
    frames = video(3, seed=11)
    assert model.fold_batchnorm and not unfolded.fold_batchnorm
    # detections at the initial statistics (random ones reorder the tiny model's near-equal scores)
    assert_same_detections(run_adaptive(model, frames, [0, 2]), run_adaptive(unfolded, frames, [0, 2]),
                           exact=False)
    assert model._folded.folded == norm_count(model.detector.backbone) > 0
    randomise_norms(model.detector.backbone, seed=3)
    unfolded.load_state_dict(model.state_dict())
    model.eval()
    unfolded.eval()
    calls = []
    hook = model.detector.backbone.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model.extract_feat(frames[0])
    assert calls == [1]  # a hook on the original: the original runs
    hook.remove()
    with torch.no_grad():
        x, _ = model.extract_feat(frames[0])
        x_plain, _ = unfolded.extract_feat(frames[0])
    assert model._folded.folded == norm_count(model.detector.backbone) > 0
    assert all(f.is_contiguous() for f in x)
    assert (x[0] - x_plain[0]).abs().max().item() <= 1e-5 * x_plain[0].abs().max().item()
    assert set(model.state_dict()) == keys  # the copies are not part of the model's state
    assert not torch.equal(x[0], x_plain[0])  # the folded copies ran, not the originals
    copy_calls = []
    copy_hook = model._folded._copies[0].register_forward_hook(lambda *a: copy_calls.append(1))
    with torch.no_grad():
        model.extract_feat(frames[0])
        assert copy_calls == [1]
        with torch.inference_mode():
            model.extract_feat(frames[0])
        assert copy_calls == [1, 1]
        # a DataParallel replica, or a batch norm in training mode: the originals (the latter updates its
        # running statistics, so the next frame builds new copies)
        model._is_replica = True
        model.extract_feat(frames[0])
        del model._is_replica
        model.detector.backbone.layer1[0].norm1.train()
        model.extract_feat(frames[0])
        model.detector.backbone.layer1[0].norm1.eval()
        assert copy_calls == [1, 1]
        old = model._folded._copies[0]
        model.extract_feat(frames[0])
        assert model._folded._copies[0] is not old and copy_calls == [1, 1]
    copy_hook.remove()
    # a copied model starts without copies; moving the model frees them
    assert copy.deepcopy(model)._folded.folded == 0
    model.double()
    assert model._folded.folded == 0
    model.float()
    # with gradients the original modules run (the copies have no gradient path to the weights)
    x_grad, _ = model.extract_feat(frames[0])
    assert x_grad[0].requires_grad
    assert model._folded.folded == 0
    # training frees the copies
    with torch.no_grad():
        model.extract_feat(frames[0])
    assert model._folded.folded > 0
    model.train()
    assert model._folded.folded == 0
    with pytest.raises(TypeError, match="fold_batchnorm"):
        build(BASE_TINY, fold_batchnorm="yes")
