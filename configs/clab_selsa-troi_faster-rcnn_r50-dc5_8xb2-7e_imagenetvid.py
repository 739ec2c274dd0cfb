# CLAB on SELSA + TRoI, R-50-DC5 (SPEC 1.2-1.8), 8 GPUs x 2 clips (global batch 16), lr 0.01: the 8xb2 TRoI
# baseline plus the contrastive auxiliary branch on backbone stage 2 (C4, 1024 channels) with a loss weight
# decaying linearly from 0.005 to 0. The published hook decays over 25,000 iterations of about 49,000 at batch
# 16; here that is the same fraction of training (0.51), so the shape is kept at any global batch or with
# gradient accumulation (at 16 the two differ by the uncertainty of the 49,000, SPEC 1.8). The branch is
# dropped at inference.
_base_ = './selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py'
model = dict(
    detector=dict(backbone=dict(out_indices=(2, 3))),
    cab_stage=2,
    auxiliary=dict(
        type='ContrastiveHead',
        in_channels=1024,
        mid_channels=512,
        hidden_channels=256,
        out_channels=128,
        temperature=0.1,
        loss_weight=0.005))
custom_hooks = [
    dict(
        type='CabWeightHook',
        schedule=dict(type='linear', start=0.005, end=0.0, length=0.51, unit='fraction')),
]
